"""Boxes for users: the full protocol (``vgg.localize.evaluate.full_protocol``) on images
without labels, and pictures of the guesses (and of the ground truth when a VOC XML file
sits beside an image)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import atomic_write
from ..errors import VggError
from .evaluate import DEFAULT_CLASSES
from .merge import DEFAULT_MERGE_THRESHOLD

Box4 = tuple[float, float, float, float]

# guesses in order: red, orange, yellow, blue, purple; ground truth green
COLOURS = [(230, 25, 75), (245, 130, 48), (255, 225, 25), (0, 130, 200), (145, 30, 180)]
GT_COLOUR = (60, 180, 75)
MIN_DRAW_SIDE = 320  # pixels: smaller images are drawn enlarged


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed-size bitmap font
        return ImageFont.load_default()


@dataclass
class BoxPrediction:
    """``guesses``: [(class name, score, (x0, y0, x1, y1))] best first, in image pixels;
    ``truth``: the boxes of an annotation file beside the image, if any."""

    path: str
    guesses: list[tuple[str, float, Box4]] = field(default_factory=list)
    truth: list[tuple[str, Box4]] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {"path": self.path,
                "guesses": [{"class": c, "score": s, "box": list(b)} for c, s, b in self.guesses],
                "truth": [{"class": c, "box": list(b)} for c, b in self.truth]}


def _beside(path: Path) -> list[Any]:
    """The boxes of ``a.xml`` beside ``a.jpg``, or in a parallel ``annotations/`` tree
    (``DIR/annotations/val/c/a.xml`` for ``DIR/val/c/a.jpg``, what ``vgg data synth``
    writes); none when absent or unreadable (they are only drawn)."""
    from ..data.annotations import read_voc_xml

    path = path.resolve()
    cands = [path.with_suffix(".xml")]
    for up in list(path.parents)[1:5]:
        cands.append((up / "annotations" / path.relative_to(up)).with_suffix(".xml"))
    for xml in cands:
        if xml.is_file():
            try:
                return list(read_voc_xml(xml))
            except VggError:
                return []
    return []


def predict_boxes(loc: Any, classifier: Any, inputs: Sequence[str | os.PathLike[str]],
                  top: int = 5, scales: Sequence[int] | None = None,
                  threshold: float = DEFAULT_MERGE_THRESHOLD, batch_size: int = 16,
                  device: str | torch.device | None = None, workers: int | None = None,
                  precision: str = "fp32", progress: bool = True,
                  dense_stride: int | str | None = None, class_choice: str = DEFAULT_CLASSES,
                  classifier_scales: Sequence[int] | None = None) -> list[BoxPrediction]:
    """The ``top`` (class, score, box) guesses of each image (folders expanded; files that
    cannot be read get an ``error``): the full protocol (``dense_stride``, ``class_choice``
    and ``classifier_scales`` as in ``vgg.localize.evaluate.full_protocol``).
    ``precision``: the networks' ("fp32" default; "auto" is bf16 where the hardware runs
    it natively, `vgg localize predict`'s default; ``vgg.precision``)."""
    from ..data.folders import ImageIndex, list_images
    from ..eval.evaluate import as_net
    from ..eval.predict import quiet_skips
    from .evaluate import as_loc_net, full_protocol

    net = as_loc_net(loc)
    cls = as_net(classifier)
    classes = list(net.model.classes or [])
    paths, skipped = list_images([Path(p) for p in inputs])
    out = [BoxPrediction(str(p), error=f"{p}: {why}") for p, why in quiet_skips(skipped, inputs)]
    if not paths:
        return out
    boxes = {p: b for p in paths if (b := _beside(p))}
    index = ImageIndex([(p, 0) for p in paths], classes, None, boxes=boxes or None)
    result = full_protocol(net, cls, index, scales, threshold=threshold,
                           dense_stride=dense_stride, class_choice=class_choice,
                           classifier_scales=classifier_scales, batch_size=batch_size,
                           device=device, workers=workers, precision=precision,
                           progress=progress, require_boxes=False)
    names = cls.model.display_names()
    done = dict(zip(result.image_ids, result.guesses))
    for p in paths:
        iid = Path(p).as_posix()
        if iid not in done:
            out.append(BoxPrediction(str(p), error=f"cannot read image {p}"))
            continue
        out.append(BoxPrediction(
            str(p), guesses=[(names[c], s, b) for c, s, b in done[iid][:top]],
            truth=[(b.name, (b.x0, b.y0, b.x1, b.y1)) for b in boxes.get(p, [])]))
    return out


def draw_guesses(preds: Sequence[BoxPrediction], out_dir: str | os.PathLike[str]) -> list[Path]:
    """``out_dir/<stem>.png`` for every predicted image: its guesses drawn (class and
    score on each box, best in red) and the ground truth in green."""
    from PIL import Image, ImageDraw

    from ..data.decode import decode_image
    from ..errors import BadImageError

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VggError(f"cannot write --draw folder {out_dir}: {e.strerror or e}") from None
    written = []
    used: set[str] = set()
    for p in preds:
        if p.error is not None:
            continue
        try:
            img = decode_image(p.path)
        except BadImageError:
            continue
        # small images are enlarged so that the labels are readable
        f = max(1, -(-MIN_DRAW_SIDE // min(img.size)))
        if f > 1:
            img = img.resize((img.size[0] * f, img.size[1] * f), Image.Resampling.BILINEAR)
        d = ImageDraw.Draw(img)
        width = max(2, round(min(img.size) / 150))
        font = _font(max(11, min(img.size) // 22))
        for name, b in p.truth:
            b = tuple(v * f for v in b)
            d.rectangle(b, outline=GT_COLOUR, width=width)
            d.text((b[0] + 3, b[3] - 3), f"true: {name}", fill=GT_COLOUR, font=font,
                   anchor="ld")
        for k, (name, score, b) in reversed(list(enumerate(p.guesses))):
            b = tuple(v * f for v in b)
            colour = COLOURS[k % len(COLOURS)]
            d.rectangle(b, outline=colour, width=width if k else width + 1)
            d.text((b[0] + 3, b[1] + 2), f"{k + 1}. {name} {score:.2f}", fill=colour,
                   font=font)
        stem = Path(p.path).stem
        name = stem
        i = 1
        while name in used:  # two images with the same name from different folders
            name = f"{stem}-{i}"
            i += 1
        used.add(name)
        path = out_dir / f"{name}.png"
        try:
            atomic_write(path, lambda f: img.save(f, format="PNG"))
        except OSError as e:
            raise VggError(f"cannot write {path}: {e.strerror or e}") from None
        written.append(path)
    return written
