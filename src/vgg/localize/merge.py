"""Greedy merging of box predictions (Appendix A full protocol; OverFeat, Sermanet et al.
2014, Sect. 4.3).

Dense application of a localisation net gives one box per position, scale and class (and
net); greedy merging turns that cloud into a few boxes: repeatedly take the pair
``b1 != b2`` of the same class with the lowest ``match_score``; stop when it exceeds a
threshold; otherwise replace the pair by ``box_merge(b1, b2)``, the plain average of their
coordinates (OverFeat's literal rule), carrying the sum of both windows' class scores.

OverFeat's match score is "the sum of the distance between the centres of the two boxes
and the intersection area of the boxes", which mixes pixels and pixels^2. We normalise it
to a unit-free dissimilarity (lower = more alike, 0 for identical boxes)::

    match_score(a, b) = |centre(a) - centre(b)| / mean(sqrt(area(a)), sqrt(area(b)))
                        + (1 - IoU(a, b))

``greedy_merge`` is the vectorised implementation (one pairwise score matrix per class;
for a class of up to 256 CPU boxes, the matrix's first minimum in numpy each merge, else
cached row minima with O(N) tensor work per merge); ``greedy_merge_reference`` is the
straightforward one (pure Python, every pair every iteration) that both are checked and
benchmarked against. All break ties the same way and give the same result.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor


DEFAULT_MERGE_THRESHOLD = 0.7
"""Merge while the best pair scores <= 0.7. For two boxes of the same size offset along
one axis by a fraction f of their side the score is ``f + 2f / (1 + f)``: 0.70 at
f = 0.27 (IoU 0.57), 0.76 at f = 0.3 (IoU 0.54), 0.97 at f = 0.4 (IoU 0.43), 2 for boxes
that just touch. So 0.7 merges only boxes that would count as the same detection at the
ILSVRC criterion (IoU > 0.5). Chosen by the sweep of ``benchmarks/bench_localize.py
--section threshold`` (docs/benchmarks.md; 40 scenes of 10 objects of 3 classes, 660
boxes each with 10% outliers). Recall of the objects (top-n merged boxes per class
matched at IoU > 0.5) / ILSVRC top-1, at jitter sigma = 0.05, 0.1, 0.2:

- t = 0.5: 100 / 100, 92.8 / 100, 79.0 / 96.6 % (clouds left in 3-4 pieces at sigma >= 0.1)
- t = 0.6: 99.2 / 100, 96.0 / 100, 81.0 / 97.4 %
- t = 0.7: 97.8 / 100, 96.8 / 99.1, 80.8 / 94.0 %
- t = 1.0: 86.5 / 91.4, 87.0 / 95.7, 61.2 / 69.8 %
- t = 1.5: 47.0 / 45.7, 50.2 / 53.4, 49.5 / 64.7 %

0.6-0.75 is a plateau (a second seed puts 0.7-0.75 ahead at sigma 0.1); 0.7 sits in it
with fewer leftover pieces than 0.6. Above it, accuracy falls fast: OverFeat's merge is a
plain average, so a cloud of many boxes that absorbs one outlier or a neighbouring
object's cloud moves half-way towards it."""

_BLOCK = 1 << 18  # score-matrix entries computed at a time
_SMALL = 256  # boxes of a class up to which the numpy merger is used (CPU)
_SIZE_EPS = 1e-12  # pixels; only both-zero-area pairs get near it (their distance then dominates)


class MergeResult(NamedTuple):
    """Merged boxes, in the order of the first input box each one holds.

    boxes (M, 4) xyxy; scores (M,) sum of the merged windows' scores; labels (M,) int64;
    counts (M,) int64 number of input boxes merged into each."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    counts: Tensor


def match_score(a: Tensor, b: Tensor) -> Tensor:
    """(N, 4) x (M, 4) xyxy -> (N, M) dissimilarity ``centre distance / mean size +
    (1 - IoU)`` (see the module docstring); mean size is the mean of the two boxes'
    sqrt(area). Unit-free and scale-invariant; identical boxes of positive area score 0
    (two identical zero-area boxes score 1: their IoU is 0)."""
    # Blocks of rows keep a block's temporaries in cache (with the in-place ops, the
    # (5000, 5000) matrix of a crowded image takes 0.4 s on one core instead of 1.3 s).
    step = max(1, _BLOCK // max(b.shape[0], 1))
    if a.shape[0] <= step:
        return _match_block(a, b)
    out = a.new_empty(a.shape[0], b.shape[0])
    for start in range(0, a.shape[0], step):
        out[start:start + step] = _match_block(a[start:start + step], b)
    return out


def _match_block(a: Tensor, b: Tensor) -> Tensor:
    """``match_score`` of (n, 4) x (M, 4), in place where possible. Elementwise ops only
    (no matmul-based cdist), in the order of ``_match_score_py``: an entry is
    bit-identical whether computed in the full matrix or in one row, so the incremental
    updates of ``greedy_merge`` stay exact."""
    ax0, ay0, ax1, ay1 = a[:, :, None].unbind(1)  # (n, 1) each
    bx0, by0, bx1, by1 = b.T  # (M,) each
    area_a = (ax1 - ax0).clamp(min=0) * (ay1 - ay0).clamp(min=0)
    area_b = (bx1 - bx0).clamp(min=0) * (by1 - by0).clamp(min=0)
    iw = torch.minimum(ax1, bx1).sub_(torch.maximum(ax0, bx0)).clamp_(min=0)
    ih = torch.minimum(ay1, by1).sub_(torch.maximum(ay0, by0)).clamp_(min=0)
    inter = iw.mul_(ih)
    union = (area_a + area_b).sub_(inter).clamp_(min=torch.finfo(a.dtype).tiny)
    dissim = inter.div_(union).neg_().add_(1)  # 1 - IoU
    dx = ((ax0 + ax1) / 2) - ((bx0 + bx1) / 2)
    dy = ((ay0 + ay1) / 2) - ((by0 + by1) / 2)
    dist = dx.mul_(dx).add_(dy.mul_(dy)).sqrt_()
    size = ((area_a.sqrt() + area_b.sqrt()) / 2).clamp_(min=_SIZE_EPS)
    return dist.div_(size).add_(dissim)


def _check(boxes: Tensor, scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    boxes = torch.as_tensor(boxes)
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) xyxy, got {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        boxes = boxes.float()
    n = boxes.shape[0]
    scores = torch.as_tensor(scores, device=boxes.device)
    labels = torch.as_tensor(labels, device=boxes.device).long()
    if scores.shape != (n,) or labels.shape != (n,):
        raise ValueError(f"scores and labels must be ({n},) like boxes, got "
                         f"{tuple(scores.shape)} and {tuple(labels.shape)}")
    return boxes, scores, labels


class _ClassMerger:
    """Greedy merging state of one class: its boxes in slots, the (n, n) ``match_score``
    matrix (+inf on the diagonal and for removed slots), and each row's minimum with its
    first argmin. A merge of slots i < j keeps the merged box in slot i."""

    def __init__(self, boxes: Tensor, scores: Tensor) -> None:
        n = boxes.shape[0]
        self.boxes, self.scores = boxes.clone(), scores.clone()
        self.counts = torch.ones(n, dtype=torch.long, device=boxes.device)
        self.slot = torch.arange(n, device=boxes.device)  # input index of each slot's first box
        self.alive = torch.ones(n, dtype=torch.bool, device=boxes.device)
        self.n_alive = n
        self.m = match_score(self.boxes, self.boxes)  # (n, n), symmetric
        self.m.fill_diagonal_(float("inf"))
        self.rowmin, self.rowarg = self.m.min(dim=1)

    def best(self) -> tuple[float, int, int]:
        """The lowest-scoring pair (score, i, j), i < j; ties go to the lexicographically
        smallest pair: the first row holding the global minimum is i (row j holds the same
        value at column i, but rows before i have larger minima) and its first argmin j."""
        r = torch.argmin(self.rowmin)
        best, i, j = torch.stack((self.rowmin[r], r.to(self.m.dtype),
                                  self.rowarg[r].to(self.m.dtype))).tolist()  # one sync
        return best, int(i), int(j)

    def merge(self, i: int, j: int) -> None:
        """Replace slots i < j by OverFeat's box_merge (the plain average) in slot i and
        update the cache with O(n) work plus a rescan of the rows that lost their minimum."""
        inf = float("inf")
        self.boxes[i] = (self.boxes[i] + self.boxes[j]) / 2
        self.scores[i] += self.scores[j]
        self.counts[i] += self.counts[j]
        self.alive[j] = False
        self.n_alive -= 1
        m, rowmin, rowarg = self.m, self.rowmin, self.rowarg
        m[j, :] = inf
        m[:, j] = inf
        rowmin[j] = inf
        new = match_score(self.boxes[i:i + 1], self.boxes)[0].masked_fill_(~self.alive, inf)
        new[i] = inf
        m[i, :] = new
        m[:, i] = new
        # A row's entries changed only at columns i (new value) and j (now inf). If its
        # minimum was elsewhere, column i wins when lower, or equal at a lower column
        # (argmin keeps the first). If its minimum was at i or j, every column before the
        # old argmin was strictly larger, so column i wins when new <= the old minimum;
        # otherwise the row must be rescanned.
        pointed = (rowarg == i) | (rowarg == j)
        earlier_tie = (new == rowmin) & (rowarg > i)
        wins = torch.where(pointed, new <= rowmin, (new < rowmin) | earlier_tie)
        wins &= self.alive
        stale = pointed & ~wins & self.alive
        stale[i] = True  # row i itself changed entirely
        self.rowmin = torch.where(wins, new, rowmin)
        self.rowarg = torch.where(wins, torch.full_like(rowarg, i), rowarg)
        rows = stale.nonzero().squeeze(1)
        self.rowmin[rows], self.rowarg[rows] = m[rows].min(dim=1)

    def compact(self) -> None:
        """Drop removed slots (keeping slot order, hence the tie order) once they are half
        the matrix, so later merges cost O(alive) rather than O(n)."""
        keep = self.alive.nonzero().squeeze(1)
        self.m = self.m[keep][:, keep]
        self.boxes, self.scores = self.boxes[keep], self.scores[keep]
        self.counts, self.slot = self.counts[keep], self.slot[keep]
        self.alive = self.alive[keep]
        self.rowmin, self.rowarg = self.m.min(dim=1)

    def run(self, threshold: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Merge until the best pair scores above ``threshold``; returns the surviving
        slots' (first input index, box, summed score, count), by input index."""
        while self.n_alive > 1:
            if self.n_alive <= self.alive.numel() // 2 and self.alive.numel() > 64:
                self.compact()
            best, i, j = self.best()
            if not best <= threshold:  # also stops on inf (no same-class pair) and NaN
                break
            self.merge(i, j)
        keep = self.alive.nonzero().squeeze(1)
        return self.slot[keep], self.boxes[keep], self.scores[keep], self.counts[keep]


def _match_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``_match_block`` in numpy, in the same order of operations (bit-identical)."""
    ax0, ay0, ax1, ay1 = (a[:, k:k + 1] for k in range(4))  # (n, 1) each
    bx0, by0, bx1, by1 = b.T  # (M,) each
    area_a = np.maximum(ax1 - ax0, 0) * np.maximum(ay1 - ay0, 0)
    area_b = np.maximum(bx1 - bx0, 0) * np.maximum(by1 - by0, 0)
    iw = np.maximum(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0)
    ih = np.maximum(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0)
    inter = iw * ih
    union = np.maximum(area_a + area_b - inter, np.finfo(a.dtype).tiny)
    dissim = 1 - inter / union
    dx = (ax0 + ax1) / 2 - (bx0 + bx1) / 2
    dy = (ay0 + ay1) / 2 - (by0 + by1) / 2
    dist = np.sqrt(dx * dx + dy * dy)
    size = np.maximum((np.sqrt(area_a) + np.sqrt(area_b)) / 2, _SIZE_EPS)
    return dist / size + dissim


def _merge_small(boxes: Tensor, scores: Tensor, threshold: float
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:class:`_ClassMerger`'s result for a class of at most ``_SMALL`` CPU boxes, in
    numpy: the whole (n, n) score matrix's first minimum each merge (row-major, so ties go
    to the lowest pair, as in the reference) costs less at this size than the cached row
    minima's dozen tensor calls (dense application at a fine stride gives many such
    classes: tens of boxes per class and image)."""
    b = boxes.numpy().copy()
    sc = scores.numpy().copy()
    n = len(b)
    counts = np.ones(n, np.int64)
    alive = np.ones(n, bool)
    m = _match_np(b, b)
    np.fill_diagonal(m, np.inf)
    for _ in range(n - 1):
        k = int(np.argmin(m))
        i, j = divmod(k, n)
        if not m[i, j] <= threshold:  # also stops on inf (no pair left) and NaN
            break
        b[i] = (b[i] + b[j]) / 2
        sc[i] += sc[j]
        counts[i] += counts[j]
        alive[j] = False
        m[j, :] = np.inf
        m[:, j] = np.inf
        new = _match_np(b[i:i + 1], b)[0]
        new[~alive] = np.inf
        new[i] = np.inf
        m[i, :] = new
        m[:, i] = new
    keep = np.nonzero(alive)[0]
    return (torch.from_numpy(keep), torch.from_numpy(b[keep]), torch.from_numpy(sc[keep]),
            torch.from_numpy(counts[keep]))


def greedy_merge(boxes: Tensor, scores: Tensor, labels: Tensor,
                 threshold: float = DEFAULT_MERGE_THRESHOLD) -> MergeResult:
    """OverFeat greedy merging (Appendix A full protocol), vectorised.

    boxes (N, 4) xyxy pixels, scores (N,) class scores of the windows that predicted them,
    labels (N,) int64 classes. Boxes of different labels never merge; merging stops when
    the best remaining same-label pair's ``match_score`` exceeds ``threshold``. Ties go to
    the lowest index pair; a merged box takes the lower index's place, so the result lists
    boxes by the first input box they hold and is the same as
    ``greedy_merge_reference``'s. CPU or CUDA tensors; the work is per class: one
    (n_c, n_c) score matrix, then per merge either its first minimum in numpy (classes of
    up to ``_SMALL`` CPU boxes: what dense application at a fine stride gives, tens of
    boxes per class and image, where a tensor call's overhead dominates) or a fixed number
    of O(n_c) tensor operations (plus rescans of the few rows whose minimum the merge
    removed).

    See ``DEFAULT_MERGE_THRESHOLD`` for the choice of ``threshold``.
    """
    boxes, scores, labels = _check(boxes, scores, labels)
    keep = [torch.empty(0, dtype=torch.long, device=boxes.device)]
    parts_b, parts_s = [boxes.new_empty(0, 4)], [scores.new_empty(0)]
    parts_c = [labels.new_empty(0)]
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().squeeze(1)
        if len(idx) <= _SMALL and boxes.device.type == "cpu":
            k, b, s, cnt = _merge_small(boxes[idx], scores[idx], threshold)
        else:
            k, b, s, cnt = _ClassMerger(boxes[idx], scores[idx]).run(threshold)
        keep.append(idx[k])
        parts_b.append(b)
        parts_s.append(s)
        parts_c.append(cnt)
    order = torch.cat(keep).argsort()  # by first input box, independent of class order
    keep_all = torch.cat(keep)[order]
    return MergeResult(boxes=torch.cat(parts_b)[order], scores=torch.cat(parts_s)[order],
                       labels=labels[keep_all], counts=torch.cat(parts_c)[order])


def _match_score_py(a: list[float], b: list[float]) -> float:
    """``match_score`` of two boxes in Python floats, in the same order of operations (so
    float64 inputs give bit-identical scores)."""
    wa, ha = max(a[2] - a[0], 0.0), max(a[3] - a[1], 0.0)
    wb, hb = max(b[2] - b[0], 0.0), max(b[3] - b[1], 0.0)
    area_a, area_b = wa * ha, wb * hb
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = iw * ih
    union = area_a + area_b - inter
    iou = inter / max(union, 2.2250738585072014e-308)
    dx = (a[0] + a[2]) / 2 - (b[0] + b[2]) / 2
    dy = (a[1] + a[3]) / 2 - (b[1] + b[3]) / 2
    dist = math.sqrt(dx * dx + dy * dy)
    size = (math.sqrt(area_a) + math.sqrt(area_b)) / 2
    return dist / max(size, _SIZE_EPS) + (1 - iou)


def greedy_merge_reference(boxes: Tensor, scores: Tensor, labels: Tensor,
                           threshold: float = DEFAULT_MERGE_THRESHOLD,
                           max_merges: int | None = None) -> MergeResult:
    """The same merging as ``greedy_merge``, written out plainly: every iteration scores
    every same-label pair in Python and merges the best (O(N^2) per merge, O(N^3) in all).
    For checking and benchmarking; ``max_merges`` stops after that many merges (to time
    the first iterations of a run too long to finish). Computes in Python floats
    (float64), so it equals ``greedy_merge`` exactly on float64 inputs."""
    boxes, scores, labels = _check(boxes, scores, labels)
    bs, ss, ls = boxes.tolist(), scores.tolist(), labels.tolist()
    cs = [1] * len(bs)
    alive = list(range(len(bs)))  # ascending slot indices
    merges = 0
    while max_merges is None or merges < max_merges:
        best, pair = math.inf, None
        for p, i in enumerate(alive):
            for j in alive[p + 1:]:
                if ls[i] == ls[j]:
                    s = _match_score_py(bs[i], bs[j])
                    if s < best:  # strict: ties keep the first (lowest) pair
                        best, pair = s, (i, j)
        if pair is None or not best <= threshold:
            break
        i, j = pair
        bs[i] = [(u + v) / 2 for u, v in zip(bs[i], bs[j])]
        ss[i] += ss[j]
        cs[i] += cs[j]
        alive.remove(j)
        merges += 1
    dev = boxes.device
    return MergeResult(
        boxes=torch.tensor([bs[i] for i in alive], dtype=boxes.dtype, device=dev).reshape(-1, 4),
        scores=torch.tensor([ss[i] for i in alive], dtype=scores.dtype, device=dev),
        labels=torch.tensor([ls[i] for i in alive], dtype=torch.long, device=dev),
        counts=torch.tensor([cs[i] for i in alive], dtype=torch.long, device=dev))
