"""Saved per-image posteriors and their fusion (Sect. 3.2 multi-scale / multi-crop & dense,
Sect. 4.4 ConvNet fusion): averaging soft-max posteriors of scales, methods or nets without
rerunning a network.

File format (``.npz``, loadable with ``allow_pickle=False``): ``image_ids`` (N,) str,
``classes`` (K,) str, ``labels`` (N,) int64, ``posteriors`` (N, K) float32 and ``meta``, a
JSON string (config names, scales, method, sources).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import atomic_write
from ..errors import VggError
from ..npz import Array, json_meta, read_npz
from . import metrics


@dataclass
class Posteriors:
    """Soft-max outputs of one evaluation: row ``i`` is image ``image_ids[i]`` with true
    class ``labels[i]`` (index into ``classes``)."""

    image_ids: list[str]
    classes: list[str]
    labels: np.ndarray  # (N,) int64
    posteriors: np.ndarray  # (N, K) float32
    meta: dict[str, Any] = field(default_factory=dict)
    source: str | None = None  # file or net it came from, for messages

    def __post_init__(self) -> None:
        self.image_ids = [str(i) for i in self.image_ids]
        self.classes = [str(c) for c in self.classes]
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.posteriors = np.asarray(self.posteriors, dtype=np.float32)
        n, k = len(self.image_ids), len(self.classes)
        if self.posteriors.shape != (n, k) or self.labels.shape != (n,):
            raise ValueError(f"{self.source or 'posteriors'}: expected posteriors ({n}, {k}) "
                             f"and labels ({n},), got {self.posteriors.shape} and "
                             f"{self.labels.shape}")

    @property
    def name(self) -> str:
        return self.source or "posteriors"

    def metrics(self, confused: int = 10) -> dict[str, Any]:
        return metrics.summarize(self.posteriors, self.labels, self.classes, confused)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the ``.npz`` atomically."""
        arrays = {
            "image_ids": np.array(self.image_ids, dtype=np.str_),
            "classes": np.array(self.classes, dtype=np.str_),
            "labels": self.labels,
            "posteriors": self.posteriors.astype(np.float32),
            "meta": np.array(json.dumps(self.meta)),
        }
        try:
            return atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
        except OSError as e:
            raise VggError(f"cannot write posteriors {path}: {e.strerror or e}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Posteriors:
        """Read a file written by :meth:`save` (:func:`vgg.npz.read_npz`); ``VggError``
        naming it when it is missing, not such a file, or its rows are not probabilities."""
        z = read_npz(path, POSTERIORS_NPZ, "posteriors")
        meta = json_meta(z, path)
        post = cls(image_ids=z["image_ids"].tolist(), classes=z["classes"].tolist(),
                   labels=z["labels"], posteriors=z["posteriors"], meta=meta,
                   source=str(path))
        k = len(post.classes)
        if post.labels.size and (post.labels.min() < 0 or post.labels.max() >= k):
            raise VggError(f"{path}: labels outside 0..{k - 1}")
        check_probabilities(post.posteriors, post.image_ids, str(path))
        return post


# the arrays of a saved posteriors file (vgg.npz: N images, K classes)
POSTERIORS_NPZ = {"image_ids": Array("U", ("N",)), "classes": Array("U", ("K",)),
                  "labels": Array("iu", ("N",)), "posteriors": Array("f", ("N", "K")),
                  "meta": Array("U", (), required=False)}

# how far a row of saved posteriors may be from a probability distribution (float32
# soft-max outputs and their averages are within 1e-5)
PROB_TOL = 1e-3


def check_probabilities(p: np.ndarray, ids: Sequence[str], name: str) -> None:
    """Refuse (N, K) rows that are not probabilities: every value finite and in [0, 1],
    every row summing to 1, both within :data:`PROB_TOL`; the message names the file,
    how many rows and the first one."""
    bad = ~np.isfinite(p).all(1)
    if bad.any():
        raise VggError(f"{name} holds non-finite posteriors (NaN or inf) for "
                       f"{int(bad.sum())} of {len(bad)} images (e.g. "
                       f"{ids[int(np.argmax(bad))]}); refusing to score them")
    sums = p.astype(np.float64).sum(1)
    bad = ((p < -PROB_TOL) | (p > 1 + PROB_TOL)).any(1) | (np.abs(sums - 1) > PROB_TOL)
    if bad.any():
        i = int(np.argmax(bad))
        raise VggError(f"{name} holds rows that are not probabilities (values in [0, 1] "
                       f"summing to 1, tolerance {PROB_TOL:g}): {int(bad.sum())} of "
                       f"{len(bad)} images, e.g. {ids[i]} (values {float(p[i].min()):.4g}.."
                       f"{float(p[i].max()):.4g}, sum {float(sums[i]):.4g}); refusing to "
                       f"score them")


def check_same_classes(classes: Sequence[Sequence[str] | None], names: Sequence[str]) -> None:
    """Refuse to average outputs whose class lists differ (a net's output 3 must mean the
    same class in every net), naming the first two that disagree and how."""
    ref = list(classes[0]) if classes[0] is not None else None
    for cl, name in zip(classes[1:], names[1:]):
        cl = list(cl) if cl is not None else None
        if cl == ref:
            continue
        if ref is None or cl is None:
            why = "one of them has no class names"
        elif len(cl) != len(ref):
            why = f"{len(ref)} vs {len(cl)} classes"
        elif set(cl) == set(ref):
            why = "same classes in a different order"
        else:
            diff = sorted(set(ref) ^ set(cl))
            why = f"classes differ: {', '.join(diff[:5])}{' ...' if len(diff) > 5 else ''}"
        raise VggError(f"cannot fuse {names[0]} and {name}: their class lists differ ({why})")


def fuse(parts: Sequence[Posteriors], weights: Sequence[float] | None = None) -> Posteriors:
    """Average the posteriors of several evaluations of the same images (scales, methods or
    nets). Rows are matched by image id (order may differ); refuses differing class
    lists, image sets or labels, naming the sources."""
    if not parts:
        raise VggError("nothing to fuse")
    names = [p.name if p.source else f"part {i}" for i, p in enumerate(parts)]
    check_same_classes([p.classes for p in parts], names)
    ref = parts[0]
    pos = {iid: i for i, iid in enumerate(ref.image_ids)}
    if len(pos) != len(ref.image_ids):
        raise VggError(f"{names[0]}: duplicate image ids")
    w = np.ones(len(parts)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(parts),) or not (w >= 0).all() or w.sum() <= 0:
        raise VggError(f"need {len(parts)} non-negative weights with a positive sum")
    acc = np.zeros(ref.posteriors.shape, dtype=np.float64)
    for part, name, wi in zip(parts, names, w):
        if set(part.image_ids) != set(pos) or len(part.image_ids) != len(pos):
            only_a = sorted(set(pos) - set(part.image_ids))
            only_b = sorted(set(part.image_ids) - set(pos))
            example = (f"{only_a[0]!r} only in {names[0]}" if only_a
                       else f"{only_b[0]!r} only in {name}" if only_b else "duplicates")
            raise VggError(f"cannot fuse {names[0]} and {name}: they cover different images "
                           f"({len(pos)} vs {len(part.image_ids)}; e.g. {example})")
        order = np.array([pos[i] for i in part.image_ids], dtype=np.int64)
        labels = np.empty_like(part.labels)
        labels[order] = part.labels
        if not np.array_equal(labels, ref.labels):
            bad = ref.image_ids[int(np.nonzero(labels != ref.labels)[0][0])]
            raise VggError(f"cannot fuse {names[0]} and {name}: the labels differ (e.g. "
                           f"image {bad!r})")
        acc[order] += wi * part.posteriors.astype(np.float64)
    meta = {"fused": [p.meta | {"source": p.source} if p.source else p.meta for p in parts]}
    return Posteriors(image_ids=ref.image_ids, classes=ref.classes, labels=ref.labels,
                      posteriors=(acc / w.sum()).astype(np.float32), meta=meta,
                      source=" + ".join(names))


def load_and_fuse(paths: Sequence[str | os.PathLike[str]]) -> Posteriors:
    return fuse([Posteriors.load(p) for p in paths])
