"""Classification metrics on per-image posteriors (Sect. 3.2 / ILSVRC): top-k error,
per-class accuracy and the most confused class pairs.

All functions take ``posteriors`` (N, K) (any monotone scores work) and integer
``labels`` (N,) in 0..K-1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _check(posteriors: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(posteriors)
    y = np.asarray(labels).astype(np.int64, copy=False)
    if p.ndim != 2:
        raise ValueError(f"posteriors must be (N, K), got shape {p.shape}")
    if y.shape != (p.shape[0],):
        raise ValueError(f"labels must be ({p.shape[0]},), got shape {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"labels must lie in 0..{p.shape[1] - 1}")
    return p, y


def topk_error(posteriors: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of images whose true class is not among the ``k`` highest scores
    (``k`` is capped at the number of classes). Ties are broken towards the lower class
    index, as ``argsort`` does. An image whose scores hold a NaN or an infinity counts as
    wrong (a broken net must never look good). NaN for zero images."""
    p, y = _check(posteriors, labels)
    if p.shape[0] == 0:
        return float("nan")
    k = min(k, p.shape[1])
    # rank of the true class = number of classes scored strictly higher, plus the tied
    # ones with a lower index (stable order)
    true = p[np.arange(len(y)), y][:, None]
    idx = np.arange(p.shape[1])[None, :]
    rank = (p > true).sum(1) + ((p == true) & (idx < y[:, None])).sum(1)
    wrong = (rank >= k) | ~np.isfinite(p).all(1)
    return float(np.mean(wrong))


def top1_error(posteriors: np.ndarray, labels: np.ndarray) -> float:
    return topk_error(posteriors, labels, 1)


def top5_error(posteriors: np.ndarray, labels: np.ndarray) -> float:
    return topk_error(posteriors, labels, 5)


def predictions(posteriors: np.ndarray) -> np.ndarray:
    """Top-1 class of every image, (N,) int64; -1 where the scores are not finite."""
    p = np.asarray(posteriors)
    out = p.argmax(1).astype(np.int64) if p.shape[1] else np.zeros(len(p), np.int64)
    out[~np.isfinite(p).all(1)] = -1
    return out


def confusion_matrix(posteriors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(K, K) int64 counts: row = true class, column = top-1 prediction (images with
    non-finite scores are left out: they are errors with no predicted class)."""
    p, y = _check(posteriors, labels)
    k = p.shape[1]
    cm = np.zeros((k, k), dtype=np.int64)
    pred = predictions(p)
    ok = pred >= 0
    np.add.at(cm, (y[ok], pred[ok]), 1)
    return cm


def per_class_accuracy(posteriors: np.ndarray, labels: np.ndarray,
                       classes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{class: {"n": images, "top1_acc": fraction}}`` for every class with at least one
    image (classes absent from ``labels`` are left out rather than reported as 0 or NaN)."""
    cm = confusion_matrix(posteriors, labels)
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    out: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(classes):
        n = int(counts[i])
        if n:
            out[name] = {"n": n, "top1_acc": float(cm[i, i] / n)}
    return out


def confused_pairs(posteriors: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                   limit: int = 10) -> list[dict[str, Any]]:
    """The ``limit`` most frequent (true, predicted) top-1 mistakes, most frequent first:
    ``{"true": name, "predicted": name, "count": n, "fraction": n / images of true}``.
    Ties are ordered by true class then predicted class index."""
    cm = confusion_matrix(posteriors, labels)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    totals = cm.sum(1)
    t, q = np.nonzero(off)
    order = sorted(zip(t.tolist(), q.tolist()), key=lambda ij: (-off[ij], ij[0], ij[1]))
    return [{"true": classes[i], "predicted": classes[j], "count": int(off[i, j]),
             "fraction": float(off[i, j] / totals[i])} for i, j in order[:limit]]


def summarize(posteriors: np.ndarray, labels: np.ndarray, classes: Sequence[str],
              confused: int = 10) -> dict[str, Any]:
    """The metrics every evaluation reports, as plain JSON-ready values."""
    return {
        "top1_err": top1_error(posteriors, labels),
        "top5_err": top5_error(posteriors, labels),
        "n_images": int(np.asarray(labels).shape[0]),
        "per_class": per_class_accuracy(posteriors, labels, classes),
        "confused_pairs": confused_pairs(posteriors, labels, classes, confused),
    }
