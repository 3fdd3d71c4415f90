"""The ILSVRC localisation error (Appendix A) of per-image guesses, and the two baselines
every result is compared with.

A guess ``(class, score, (x0, y0, x1, y1))`` is right when its class is a ground-truth
class of the image and its box has IoU > 0.5 with a ground-truth box of that class; an
image is right at top-k when one of its first k guesses is. The baselines keep the
guessed classes and replace every box: by the whole image, or by the mean training box
(fractions of the image size) placed at the centre.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..eval.metrics import top1_error, top5_error
from .boxes import box_iou

IOU_CORRECT = 0.5  # ILSVRC: a box is right when IoU > 0.5 with a ground-truth box
TOP_K = 5

Box = tuple[float, ...]
Guess = tuple[int, float, Box]          # (class, score, xyxy)
Truth = tuple[int, Box]                 # (class, xyxy)
BASELINES = ("whole", "mean")


def best_iou(guess: Guess, gt: Sequence[Truth]) -> float:
    """The best IoU of the guess's box with a ground-truth box of its class (0 when the
    image has none of that class)."""
    c, _, box = guess
    same = [b for gc, b in gt if gc == c]
    if not same:
        return 0.0
    iou = box_iou(torch.tensor([box], dtype=torch.float64),
                  torch.tensor(same, dtype=torch.float64))
    return float(iou.max())


def correct_at(guesses: Sequence[Sequence[Guess]], gt: Sequence[Sequence[Truth]],
               k: int = TOP_K) -> np.ndarray:
    """(N, k) bool: guess j of image i has a ground-truth class of the image and IoU >
    0.5 with a ground-truth box of that class (ILSVRC localisation). Missing guesses are
    wrong."""
    out = np.zeros((len(guesses), k), dtype=bool)
    for i, (gs, gts) in enumerate(zip(guesses, gt)):
        for j, g in enumerate(gs[:k]):
            out[i, j] = best_iou(g, gts) > IOU_CORRECT
    return out


def baseline_guesses(kind: str, guesses: Sequence[Sequence[Guess]], sizes: np.ndarray,
                     mean_box: tuple[float, float]) -> list[list[Guess]]:
    """The same classes and scores with every box replaced: ``kind`` "whole", the whole
    image; "mean", the mean box (``mean_box``: width and height as fractions of the
    image's) at the image's centre. ``sizes`` (N, 2) (width, height)."""
    out = []
    mw, mh = mean_box
    for (w, h), gs in zip(sizes, guesses):
        if kind == "whole":
            box = (0.0, 0.0, float(w), float(h))
        else:
            bw, bh = mw * w, mh * h
            box = ((w - bw) / 2, (h - bh) / 2, (w + bw) / 2, (h + bh) / 2)
        out.append([(c, s, box) for c, s, _ in gs])
    return out


def loc_errors(protocol: str, guesses: Sequence[Sequence[Guess]],
               gt: Sequence[Sequence[Truth]], sizes: np.ndarray,
               mean_box: tuple[float, float], posteriors: np.ndarray | None = None,
               labels: np.ndarray | None = None) -> dict[str, float]:
    """``top1_err`` (and ``top5_err`` for the full protocol) of the guesses and of both
    baselines (``whole_``, ``mean_`` prefixed); with the classification ``posteriors``,
    their ``cls_top1_err`` / ``cls_top5_err`` too. NaN for zero images."""
    errs = {}
    for prefix, gs in (("", guesses),
                       *((f"{b}_", baseline_guesses(b, guesses, sizes, mean_box))
                         for b in BASELINES)):
        right = correct_at(gs, gt)
        n = max(len(right), 1)
        errs[f"{prefix}top1_err"] = float(1 - right[:, 0].sum() / n) if len(right) else \
            float("nan")
        if protocol == "full":
            errs[f"{prefix}top5_err"] = float(1 - right.any(1).sum() / n) if len(right) \
                else float("nan")
    if posteriors is not None and labels is not None and len(labels):
        errs["cls_top1_err"] = top1_error(posteriors, labels)
        errs["cls_top5_err"] = top5_error(posteriors, labels)
    return errs


def mean_iou(guesses: Sequence[Sequence[Guess]], gt: Sequence[Sequence[Truth]]) -> float:
    """Mean over images of the best IoU of the first guess with a ground-truth box of
    its class (0 when the class is wrong, or there is no guess)."""
    ious = [best_iou(g[0], t) if g else 0.0 for g, t in zip(guesses, gt)]
    return float(np.mean(ious)) if ious else float("nan")
