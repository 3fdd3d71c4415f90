"""Dense evaluation (Sect. 3.2): the fully-convolutional net on the whole rescaled image,
the class score map spatially averaged, soft-max, and the posteriors of the image and its
horizontal mirror averaged.

Images keep their aspect ratio, so a batch can only hold images of one rescaled size:
:func:`size_buckets` groups dataset indices by that size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def score_posteriors(score_map: torch.Tensor) -> torch.Tensor:
    """(N, K, h, w) class score map -> (N, K) float32 posteriors: spatial average of the
    scores (the paper's sum-pooling up to a constant), then soft-max."""
    return torch.softmax(score_map.float().mean(dim=(2, 3)), dim=1)


def dense_posteriors(fcn: nn.Module, x: torch.Tensor, flip: bool = True) -> torch.Tensor:
    """(N, 3, H, W) normalised images, H, W >= crop -> (N, K) posteriors.

    ``fcn`` is ``model.to_fully_conv()`` in eval mode. With ``flip`` the posteriors of the
    image and its mirror are averaged (Sect. 3.2)."""
    p = score_posteriors(fcn(x))
    if flip:
        p = 0.5 * (p + score_posteriors(fcn(x.flip(3))))
    return p


def size_buckets(sizes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Batches of dataset indices whose images have the same (rescaled) size.

    ``sizes[i]`` is image i's (width, height) after rescaling. Batches are ordered by size
    then index, each at most ``batch_size`` long; every index appears exactly once."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    groups: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(sizes):
        groups.setdefault((int(s[0]), int(s[1])), []).append(i)
    batches: list[list[int]] = []
    for size in sorted(groups):
        idx = groups[size]
        batches.extend(idx[j:j + batch_size] for j in range(0, len(idx), batch_size))
    return batches
