"""Dense evaluation (Sect. 3.2): the fully-convolutional net on the whole rescaled image,
the class score map spatially averaged, soft-max, and the posteriors of the image and its
horizontal mirror averaged.

Images keep their aspect ratio, so a batch can only hold images of one rescaled size
(``vgg.data.rescaled``: ``RescaledImages`` batches them, ``size_buckets`` groups them).
"""

from __future__ import annotations

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

