"""From raw boxes to guesses (Appendix A's full protocol): the boxes of each image's top
classes merged greedily per class (:mod:`.merge`), the best-scored merged box of a class
being its guess; and Table 10's fusion of several nets' saved results, which merges the
union of their raw boxes again without running a net."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import VggError
from ..eval.metrics import top_classes
from ..settings import check_float
from .merge import DEFAULT_MERGE_THRESHOLD, greedy_merge
from .result import LocResult, load_saved
from .scoring import TOP_K

log = logging.getLogger(__name__)


def merge_guesses(raw: dict[str, np.ndarray], post: np.ndarray, threshold: float,
                  rows: Sequence[int] | None = None, k: int = TOP_K
                  ) -> dict[int, list[tuple[int, float, tuple[float, ...]]]]:
    """Per image: greedy-merge the raw boxes of each class; a class's box is its merged
    box with the largest summed score; the classes that have a box are rated by the
    classifier's posterior ``post`` (N, K) (Appendix A's rating) and the first ``k`` are
    the guesses, (class, posterior, xyxy) best first. Only classes with boxes compete, so
    an image with boxes of k classes or more gets k guesses."""
    order = np.argsort(raw["image"], kind="stable")
    img_sorted = raw["image"][order]
    guesses: dict[int, list[tuple[int, float, tuple[float, ...]]]] = {}
    for r in (range(len(post)) if rows is None else rows):
        r = int(r)
        lo, hi = np.searchsorted(img_sorted, [r, r + 1])
        sel = order[lo:hi]
        if not len(sel):
            guesses[r] = []
            continue
        boxes = torch.from_numpy(raw["boxes"][sel].astype(np.float64))
        scores = torch.from_numpy(raw["scores"][sel].astype(np.float64))
        labels = torch.from_numpy(raw["class"][sel].astype(np.int64))
        merged = greedy_merge(boxes, scores, labels, threshold)
        # the classes with a box, in the order of the posterior (ties: class order)
        rated = np.full(post.shape[1], -np.inf)
        have = np.unique(merged.labels.numpy())
        rated[have] = post[r, have]
        out = []
        for c in top_classes(rated[None], min(k, len(have)))[0].tolist():
            mine = (merged.labels == c).nonzero().squeeze(1)
            best = int(mine[int(torch.argmax(merged.scores[mine]))])
            out.append((c, float(post[r, c]), tuple(float(v) for v in merged.boxes[best])))
        guesses[r] = out
    return guesses


def fuse_results(parts: Sequence[LocResult], names: Sequence[str] | None = None,
                 threshold: float | None = None) -> LocResult:
    """Table 10's fusion of full-protocol results on the same images: the union of the
    nets' raw boxes merged again (per image and class), classes rated by the mean of the
    results' classification posteriors. With one result: re-scoring (e.g. another merge
    ``threshold``; default the first result's). No net is run. Results of different dense
    strides, class choices or classifier scales may be fused: the result records each
    part's (and a warning says so)."""
    if not parts:
        raise VggError("nothing to fuse")
    names = list(names) if names is not None else [f"result {i}" for i in range(len(parts))]
    ref = parts[0]
    for p, name in zip(parts, names):
        if p.protocol != "full" or p.posteriors is None or not p.raw:
            raise VggError(f"{name} holds {p.protocol}-protocol boxes; fusion needs the full "
                           f"protocol's (vgg localize evaluate --protocol full --save-boxes)")
        if p.classes != ref.classes or p.image_ids != ref.image_ids:
            raise VggError(f"cannot fuse {names[0]} and {name}: different classes or images")
    for what, values in (("dense strides", [s for p in parts for s in p.dense_stride]),
                         ("class choices", [p.class_choice for p in parts]),
                         ("classifier scales", [tuple(p.classifier_scales or ())
                                                for p in parts])):
        if len(set(values)) > 1:
            log.warning("fusing results of different %s (%s): allowed, and recorded", what,
                        ", ".join(dict.fromkeys(map(str, values))))
    if threshold is not None:
        thr = check_float("merge_threshold", threshold, 0.0, 100.0)
    else:
        thr = DEFAULT_MERGE_THRESHOLD if ref.threshold is None else float(ref.threshold)
    post = np.mean([p.posteriors for p in parts], axis=0)  # type: ignore[misc]
    keys = [k for k in ref.raw if all(k in p.raw for p in parts)]  # "scale" is newer
    raw = {k: np.concatenate([p.raw[k] for p in parts]) for k in keys}
    guesses = merge_guesses(raw, post, thr)
    choices = list(dict.fromkeys(p.class_choice or "image" for p in parts))
    cls_scales = sorted({q for p in parts for q in (p.classifier_scales or [])})
    cls_strides = {p.classifier_stride for p in parts}
    return LocResult(
        protocol="full", nets=[n for p in parts for n in p.nets],
        configs=[c for p in parts for c in p.configs], heads=[h for p in parts for h in p.heads],
        tuned=[t for p in parts for t in p.tuned],
        train_scales=[s for p in parts for s in p.train_scales],
        scales=[s for p in parts for s in p.scales], classes=ref.classes,
        image_ids=ref.image_ids, labels=ref.labels, sizes=ref.sizes, gt=ref.gt,
        guesses=[guesses[i] for i in range(len(ref.image_ids))],
        mean_box=tuple(float(v) for v in np.mean([p.mean_box for p in parts], axis=0)),
        raw=raw, posteriors=post.astype(np.float32), classifier=ref.classifier,
        threshold=thr, skipped=ref.skipped,
        precision=" & ".join(dict.fromkeys(p.precision for p in parts)),
        dense_stride=[s for p in parts for s in p.dense_stride],
        class_choice=" & ".join(choices), classifier_scales=cls_scales or None,
        classifier_stride=cls_strides.pop() if len(cls_strides) == 1 else None)


def fuse_saved(paths: Sequence[str | os.PathLike[str]],
               threshold: float | None = None) -> LocResult:
    """:func:`fuse_results` of boxes saved by :meth:`LocResult.save` (``vgg localize
    fuse``)."""
    return fuse_results([load_saved(p) for p in paths], [str(p) for p in paths], threshold)
