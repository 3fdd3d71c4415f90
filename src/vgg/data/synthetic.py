"""The embedded dataset: shapes on cluttered backgrounds, as real JPEG files.

``make_shapes_dataset(out)`` writes::

    out/train/<class>/<class>_00000.jpg ...   out/val/<class>/...
    out/annotations/train/<class>/<class>_00000.xml ...   (PASCAL VOC, one per image)
    out/synth.json                                        (the parameters used)

or, with ``layout="voc"``, a PASCAL VOC devkit year folder (``vgg transfer --protocol voc``
reads it like VOCdevkit/VOC2007)::

    out/JPEGImages/<id>.jpg   out/Annotations/<id>.xml   out/synth.json
    out/ImageSets/Main/{trainval,train,val,test}.txt + <class>_<split>.txt (1 / -1 / 0)

where the training images make trainval (every 5th of them val, the rest train) and the
validation images make test; an object smaller than 15% of the image's smaller side is
marked ``<difficult>``, so the devkit's "difficult" rule is exercised too.

Each image has its own size (sides drawn in [min_side, max_side], so aspect ratios vary)
and a textured background (colour gradient, low-frequency blotches, stripes or noise)
with distractor lines and scribbles that are not class shapes. A single-label image holds
one object of its folder's class whose larger extent is 10% to 90% of the smaller image
side, at a random position (the main object drawn towards the middle, Beta(3, 3)),
rotation and colour. With ``multi=True`` every image holds 2 to 4 objects of different
classes (its folder's class first), each with its box (several objects per image for
localisation). Everything comes from ``np.random.default_rng([seed, split, class, i])``:
the same seed gives byte-identical files, whatever the number of worker processes.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..errors import ConfigError
from .box_formats import write_voc_xml
from .boxes import Box

log = logging.getLogger(__name__)

Poly = list[tuple[float, float]]


def _ngon(n: int, r: float = 1.0, phase: float = 0.0, rx: float | None = None) -> Poly:
    rx = r if rx is None else rx
    return [(rx * math.cos(phase + 2 * math.pi * k / n), r * math.sin(phase + 2 * math.pi * k / n))
            for k in range(n)]


def _star() -> Poly:
    return [((1.0 if k % 2 == 0 else 0.42) * math.cos(-math.pi / 2 + math.pi * k / 5),
             (1.0 if k % 2 == 0 else 0.42) * math.sin(-math.pi / 2 + math.pi * k / 5))
            for k in range(10)]


def _heart() -> Poly:
    pts = []
    for k in range(64):
        t = 2 * math.pi * k / 64
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((x / 16, -y / 16))
    return pts


def _arc(r: float, a0: float, a1: float, n: int = 32, cx: float = 0.0) -> Poly:
    return [(cx + r * math.cos(a0 + (a1 - a0) * k / (n - 1)),
             r * math.sin(a0 + (a1 - a0) * k / (n - 1))) for k in range(n)]


# Each shape: (filled polygons, hole polygons) in unit coordinates.
SHAPES: dict[str, tuple[list[Poly], list[Poly]]] = {
    "circle": ([_ngon(48)], []),
    "square": ([[(-1, -1), (1, -1), (1, 1), (-1, 1)]], []),
    "triangle": ([_ngon(3, phase=-math.pi / 2)], []),
    "star": ([_star()], []),
    "cross": ([[(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3),
                (0.3, 1), (-0.3, 1), (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)]], []),
    "ring": ([_ngon(48)], [_ngon(48, 0.58)]),
    "hexagon": ([_ngon(6)], []),
    "ellipse": ([_ngon(48, 0.45, rx=1.0)], []),
    "arrow": ([[(-1, -0.22), (0.2, -0.22), (0.2, -0.6), (1, 0), (0.2, 0.6), (0.2, 0.22),
                (-1, 0.22)]], []),
    "crescent": ([_ngon(48)], [_ngon(48, 0.85)]),  # hole shifted below: see _render
    "heart": ([_heart()], []),
    "semicircle": ([_arc(1.0, 0, math.pi) + [(-1.0, 0.0)]], []),
    "lshape": ([[(-0.7, -1), (-0.2, -1), (-0.2, 0.5), (0.7, 0.5), (0.7, 1), (-0.7, 1)]], []),
    "tshape": ([[(-1, -1), (1, -1), (1, -0.5), (0.25, -0.5), (0.25, 1), (-0.25, 1),
                 (-0.25, -0.5), (-1, -0.5)]], []),
}
SHAPE_NAMES: tuple[str, ...] = tuple(SHAPES)
_HOLE_SHIFT = {"crescent": (0.42, -0.1)}

_SS = 2  # supersampling of the object masks (antialiased edges)


def _object_polys(name: str, size: float, angle: float, rng: np.random.Generator
                  ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Rotated polygons scaled so the larger extent of the outline is ``size`` px, centred
    at the origin of their bounding box."""
    fills, holes = SHAPES[name]
    dx, dy = _HOLE_SHIFT.get(name, (0.0, 0.0))
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    f = [np.asarray(p, np.float64) @ rot.T for p in fills]
    h = [(np.asarray(p, np.float64) + [dx, dy]) @ rot.T for p in holes]
    allp = np.concatenate(f)
    lo, hi = allp.min(0), allp.max(0)
    k = size / max(hi - lo)
    centre = (lo + hi) / 2
    return [(p - centre) * k for p in f], [(p - centre) * k for p in h]


def _background(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) float background: gradient + a texture + noise."""
    base = rng.uniform(30, 225, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    theta = rng.uniform(0, 2 * math.pi)
    ramp = (xx * math.cos(theta) + yy * math.sin(theta)) / max(w, h)
    img = base + ramp[..., None] * rng.uniform(-70, 70, 3)
    kind = rng.integers(0, 4)
    if kind == 0:  # low-frequency blotches
        gh, gw = rng.integers(3, 7, 2)
        g = Image.fromarray(rng.uniform(0, 255, (gh, gw)).astype(np.uint8))
        blot = np.asarray(g.resize((w, h), Image.Resampling.BICUBIC), np.float64) / 255 - 0.5
        img += blot[..., None] * rng.uniform(30, 110, 3)
    elif kind == 1:  # stripes
        phi = rng.uniform(0, math.pi)
        period = rng.uniform(4, 20)
        st = np.sin(2 * math.pi * (xx * math.cos(phi) + yy * math.sin(phi)) / period)
        img += st[..., None] * rng.uniform(10, 45, 3)
    elif kind == 2:  # coarse noise
        n = Image.fromarray(rng.uniform(0, 255, (max(1, h // 4), max(1, w // 4))).astype(np.uint8))
        cn = np.asarray(n.resize((w, h), Image.Resampling.BILINEAR), np.float64) / 255 - 0.5
        img += cn[..., None] * rng.uniform(20, 80)
    img += rng.normal(0, rng.uniform(2, 14), (h, w, 1))
    return img


def _distractors(draw: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    for _ in range(int(rng.integers(1, 6))):  # straight lines
        pts = [tuple(rng.uniform(0, [w, h])) for _ in range(2)]
        draw.line(pts, fill=tuple(int(v) for v in rng.integers(0, 256, 3)),
                  width=int(rng.integers(1, 4)))
    for _ in range(int(rng.integers(0, 3))):  # scribbles (random walks)
        p = rng.uniform(0, [w, h])
        pts = [tuple(p)]
        for _ in range(int(rng.integers(4, 12))):
            p = np.clip(p + rng.normal(0, min(w, h) / 8, 2), 0, [w, h])
            pts.append(tuple(p))
        draw.line(pts, fill=tuple(int(v) for v in rng.integers(0, 256, 3)),
                  width=int(rng.integers(1, 3)))


def _decoys(draw: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator,
            clutter: float) -> None:
    """Clutter that is not a class shape: about ``clutter`` irregular filled polygons
    (Poisson) of 5-35% of the smaller side, and ``clutter`` times as many extra lines. It
    makes the object's shape, not the presence of a blob, what separates the classes."""
    m = min(w, h)
    for _ in range(int(rng.poisson(clutter))):
        n = int(rng.integers(4, 9))
        r = rng.uniform(0.025, 0.175) * m
        c = rng.uniform(0, [w, h])
        ang = np.sort(rng.uniform(0, 2 * math.pi, n))
        rad = r * rng.uniform(0.4, 1.0, n)
        pts = [(float(c[0] + a * math.cos(t)), float(c[1] + a * math.sin(t)))
               for a, t in zip(rad, ang)]
        draw.polygon(pts, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    for _ in range(int(rng.poisson(3 * clutter))):
        pts = [tuple(rng.uniform(0, [w, h])) for _ in range(2)]
        draw.line(pts, fill=tuple(int(v) for v in rng.integers(0, 256, 3)),
                  width=int(rng.integers(1, 3)))


def _colour(bg_mean: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int]:
    for _ in range(20):
        c = rng.integers(0, 256, 3)
        if np.abs(c - bg_mean).sum() > 120:
            break
    return int(c[0]), int(c[1]), int(c[2])


def render_image(classes: list[str], w: int, h: int, rng: np.random.Generator,
                 size_range: tuple[float, float] = (0.1, 0.9), clutter: float = 0.0
                 ) -> tuple[Image.Image, list[Box]]:
    """One image holding one object per entry of ``classes`` (the first the largest when
    several); returns the image and its boxes (0-based pixel edges). ``clutter`` > 0 adds
    decoy polygons and lines (:func:`_decoys`); 0 draws nothing more from ``rng``, so
    images made without it stay byte-identical."""
    bg = _background(w, h, rng)
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    _distractors(draw, w, h, rng)
    if clutter > 0:
        _decoys(draw, w, h, rng, clutter)
    m = min(w, h)
    lo, hi = size_range
    if len(classes) > 1:
        hi = min(hi, 0.55)
    sizes = sorted((rng.uniform(lo, hi) * m for _ in classes), reverse=True)
    boxes: list[Box] = []
    for name, size in zip(classes, sizes):
        fills, holes = _object_polys(name, size, rng.uniform(0, 2 * math.pi), rng)
        pts = np.concatenate(fills)
        lo_xy, hi_xy = pts.min(0), pts.max(0)
        best, best_ov = None, None
        for _ in range(12):  # a position that overlaps earlier objects little
            # The main object sits near the middle more often than not (Beta(3, 3) over the
            # free range), as in photos: a random training crop then usually holds it.
            u = rng.beta(3.0, 3.0, size=2) if not boxes else rng.uniform(0.0, 1.0, size=2)
            t = -lo_xy + u * np.maximum(np.array([w, h]) - hi_xy + lo_xy, 0.0)
            ov = max((_overlap((*(lo_xy + t), *(hi_xy + t)), b) for b in boxes), default=0.0)
            if best is None or ov < best_ov:
                best, best_ov = t, ov
            if ov < 0.1:
                break
        mask = Image.new("L", (w * _SS, h * _SS), 0)
        md = ImageDraw.Draw(mask)
        for p in fills:
            md.polygon([tuple(v) for v in (p + best) * _SS], fill=255)
        for p in holes:
            md.polygon([tuple(v) for v in (p + best) * _SS], fill=0)
        mask = mask.reduce(_SS)
        a = np.asarray(mask)
        ys, xs = np.nonzero(a > 127)
        if len(xs) == 0:
            continue
        col = _colour(bg.reshape(-1, 3).mean(0), rng)
        img.paste(col, (0, 0), mask)
        boxes.append(Box(name, float(xs.min()), float(ys.min()),
                         float(xs.max() + 1), float(ys.max() + 1)))
    return img, boxes


def _overlap(a: tuple[float, ...], b: Box) -> float:
    """Intersection over the smaller box's area."""
    iw = min(a[2], b.x1) - max(a[0], b.x0)
    ih = min(a[3], b.y1) - max(a[1], b.y0)
    if iw <= 0 or ih <= 0:
        return 0.0
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b.x1 - b.x0) * (b.y1 - b.y0))
    return iw * ih / max(small, 1e-9)


# VOC layout: an object whose larger extent is below this fraction of the smaller image
# side is marked <difficult> (VOC marks objects hard to recognise; they are not scored)
DIFFICULT_EXTENT = 0.15
# VOC layout: every VAL_EVERY-th training image goes to ImageSets/Main/val.txt
VAL_EVERY = 5


def _make_one(job: tuple) -> tuple[str, str, list[tuple[str, bool]]]:
    (out, split, split_code, names, c, i, seed, multi, min_side, max_side, quality,
     object_size, layout, vid, clutter) = job
    rng = np.random.default_rng([seed, split_code, c, i, int(multi)])
    w, h = (int(v) for v in rng.integers(min_side, max_side + 1, 2))
    if multi:
        others = [k for k in range(len(names)) if k != c]
        n_extra = int(rng.integers(1, min(3, len(others)) + 1)) if others else 0
        picked = [c] + [int(k) for k in rng.choice(others, n_extra, replace=False)]
    else:
        picked = [c]
    img, boxes = render_image([names[k] for k in picked], w, h, rng, object_size, clutter)
    if layout == "voc":
        hard = [max(b.x1 - b.x0, b.y1 - b.y0) < DIFFICULT_EXTENT * min(w, h) for b in boxes]
        img.save(Path(out) / "JPEGImages" / f"{vid}.jpg", "JPEG", quality=quality)
        write_voc_xml(Path(out) / "Annotations" / f"{vid}.xml", f"{vid}.jpg", (w, h), boxes,
                      folder="VOC", difficult=hard)
        return split, vid, [(b.name, d) for b, d in zip(boxes, hard)]
    stem = f"{names[c]}_{i:05d}"
    img_dir = Path(out) / split / names[c]
    img.save(img_dir / f"{stem}.jpg", "JPEG", quality=quality)
    write_voc_xml(Path(out) / "annotations" / split / names[c] / f"{stem}.xml",
                  f"{stem}.jpg", (w, h), boxes, folder=f"{split}/{names[c]}")
    return split, stem, [(b.name, False) for b in boxes]


def devkit_splits(made: list[Any]) -> dict[str, list[Any]]:
    """The devkit's image sets of generated images ``(split, id, ...)`` sorted by id:
    trainval = our train images, test = our val images, and trainval cut into train and
    val (every VAL_EVERY-th image to val)."""
    made = sorted(made, key=lambda m: m[1])
    trainval = [m for m in made if m[0] == "train"]
    return {"trainval": trainval, "test": [m for m in made if m[0] == "val"],
            "train": [m for k, m in enumerate(trainval) if k % VAL_EVERY],
            "val": [m for k, m in enumerate(trainval) if not k % VAL_EVERY]}


def _write_voc_lists(out: Path, names: list[str],
                     made: list[tuple[str, str, list[tuple[str, bool]]]]) -> None:
    """ImageSets/Main of a VOC devkit: train/val/trainval/test.txt and, per class,
    <class>_<split>.txt with the devkit's 1 / -1 / 0 (only difficult objects) labels."""
    main = out / "ImageSets" / "Main"
    main.mkdir(parents=True, exist_ok=True)
    for split, items in devkit_splits(made).items():
        if not items:
            continue
        (main / f"{split}.txt").write_text("".join(f"{vid}\n" for _, vid, _ in items))
        for name in names:
            lines = []
            for _, vid, objs in items:
                mine = [d for n, d in objs if n == name]
                flag = -1 if not mine else (0 if all(mine) else 1)
                lines.append(f"{vid} {flag:2d}\n")
            (main / f"{name}_{split}.txt").write_text("".join(lines))


def make_shapes_dataset(out: str | Path, classes: int = 10, train_per_class: int = 260,
                        val_per_class: int = 50, seed: int = 0, multi: bool = False,
                        min_side: int = 64, max_side: int = 160, quality: int = 90,
                        workers: int | None = None,
                        object_size: tuple[float, float] = (0.1, 0.9),
                        progress: bool = False, layout: str = "folders",
                        clutter: float = 0.0) -> Path:
    """Write the shapes dataset to ``out`` (see the module docstring) and return ``out``.
    ``object_size``: the range of an object's larger extent, as a fraction of the smaller
    image side (multi-label images cap it at 0.55). ``workers=None`` uses up to the
    available cores (0 = in this process). ``layout="voc"`` writes the same images as a
    VOC devkit year folder instead (see the module docstring). ``clutter``: the mean
    number of decoy polygons per image (0 = none, the default, which keeps the files
    byte-identical to those made before the option existed)."""
    if layout not in ("folders", "voc"):
        raise ConfigError(f"unknown layout {layout!r}: folders or voc")
    if not 2 <= classes <= len(SHAPE_NAMES):
        raise ConfigError(f"--classes must be in 2..{len(SHAPE_NAMES)}, got {classes}")
    if train_per_class < 0 or val_per_class < 0 or train_per_class + val_per_class == 0:
        raise ConfigError("need at least one training or validation image per class")
    if not 16 <= min_side <= max_side:
        raise ConfigError(f"need 16 <= min_side <= max_side, got {min_side}, {max_side}")
    if not 0.02 <= object_size[0] <= object_size[1] <= 1.0:
        raise ConfigError(f"object sizes must satisfy 0.02 <= min <= max <= 1, got {object_size}")
    if not (isinstance(clutter, (int, float)) and 0.0 <= clutter <= 50.0):
        raise ConfigError(f"clutter must be in [0, 50] decoys per image, got {clutter!r}")
    out = Path(out)
    names = list(SHAPE_NAMES[:classes])
    jobs = []
    if layout == "voc":
        (out / "JPEGImages").mkdir(parents=True, exist_ok=True)
        (out / "Annotations").mkdir(parents=True, exist_ok=True)
    for split, code, n in (("train", 0, train_per_class), ("val", 1, val_per_class)):
        for c, name in enumerate(names):
            if n and layout == "folders":
                (out / split / name).mkdir(parents=True, exist_ok=True)
                (out / "annotations" / split / name).mkdir(parents=True, exist_ok=True)
            # VOC ids: six digits, images of one split interleaved across classes
            jobs += [(str(out), split, code, names, c, i, seed, multi, min_side, max_side,
                      quality, tuple(object_size), layout,
                      f"{code * 500000 + i * len(names) + c + 1:06d}", float(clutter))
                     for i in range(n)]
    if workers is None:
        try:
            workers = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover
            workers = os.cpu_count() or 1
        workers = min(workers, max(1, len(jobs) // 64))
    from ..progress import Progress

    made = []
    with Progress(len(jobs), "shapes dataset", "img", enabled=progress) as bar:
        if workers > 1:
            with mp.get_context("fork" if hasattr(os, "fork") else "spawn").Pool(workers) as pool:
                for m in pool.imap_unordered(_make_one, jobs, chunksize=32):
                    made.append(m)
                    bar.update(1)
        else:
            for j in jobs:
                made.append(_make_one(j))
                bar.update(1)
    if layout == "voc":
        _write_voc_lists(out, names, made)
    params = {"classes": names, "train_per_class": train_per_class,
              "val_per_class": val_per_class, "seed": seed, "multi": multi,
              "min_side": min_side, "max_side": max_side, "quality": quality,
              "object_size": list(object_size), "layout": layout}
    if clutter:  # only when used: synth.json of the default data stays as it was
        params["clutter"] = float(clutter)
    (out / "synth.json").write_text(json.dumps(params, indent=2) + "\n")
    log.info("wrote %d images of %d classes to %s", len(jobs), classes, out)
    return out


def ensure_shapes_dataset(root: str | Path, classes: int, seed: int = 0,
                          **params: object) -> tuple[Path, bool]:
    """The shapes dataset with these settings in ``root``: reused when its synth.json
    records the same settings (returns ``made=False``), written when ``root`` is absent or
    empty (``made=True``), refused (``ConfigError``) when ``root`` holds anything else, so
    that a changed setting never silently mixes two datasets. ``params`` are
    :func:`make_shapes_dataset`'s keyword arguments (``workers`` and ``progress`` are not
    settings of the data and are not compared)."""
    root = Path(root)
    run_only = {k: params.pop(k) for k in ("workers", "progress") if k in params}
    want = {"seed": seed, **{k: list(v) if isinstance(v, tuple) else v
                             for k, v in params.items()}}
    info = root / "synth.json"
    if info.is_file():
        try:
            have = json.loads(info.read_text())
        except (OSError, ValueError):
            have = {}
        # synth.json stores the class names, the caller their number
        same = (have.get("classes") == list(SHAPE_NAMES[:classes])
                and all(have.get(k, 0.0 if k == "clutter" else None) == v
                        for k, v in want.items()))
        if same and (root / "val").is_dir():
            return root, False
        raise ConfigError(f"{root} holds a shapes dataset made with other settings; "
                          f"remove it or choose another --out")
    if root.exists() and any(root.iterdir()):
        raise ConfigError(f"{root} exists and is not a shapes dataset; choose another --out")
    make_shapes_dataset(root, classes=classes, seed=seed, **params, **run_only)  # type: ignore[arg-type]
    return root, True
