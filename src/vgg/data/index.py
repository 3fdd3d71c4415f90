"""``ImageIndex``: a dataset's files as every indexer returns them ((path, label) samples,
class names, optional boxes and multi-label vectors), and the stable ids of its images."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .boxes import Box, BoxReport

__all__ = ["ImageIndex", "image_ids"]


@dataclass
class ImageIndex:
    """A dataset's files. ``samples[i] = (path, label)``; ``classes[label]`` is the class
    name (folder name / wnid / annotation class); ``class_names`` maps them to
    human-readable names; ``boxes`` maps a path to its usable objects and ``box_report``
    says what loading them found; ``multilabels[i]`` lists every class index present in
    image i (multi-label sets only); ``difficult[i]`` the classes image i holds only as
    VOC "difficult" objects (neither positive nor negative when scoring; VOC sets)."""

    samples: list[tuple[Path, int]]
    classes: list[str]
    root: Path | None = None
    class_names: dict[str, str] | None = None
    boxes: dict[Path, list[Box]] | None = None
    multilabels: list[list[int]] | None = None
    meta: dict[str, str] = field(default_factory=dict)
    box_report: BoxReport | None = None
    difficult: list[list[int]] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def paths(self) -> list[Path]:
        return [p for p, _ in self.samples]

    @property
    def labels(self) -> list[int]:
        return [c for _, c in self.samples]

    def display_names(self) -> list[str]:
        """Class names for people (human-readable where known, else the ids)."""
        names = self.class_names or {}
        return [names.get(c, c) for c in self.classes]

    def label_matrix(self) -> np.ndarray:
        """(N, K) float32 multi-hot label vectors (the single label when not multi-label)."""
        y = np.zeros((len(self.samples), len(self.classes)), np.float32)
        for i, (_, c) in enumerate(self.samples):
            for k in (self.multilabels[i] if self.multilabels is not None else [c]):
                y[i, k] = 1.0
        return y

    def subset(self, indices: list[int] | np.ndarray) -> ImageIndex:
        """The images ``indices`` with the same classes (``box_report``, which describes
        the whole index, is not carried over)."""
        idx = [int(i) for i in indices]
        samples = [self.samples[i] for i in idx]
        boxes = None if self.boxes is None else {
            p: self.boxes[p] for p, _ in samples if p in self.boxes}
        ml = None if self.multilabels is None else [self.multilabels[i] for i in idx]
        hard = None if self.difficult is None else [self.difficult[i] for i in idx]
        return ImageIndex(samples, list(self.classes), self.root, self.class_names, boxes,
                          ml, dict(self.meta), difficult=hard)

    def set_boxes(self, boxes: dict[Path, list[Box]], report: BoxReport) -> None:
        """Take the usable boxes of each image (``annotations.collect_boxes``) and what
        loading them found; images holding several classes make the index multi-label."""
        self.boxes = boxes
        self.box_report = report
        multi = self.box_multilabels()
        if multi is not None:
            self.multilabels = multi

    def box_multilabels(self) -> list[list[int]] | None:
        """Every class of an image (its label + its boxes' classes), when any image has
        two."""
        pos = {c: i for i, c in enumerate(self.classes)}
        boxes = self.boxes or {}
        multi = [sorted({c} | {pos[b.name] for b in boxes.get(p, []) if b.name in pos})
                 for p, c in self.samples]
        return multi if any(len(m) > 1 for m in multi) else None


def image_ids(index: Any) -> list[str]:
    """Stable ids: the path relative to the index root (else the path as given)."""
    root = getattr(index, "root", None)
    ids = []
    for path, _ in index.samples:
        p = Path(path)
        if root is not None:
            with contextlib.suppress(ValueError):
                p = p.relative_to(root)
        ids.append(p.as_posix())
    return ids
