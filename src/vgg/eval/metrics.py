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


def topk_wrong(posteriors: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(N,) bool: the image's true class is not among its ``k`` highest scores (``k`` is
    capped at the number of classes). Ties are broken towards the lower class index, as
    :func:`top_classes` orders them. An image whose scores hold a NaN or an infinity is
    wrong (a broken net must never look good)."""
    p, y = _check(posteriors, labels)
    k = min(k, p.shape[1])
    # rank of the true class = number of classes scored strictly higher, plus the tied
    # ones with a lower index (stable order)
    true = p[np.arange(len(y)), y][:, None]
    idx = np.arange(p.shape[1])[None, :]
    rank = (p > true).sum(1) + ((p == true) & (idx < y[:, None])).sum(1)
    return (rank >= k) | ~np.isfinite(p).all(1)


def topk_error(posteriors: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of images whose true class is not among the ``k`` highest scores
    (:func:`topk_wrong`). NaN for zero images."""
    wrong = topk_wrong(posteriors, labels, k)
    return float(np.mean(wrong)) if len(wrong) else float("nan")


def top_classes(posteriors: np.ndarray, k: int) -> np.ndarray:
    """(N, min(k, K)) int64: each image's ``k`` best-scored classes, best first; ties in
    the order of the class index (the order :func:`topk_wrong` ranks by)."""
    p = np.asarray(posteriors)
    return np.argsort(-p, axis=1, kind="stable")[:, :min(k, p.shape[1])]


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


# ---------------------------------------------------------------- transfer (Appendix B)

AP_KINDS = ("voc07_11point", "area")


def precision_recall(scores: np.ndarray, positive: np.ndarray,
                     ignore: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall after each image in order of decreasing score, as the VOC
    devkit computes them: images in ``ignore`` (VOC's "difficult"-only, label 0) are left
    out; ties keep the given order (a stable sort). A non-finite score ranks last."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    if s.shape != pos.shape or s.ndim != 1:
        raise ValueError(f"scores and labels must be (N,), got {s.shape} and {pos.shape}")
    keep = ~np.asarray(ignore, dtype=bool) if ignore is not None else np.ones_like(pos)
    s, pos = s[keep], pos[keep]
    s = np.where(np.isfinite(s), s, -np.inf)
    order = np.argsort(-s, kind="stable")
    tp = np.cumsum(pos[order])
    fp = np.cumsum(~pos[order])
    n_pos = int(pos.sum())
    recall = tp / n_pos if n_pos else np.zeros(len(tp))
    precision = tp / np.maximum(tp + fp, 1)
    return precision, recall


def average_precision(scores: np.ndarray, positive: np.ndarray,
                      ignore: np.ndarray | None = None, kind: str = "voc07_11point") -> float:
    """Average precision of one class over images (NaN when it has no positive).

    ``kind="voc07_11point"``: VOC-2007's devkit, the mean over recall thresholds
    t = 0, 0.1, ..., 1 of the highest precision at recall >= t. ``kind="area"``: VOC-2010
    and later, the area under the precision-recall curve after precision is made
    monotone (each precision replaced by the highest precision at any higher recall)."""
    precision, recall = precision_recall(scores, positive, ignore)
    if not np.asarray(positive, bool)[~np.asarray(ignore, bool) if ignore is not None
                                       else slice(None)].any():
        return float("nan")
    if kind == "voc07_11point":
        ap = 0.0
        for t in np.linspace(0.0, 1.0, 11):
            above = precision[recall >= t - 1e-12]
            ap += float(above.max()) if above.size else 0.0
        return ap / 11.0
    if kind == "area":
        mrec = np.concatenate([[0.0], recall, [1.0]])
        mpre = np.concatenate([[0.0], precision, [0.0]])
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]
        step = np.nonzero(mrec[1:] != mrec[:-1])[0]
        return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))
    raise ValueError(f"unknown AP kind {kind!r}; choose from {', '.join(AP_KINDS)}")


def class_average_precisions(scores: np.ndarray, targets: np.ndarray,
                             ignore: np.ndarray | None = None,
                             kind: str = "voc07_11point") -> np.ndarray:
    """(K,) AP of every class: ``scores`` (N, K), ``targets`` (N, K) multi-hot,
    ``ignore`` (N, K) True where image n is neither positive nor negative for class k."""
    s, t = np.asarray(scores), np.asarray(targets)
    if s.shape != t.shape or s.ndim != 2:
        raise ValueError(f"scores and targets must both be (N, K), got {s.shape}, {t.shape}")
    return np.array([average_precision(s[:, k], t[:, k] > 0,
                                       None if ignore is None else np.asarray(ignore)[:, k],
                                       kind) for k in range(s.shape[1])])


def class_recalls(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(K,) fraction of each class's images whose top-1 class is right (NaN for a class
    with no image): the terms of Caltech's mean class recall."""
    p, y = _check(scores, labels)
    pred = predictions(p)
    k = p.shape[1]
    hits = np.bincount(y[pred == y], minlength=k).astype(np.float64)
    n = np.bincount(y, minlength=k).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, hits / np.maximum(n, 1), np.nan)


def mean_class_recall(scores: np.ndarray, labels: np.ndarray) -> float:
    """Caltech-101/256's metric: the mean over classes (with test images) of the recall
    of each class, so that large classes do not dominate."""
    r = class_recalls(scores, labels)
    return float(np.nanmean(r)) if np.isfinite(r).any() else float("nan")


# ---------------------------------------------------------------- over splits or seeds

def mean_std(values: Sequence[float], what: str = "split") -> tuple[float, float | None]:
    """Mean and standard deviation of a result over splits or seeds, the project's one
    convention for "mean ± std" (Caltech's splits, the study's seeds): the sample
    standard deviation (``ddof=1``, the n - 1 estimate; the paper does not say which it
    used), None for a single value. A non-finite value is refused, naming each
    (``what`` 1-based): a split that scored nothing must not pass as a smaller spread."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError(f"no {what} to average")
    bad = np.nonzero(~np.isfinite(v))[0]
    if bad.size:
        raise ValueError(f"{what} {', '.join(str(i + 1) for i in bad)} of {v.size} gave no "
                         f"finite value ({', '.join(str(v[i]) for i in bad)})")
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None)
