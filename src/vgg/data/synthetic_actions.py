"""A generated action classification set in the VOC-2012 devkit's layout
(``vgg data synth --layout voc-action``), so that Table 12's protocol (``vgg transfer
--protocol actions``) runs end to end without the real data::

    out/JPEGImages/<id>.jpg   out/Annotations/<id>.xml   out/synth.json
    out/ImageSets/Action/{train,val,trainval,test}.txt      (image ids)
    out/ImageSets/Action/<action>_<split>.txt               (id, object index, 1 / -1)

Every image holds 1 to 3 "persons" (a stick figure, the same shape for all) side by
side on the shapes set's textured, cluttered backgrounds. A person's action is a second
shape it holds at its side: action k is the k-th cue shape (circle, square, triangle,
...) in the k-th of evenly spaced saturated hues (the persons are greyish), drawn at
35-50% of the person's height, inside the person's box (the box covers
the figure and the thing it holds, as a VOC person box covers the phone or the bicycle).
A fraction ``other`` of the persons hold nothing: VOC's "other" action, negatives of
every action. The persons of one image do different actions, so only the box tells which
person does which: the whole-image descriptor alone cannot (Table 12's "image + box"
beats "image only" here by construction).

Each annotation holds ``person`` objects with their ``<bndbox>`` and ``<actions>`` (0 / 1
per action, and ``other``). The first person of an image does the action the image was
made for; ``train_per_action`` images per action make trainval (every 5th of them val,
the rest train) and ``val_per_action`` make test. Everything comes from
``np.random.default_rng([seed, split, action, i])``: the same seed gives the same files.
"""

from __future__ import annotations

import colorsys
import json
import logging
import math
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..errors import ConfigError
from .actions import ACTIONS, OTHER, PERSON
from .box_formats import write_voc_xml
from .boxes import Box
from .synthetic import _SS, SHAPE_NAMES, _background, _distractors, _ngon, _object_polys, \
    devkit_splits

log = logging.getLogger(__name__)

# the things persons hold: one shape per action (not the cross or T, which look like
# the figure itself)
CUES: tuple[str, ...] = tuple(s for s in SHAPE_NAMES if s not in ("cross", "tshape"))
CUE_SIZE = (0.35, 0.5)       # the cue's larger extent / the person's height
PERSON_HEIGHT = (0.5, 0.85)  # a person's height / the image height (less when crowded)

# the figure in unit coordinates (height 2, y down): head, body, arms, legs
_FIGURE = [_ngon(24, 0.24), [(-0.22, -0.48), (0.22, -0.48), (0.22, 0.3), (-0.22, 0.3)],
           [(-0.42, -0.44), (0.42, -0.44), (0.42, -0.3), (-0.42, -0.3)],
           [(-0.22, 0.3), (-0.04, 0.3), (-0.1, 1.0), (-0.3, 1.0)],
           [(0.04, 0.3), (0.22, 0.3), (0.3, 1.0), (0.1, 1.0)]]
_HEAD_Y = -0.76


def _figure(height: float) -> list[np.ndarray]:
    """The stick figure's polygons, ``height`` px tall, centred on its box."""
    polys = [np.asarray(p, np.float64) for p in _FIGURE]
    polys[0] = polys[0] + [0.0, _HEAD_Y]
    allp = np.concatenate(polys)
    lo, hi = allp.min(0), allp.max(0)
    k = height / (hi - lo)[1]
    return [(p - (lo + hi) / 2) * k for p in polys]


_FIG_WIDTH = float(np.ptp(np.concatenate(_figure(1.0))[:, 0]))  # width / height


def _cue_colour(act: int, n_actions: int, rng: np.random.Generator
                ) -> tuple[int, int, int]:
    """Action ``act``'s colour: its own hue (evenly spaced; jittered), saturated."""
    hue = (act / n_actions + rng.normal(0.0, 0.015)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0))
    return int(255 * r), int(255 * g), int(255 * b)


def _person_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A person's colour: greyish (low saturation), so no person looks like a cue."""
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.2), rng.uniform(0.25, 0.9))
    return int(255 * r), int(255 * g), int(255 * b)


def _paste(img: Image.Image, fills: list[np.ndarray], holes: list[np.ndarray],
           colour: tuple[int, int, int]) -> tuple[float, float, float, float] | None:
    """Draw the polygons (already placed) antialiased; their pixels' box or None."""
    w, h = img.size
    mask = Image.new("L", (w * _SS, h * _SS), 0)
    md = ImageDraw.Draw(mask)
    for p in fills:
        md.polygon([tuple(v) for v in p * _SS], fill=255)
    for p in holes:
        md.polygon([tuple(v) for v in p * _SS], fill=0)
    mask = mask.reduce(_SS)
    ys, xs = np.nonzero(np.asarray(mask) > 127)
    if len(xs) == 0:
        return None
    img.paste(colour, (0, 0), mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def render_action_image(acts: list[int | None], w: int, h: int, cues: list[str],
                        rng: np.random.Generator) -> tuple[Image.Image, list[Box]]:
    """One image with a person per entry of ``acts`` (the index of its cue in ``cues``,
    or None: holding nothing), left to right; returns the image and the persons' boxes
    (figure and cue together, 0-based pixel edges)."""
    bg = _background(w, h, rng)
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8), "RGB")
    _distractors(ImageDraw.Draw(img), w, h, rng)
    slot = w / len(acts)
    boxes = []
    for k, act in enumerate(acts):
        # the figure and its cue side by side must fit the slot
        ph = min(rng.uniform(*PERSON_HEIGHT) * h, slot / (_FIG_WIDTH + CUE_SIZE[1]))
        cs = rng.uniform(*CUE_SIZE) * ph if act is not None else 0.0
        fig = _figure(ph)
        fw = _FIG_WIDTH * ph
        side = 1 if rng.random() < 0.5 else -1          # the hand it holds the cue in
        x0 = k * slot + rng.uniform(0.0, max(0.0, slot - fw - cs))
        y0 = rng.uniform(0.0, max(0.0, h - ph))
        cx = x0 + (cs if side < 0 else 0.0) + fw / 2   # the figure's centre
        placed = [p + [cx, y0 + ph / 2] for p in fig]
        got = [_paste(img, placed, [], _person_colour(rng))]
        if act is not None:
            fills, holes = _object_polys(cues[act], cs, rng.uniform(0, 2 * math.pi), rng)
            # at hand height, touching the figure's side
            at = np.array([cx + side * (fw / 2 + cs / 2), y0 + ph * rng.uniform(0.3, 0.55)])
            got.append(_paste(img, [p + at for p in fills], [p + at for p in holes],
                              _cue_colour(act, len(cues), rng)))
        parts = [g for g in got if g is not None]
        if not parts:  # pragma: no cover - a figure always has pixels
            continue
        boxes.append(Box(PERSON, min(g[0] for g in parts), min(g[1] for g in parts),
                         max(g[2] for g in parts), max(g[3] for g in parts)))
    return img, boxes


def _make_one(job: tuple) -> tuple[str, str, list[int | None]]:
    (out, split, code, n_actions, a, i, seed, min_side, max_side, quality, persons,
     other, vid) = job
    rng = np.random.default_rng([seed, code, a, i, 7])
    w, h = (int(v) for v in rng.integers(min_side, max_side + 1, 2))
    n = int(rng.integers(persons[0], persons[1] + 1))
    rest = [k for k in range(n_actions) if k != a]
    others = [int(k) for k in rng.permutation(rest)[:n - 1]]
    acts: list[int | None] = [a] + [None if rng.random() < other else k for k in others]
    img, boxes = render_action_image(acts, w, h, list(CUES[:n_actions]), rng)
    names = list(ACTIONS[:n_actions])
    flags = [{**{nm: int(act == j) for j, nm in enumerate(names)}, OTHER: int(act is None)}
             for act in acts]
    img.save(Path(out) / "JPEGImages" / f"{vid}.jpg", "JPEG", quality=quality)
    write_voc_xml(Path(out) / "Annotations" / f"{vid}.xml", f"{vid}.jpg", (w, h), boxes,
                  folder="VOC2012", actions=flags)
    return split, vid, acts


def _write_action_lists(out: Path, names: list[str],
                        made: list[tuple[str, str, list[int | None]]]) -> None:
    """ImageSets/Action: <split>.txt (image ids) and <action>_<split>.txt, the devkit's
    "<id> <object index> <flag>" for every person of the split."""
    adir = out / "ImageSets" / "Action"
    adir.mkdir(parents=True, exist_ok=True)
    for split, items in devkit_splits(made).items():
        if not items:
            continue
        (adir / f"{split}.txt").write_text("".join(f"{vid}\n" for _, vid, _ in items))
        for j, name in enumerate(names):
            (adir / f"{name}_{split}.txt").write_text("".join(
                f"{vid} {k} {1 if act == j else -1:2d}\n"
                for _, vid, acts in items for k, act in enumerate(acts, 1)))


def make_action_dataset(out: str | Path, actions: int = 5, train_per_action: int = 40,
                        val_per_action: int = 20, seed: int = 0, min_side: int = 64,
                        max_side: int = 160, quality: int = 90, workers: int | None = None,
                        persons: tuple[int, int] = (1, 3), other: float = 0.15,
                        progress: bool = False) -> Path:
    """Write the generated action set to ``out`` (see the module docstring); ``actions``
    of the ten (2..10, VOC's names in order), ``persons``: the range of persons per
    image, ``other``: the fraction of persons (after the first) doing none of them."""
    if not 2 <= actions <= len(ACTIONS):
        raise ConfigError(f"--classes (actions) must be in 2..{len(ACTIONS)} for the "
                          f"voc-action layout, got {actions}")
    if train_per_action < 1 or val_per_action < 1:
        raise ConfigError("the voc-action layout needs at least one training and one "
                          "validation image per action (its lists need both)")
    if not 32 <= min_side <= max_side:
        raise ConfigError(f"need 32 <= min_side <= max_side, got {min_side}, {max_side}")
    if not 1 <= persons[0] <= persons[1] <= min(3, actions):
        raise ConfigError(f"persons per image must satisfy 1 <= min <= max <= "
                          f"{min(3, actions)}, got {persons}")
    if not 0.0 <= other < 1.0:
        raise ConfigError(f"the fraction of 'other' persons must be in [0, 1), got {other}")
    out = Path(out)
    (out / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (out / "Annotations").mkdir(parents=True, exist_ok=True)
    jobs = [(str(out), split, code, actions, a, i, seed, min_side, max_side, quality,
             tuple(persons), float(other), f"{code * 500000 + i * actions + a + 1:06d}")
            for split, code, n in (("train", 0, train_per_action), ("val", 1, val_per_action))
            for i in range(n) for a in range(actions)]
    if workers is None:
        workers = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1, max(1, len(jobs) // 64))
    from ..progress import Progress

    made = []
    with Progress(len(jobs), "action set", "img", enabled=progress) as bar:
        if workers > 1:
            with mp.get_context("fork" if hasattr(os, "fork") else "spawn").Pool(workers) as pool:
                for m in pool.imap_unordered(_make_one, jobs, chunksize=32):
                    made.append(m)
                    bar.update(1)
        else:
            for j in jobs:
                made.append(_make_one(j))
                bar.update(1)
    names = list(ACTIONS[:actions])
    _write_action_lists(out, names, made)
    (out / "synth.json").write_text(json.dumps({
        "layout": "voc-action", "actions": names, "cues": list(CUES[:actions]),
        "train_per_action": train_per_action, "val_per_action": val_per_action,
        "seed": seed, "min_side": min_side, "max_side": max_side, "quality": quality,
        "persons": list(persons), "other": other}, indent=2) + "\n")
    log.info("wrote %d images of %d actions to %s", len(jobs), actions, out)
    return out
