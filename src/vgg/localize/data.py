"""Localisation data (Appendix A): datasets with boxes, their classes mapped to a net's
classes by name, and the training transform that moves the boxes with the pixels.

Target of a training crop. Augmentation (Sect. 3.1: rescale to S, random crop, flip)
moves every ground-truth box of the image with the pixels; the crop may cut objects. The
target is the box with the largest area inside the crop, if at least ``MIN_VISIBLE``
(20%) of that box's area is inside; its parameters (centre x, centre y, width, height, in
units of the crop side, relative to the crop's top-left corner) describe the WHOLE box,
which may extend beyond the crop: the net learns to predict an object's extent from the
part it sees. A crop in which no box is visible enough has no target: it is not
penalised (its loss is masked) and is counted as ``train_no_box``. For PCR the box's own
class selects which 4 outputs are penalised.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.annotations import Box
from ..data.folders import ImageIndex
from ..errors import DataError
from .boxes import (box_area, encode, hflip_boxes, intersection_area, scale_boxes,
                    shift_boxes)

log = logging.getLogger(__name__)

MIN_VISIBLE = 0.2  # fraction of a box's area that must lie in the crop to be a target


def map_to_classes(index: ImageIndex, classes: Sequence[str], what: str) -> ImageIndex:
    """``index`` with its labels re-numbered as positions in ``classes`` (a net's classes),
    matched by name (folder name, wnid or XML name). A dataset class the net does not have
    is an error naming it."""
    classes = list(classes)
    pos = {c: i for i, c in enumerate(classes)}
    missing = [c for c in index.classes if c not in pos]
    if missing:
        raise DataError(f"{len(missing)} class(es) of the dataset are not classes of {what}: "
                        f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
                        f"({what} has e.g. {', '.join(classes[:3])})")
    remap = [pos[c] for c in index.classes]
    out = ImageIndex([(p, remap[lbl]) for p, lbl in index.samples], classes, index.root,
                     index.class_names, index.boxes, None, dict(index.meta))
    out.box_report = getattr(index, "box_report", None)
    return out


def with_boxes(index: ImageIndex) -> tuple[ImageIndex, int]:
    """The images of ``index`` that have at least one usable box, and how many had none."""
    boxes = index.boxes or {}
    keep = [i for i, (p, _) in enumerate(index.samples) if boxes.get(p)]
    out = index.subset(keep)
    out.box_report = getattr(index, "box_report", None)
    return out, len(index) - len(keep)


def box_index(data: str | Path, split: str, classes: Sequence[str] | None,
              source: str | Path | None = None, train_classes: Sequence[str] | None = None,
              what: str = "the net", quiet: bool = False, index: ImageIndex | None = None
              ) -> tuple[ImageIndex, int]:
    """Split ``split`` of ``data`` (or the images of ``index``, chosen by the caller:
    ``vgg.data.sources``) with its boxes (``vgg.data.annotations.load_boxes``), labels as
    positions in ``classes`` (a net's classes; default the dataset's), keeping only
    images with a usable box. Returns (index, images left out for having none)."""
    from ..data.annotations import load_boxes
    from ..data.folders import index_split

    if index is None:
        index = index_split(data, split,
                            classes=list(train_classes) if train_classes else None)
    names = list(classes) if classes is not None else list(index.classes)
    # boxes are looked for where the files are (a --val-split's val images lie in train)
    load_boxes(index, source=source, split=index.meta.get("split", split), classes=names,
               quiet=quiet)
    if classes is not None:
        index = map_to_classes(index, names, what)
    kept, dropped = with_boxes(index)
    if dropped:
        log.warning("%s: %d of %d images have no usable box and are left out", split,
                    dropped, len(index))
    if not len(kept):
        raise DataError(f"no image of the {split} split of {data} has a usable box "
                        f"(annotations: {source or 'searched next to the data'}; "
                        f"`vgg data boxes {data} --split {split}` says what was found)")
    return kept, dropped


def boxes_tensor(boxes: Sequence[Box], classes: Sequence[str]) -> tuple[torch.Tensor,
                                                                         torch.Tensor]:
    """(N, 4) float64 xyxy and (N,) int64 class positions of ``boxes`` (names not among
    ``classes`` are left out)."""
    pos = {c: i for i, c in enumerate(classes)}
    keep = [b for b in boxes if b.name in pos]
    xy = torch.tensor([[b.x0, b.y0, b.x1, b.y1] for b in keep], dtype=torch.float64)
    return xy.reshape(-1, 4), torch.tensor([pos[b.name] for b in keep], dtype=torch.int64)


class LocTrainTransform:
    """The training transform of classification (``TrainTransform``: S, crop, flip, PCA
    alphas, in that random order) plus the box target of the crop (see the module
    docstring). ``__call__(path, rng) -> {"image", "alpha", "box" (4,) float32,
    "box_label", "box_valid"}``."""

    def __init__(self, base: Any, boxes: dict[Path, list[Box]], classes: Sequence[str],
                 min_visible: float = MIN_VISIBLE) -> None:
        self.base = base
        self.boxes = {Path(p): v for p, v in boxes.items()}
        self.classes = list(classes)
        self.min_visible = float(min_visible)

    def __repr__(self) -> str:
        return f"LocTrainTransform({self.base!r}, {len(self.boxes)} images with boxes)"

    def __call__(self, src: Any, rng: np.random.Generator) -> dict[str, Any]:
        out = self.base(src, rng)
        geo = out.pop("geometry")
        xy, cls = boxes_tensor(self.boxes.get(Path(src), []), self.classes)
        target, label, valid = choose_target(follow(xy, geo), cls, geo.crop, self.min_visible)
        out["box"] = encode(target[None], torch.tensor([0.0, 0.0, geo.crop],
                                                       dtype=torch.float64))[0].float()
        out["box_label"] = label
        out["box_valid"] = valid
        return out


def follow(boxes: torch.Tensor, geo: Any) -> torch.Tensor:
    """(N, 4) boxes of the original image -> the same boxes in the pixels of the crop that
    ``geo`` (``vgg.data.transforms.Geometry``) describes: rescale, shift, mirror. They may
    extend beyond the crop."""
    out = shift_boxes(scale_boxes(boxes, geo.nw / geo.w, geo.nh / geo.h), -geo.x0, -geo.y0)
    return hflip_boxes(out, geo.crop) if geo.flip else out


def choose_target(boxes: torch.Tensor, labels: torch.Tensor, crop: int,
                  min_visible: float = MIN_VISIBLE) -> tuple[torch.Tensor, int, bool]:
    """The regression target among ``boxes`` (N, 4) in crop pixels: the one with the
    largest area inside the (0, 0, crop, crop) window, if at least ``min_visible`` of it
    is inside. Returns (box (4,), its class, valid); an all-zero box when none is."""
    if len(boxes) == 0:
        return torch.zeros(4, dtype=torch.float64), 0, False
    window = torch.tensor([0.0, 0.0, float(crop), float(crop)], dtype=boxes.dtype)
    inside = intersection_area(boxes, window)
    frac = inside / box_area(boxes).clamp(min=1e-12)
    # largest visible area first, then the larger visible fraction
    best = int(torch.argmax(inside + 1e-9 * frac))
    if inside[best] <= 0 or frac[best] < min_visible:
        return torch.zeros(4, dtype=torch.float64), 0, False
    return boxes[best], int(labels[best]), True


def mean_box(index: ImageIndex, limit: int = 20_000) -> tuple[float, float]:
    """Mean (width, height) of the training boxes as fractions of their image's width and
    height (the "mean box at the centre" baseline). Image sizes from the file headers."""
    from ..data.decode import image_size
    from ..errors import BadImageError

    ws, hs = [], []
    for p, _ in index.samples[:limit]:
        try:
            w, h = image_size(p)
        except BadImageError:
            continue
        for b in (index.boxes or {}).get(p, []):
            ws.append((b.x1 - b.x0) / w)
            hs.append((b.y1 - b.y0) / h)
    if not ws:
        return 0.5, 0.5
    return float(np.mean(ws)), float(np.mean(hs))
