"""Multi-crop evaluation (Sect. 3.2): per test scale a regular 5x5 grid of crop x crop
crops over the rescaled image, corners included, each also mirrored (50 crops), run
through the net as single crops (so their borders see zero padding, unlike dense
evaluation); the 50 soft-max posteriors are averaged. Also the common single centre crop.

Crops are cut on the device from the rescaled image batch: only the rescaled image
travels from the loader.
"""

from __future__ import annotations

import torch
from torch import nn

GRID = 5  # the paper's 5x5 grid


def grid_offsets(length: int, crop: int, n: int = GRID) -> list[int]:
    """``n`` evenly spaced start offsets of a ``crop`` window along a side of ``length``,
    the first at 0 and the last at ``length - crop`` (both borders covered)."""
    if length < crop:
        raise ValueError(f"side {length} is smaller than the crop {crop}")
    if n == 1:
        return [(length - crop) // 2]
    span = length - crop
    return [int(round(i * span / (n - 1))) for i in range(n)]


def grid_crops(x: torch.Tensor, crop: int, n: int = GRID) -> torch.Tensor:
    """(N, 3, H, W) -> (N, n*n, 3, crop, crop): the n x n grid, row-major (top-left first)."""
    ys = grid_offsets(x.shape[-2], crop, n)
    xs = grid_offsets(x.shape[-1], crop, n)
    crops = [x[:, :, y:y + crop, x0:x0 + crop] for y in ys for x0 in xs]
    return torch.stack(crops, dim=1)


def center_crop(x: torch.Tensor, crop: int) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 3, crop, crop) from the middle of the image."""
    h, w = x.shape[-2:]
    if min(h, w) < crop:
        raise ValueError(f"image {h}x{w} is smaller than the crop {crop}")
    y, x0 = (h - crop) // 2, (w - crop) // 2
    return x[:, :, y:y + crop, x0:x0 + crop]


def _crop_posteriors(net: nn.Module, crops: torch.Tensor, chunk: int) -> torch.Tensor:
    """(M, 3, c, c) -> (M, K) soft-max posteriors, ``chunk`` crops per forward pass."""
    outs = []
    for i in range(0, crops.shape[0], chunk):
        s = net(crops[i:i + chunk])  # (m, K, 1, 1) from the fully-conv net, (m, K) from FC
        outs.append(torch.softmax(s.float().flatten(1) if s.dim() == 4 else s.float(), dim=1))
    return torch.cat(outs)


def multicrop_posteriors(net: nn.Module, x: torch.Tensor, crop: int, flip: bool = True,
                         n: int = GRID, chunk: int = 250) -> torch.Tensor:
    """(N, 3, H, W) normalised -> (N, K): the average soft-max posterior of the n x n grid
    crops (and their mirrors with ``flip``: 2 n^2 = 50 crops by default).

    ``net`` is the FC net or its fully-convolutional form (a crop gives a 1x1 score map)."""
    cl = x.is_cuda and x.is_contiguous(memory_format=torch.channels_last)
    crops = grid_crops(x, crop, n)  # (N, n*n, 3, c, c)
    N, m = crops.shape[:2]
    crops = crops.reshape(N * m, *crops.shape[2:])
    if flip:
        crops = torch.cat([crops, crops.flip(3)])
    crops = crops.contiguous(memory_format=torch.channels_last if cl else
                             torch.contiguous_format)
    p = _crop_posteriors(net, crops, chunk)  # (N*m*(1+flip), K)
    return p.view(1 + int(flip), N, m, -1).mean(dim=(0, 2))


def center_posteriors(net: nn.Module, x: torch.Tensor, crop: int,
                      flip: bool = False) -> torch.Tensor:
    """(N, 3, H, W) normalised -> (N, K): soft-max of the single centre crop (the common
    single-crop protocol); with ``flip`` averaged with its mirror."""
    c = center_crop(x, crop).contiguous(memory_format=torch.channels_last if x.is_cuda and
                                        x.is_contiguous(memory_format=torch.channels_last)
                                        else torch.contiguous_format)
    p = _crop_posteriors(net, c, max(1, c.shape[0]))
    if flip:
        p = 0.5 * (p + _crop_posteriors(net, c.flip(3), max(1, c.shape[0])))
    return p
