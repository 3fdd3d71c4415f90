"""Dense application (Sect. 3.2): the fully-convolutional form of a VGG net, at the
plain output stride of 32 pixels or a finer one computed a trous (SPEC 6b), its default per
crop, and OverFeat's shift-and-stitch as a cross-check.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .errors import ConfigError
from .layers import HEAD_NAMES, VGGConfig, _check_names, _VGGBase
from .preprocess import Preprocess
from .settings import MAX_SIDE, check_int, label

# Five 2x2 pools: the fully-convolutional net's positions are 32 pixels apart. Dense
# application at a finer output stride s = 32 / 2^m removes the stride of the last m pools
# (SPEC 6b); s must divide 32.
NET_STRIDE = 32
DENSE_STRIDES = (1, 2, 4, 8, 16, 32)
# SPEC 6b: at crop 224 a window holds about 7 output positions per side (224 / 32).
POSITIONS_PER_WINDOW = 7


def check_dense_stride(stride: Any) -> int:
    """``stride`` if it is a divisor of 32 (1, 2, 4, 8, 16 or 32), else ``ConfigError``."""
    if isinstance(stride, bool) or not isinstance(stride, int) or stride not in DENSE_STRIDES:
        raise ConfigError(f"{label('dense_stride')} must be a divisor of {NET_STRIDE} "
                          f"({', '.join(map(str, DENSE_STRIDES))}), got {stride!r}")
    return stride


def default_dense_stride(crop: int) -> int:
    """SPEC 6b: the output stride that keeps the paper's geometry at ``crop``, about
    7 positions per window side: the largest divisor of 32 at most ``crop / 7`` (224 -> 32,
    192 -> 16, 128 -> 16, 96 -> 8, 64 -> 8, 32 -> 4).

    Above 224 it stays 32: the net has five pools, so a coarser stride would have to skip
    positions; crop 256 at stride 32 has 8 positions per window side, a little denser than
    the paper's 7."""
    crop = check_int("crop", crop, NET_STRIDE, MAX_SIDE)
    return max(s for s in DENSE_STRIDES if s * POSITIONS_PER_WINDOW <= crop)


def resolve_dense_stride(stride: int | str | None, crop: int) -> int:
    """The output stride at which a net trained at ``crop`` is applied densely: ``None`` or
    ``"auto"`` give :func:`default_dense_stride` (the paper's geometry), anything else must
    be a divisor of 32 (:func:`check_dense_stride`)."""
    if stride is None or stride == "auto":
        return default_dense_stride(crop)
    return check_dense_stride(stride)


class LinearAsConv(nn.Module):
    """Layer ``index`` of a classifier (a ``Linear``) applied as a ``kernel`` x ``kernel``
    convolution: the weight (out, C * k * k) is viewed as (out, C, k, k), in the same
    (C, H, W) order as the FC net's flatten. Looks the layer up at every call."""

    def __init__(self, classifier: nn.Sequential, index: int, kernel: int,
                 dilation: int = 1) -> None:
        super().__init__()
        self.classifier = classifier
        self.index = index
        self.kernel = kernel
        self.dilation = dilation

    @property
    def linear(self) -> nn.Linear:
        return self.classifier[self.index]

    @property
    def weight(self) -> torch.Tensor:
        w, k = self.linear.weight, self.kernel
        return w.view(w.shape[0], w.shape[1] // (k * k), k, k)

    @property
    def bias(self) -> torch.Tensor | None:
        return self.linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dilation == 1:
            return nn.functional.conv2d(x, self.weight, self.bias)
        return nn.functional.conv2d(x, self.weight, self.bias, dilation=self.dilation)

    def extra_repr(self) -> str:
        lin = self.linear
        dil = f", dilation {self.dilation}" if self.dilation != 1 else ""
        return f"classifier[{self.index}] {lin.in_features}->{lin.out_features} as " \
               f"{self.kernel}x{self.kernel} conv{dil}"


class AtrousFeatures(nn.Module):
    """The conv stack ``features`` applied at output stride ``stride`` = 32 / 2^m (Sect. 3.2
    dense application at a finer stride, SPEC 6b): the last m max-pools run with stride 1,
    each dilated by the factor accumulated before it (1, 2, 4, ...), and every layer after
    the first of them that has a kernel (3x3, 1x1, 5x5 convs) is dilated by the factor
    accumulated so far, its zero padding scaled alike; BN, ReLU and LRN act per position and
    are unchanged. One pass over the image, the same weights (looked up at every call), no
    copy. The map after layer ``i`` has stride ``min(2^(pools up to i), stride)`` pixels.

    With layer ``i`` of stride 2^p <= ``stride`` the output equals the plain stack's
    exactly (same modules, same calls); the values of a coarser layer that lie on its
    plain grid (every ``2^p / stride``-th position) equal the plain stack's up to float
    round-off, the positions between them are those of the image shifted by multiples of
    ``stride`` pixels."""

    def __init__(self, features: nn.Sequential, stride: int) -> None:
        super().__init__()
        self.features = features
        self.stride = check_dense_stride(stride)
        pools = [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
        m = (NET_STRIDE // self.stride).bit_length() - 1
        self.stride1_pools = frozenset(pools[len(pools) - m:] if m else ())
        dilations, d = [], 1
        for i in range(len(features)):
            dilations.append(d)  # the factor this layer runs with
            if i in self.stride1_pools:
                d *= 2
        self.dilations = tuple(dilations)
        self.out_dilation = d   # FC1 (and any later kernel) runs with this dilation

    def run(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Layer ``i`` of the stack at this stride."""
        layer, d = self.features[i], self.dilations[i]
        if i in self.stride1_pools:
            pool: nn.MaxPool2d = layer  # type: ignore[assignment]
            return nn.functional.max_pool2d(x, pool.kernel_size, stride=1,
                                            padding=pool.padding, dilation=d,
                                            ceil_mode=pool.ceil_mode)
        if d > 1 and isinstance(layer, nn.Conv2d):
            return nn.functional.conv2d(x, layer.weight, layer.bias, layer.stride,
                                        tuple(p * d for p in layer.padding),  # type: ignore
                                        tuple(v * d for v in layer.dilation), layer.groups)
        return layer(x)

    def steps(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        return [functools.partial(self.run, i) for i in range(len(self.features))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(len(self.features)):
            x = self.run(i, x)
        return x

    def extra_repr(self) -> str:
        return f"stride={self.stride}, stride-1 pools at {sorted(self.stride1_pools)}"


class VGGFullyConv(_VGGBase):
    """Fully-convolutional form of a :class:`VGG` (Sect. 3.2, dense evaluation) at output
    stride ``s`` (``stride``, 32 by default): any image with both sides at least ``crop``
    gives a (N, K, H//s - crop/s + 1, W//s - crop/s + 1) score map (K =
    ``config.out_features``: class scores, or box numbers for a localisation net; at
    s = 32 that is H//32 - k + 1). Position (i, j) is the crop x crop window at
    (s j, s i) (:meth:`window`). Made by :meth:`VGG.to_fully_conv`; shares every parameter
    with that net."""

    def __init__(self, net: _VGGBase, stride: int = NET_STRIDE) -> None:
        super().__init__()
        self.net = net
        self.stride = check_dense_stride(stride)
        # stride 32 is the plain stack (net.features itself); finer strides run it a trous
        self.atrous = AtrousFeatures(net.features, stride) if stride != NET_STRIDE else None
        dil = NET_STRIDE // self.stride
        k = net.config.fc_kernel
        cls = net.classifier
        self.head = nn.Sequential(LinearAsConv(cls, 0, k, dil), cls[1], cls[2],
                                  LinearAsConv(cls, 3, 1), cls[4], cls[5],
                                  LinearAsConv(cls, 6, 1))

    # The facts of the FC net, always current.
    @property
    def config(self) -> VGGConfig:  # type: ignore[override]
        return self.net.config

    @property
    def features(self) -> nn.Sequential:  # type: ignore[override]
        return self.net.features

    @property
    def layer_names(self) -> dict[str, int]:  # type: ignore[override]
        return self.net.layer_names

    @property
    def classes(self) -> list[str] | None:  # type: ignore[override]
        return self.net.classes

    @property
    def class_names(self) -> list[str] | None:  # type: ignore[override]
        return self.net.class_names

    @property
    def preprocess(self) -> Preprocess:  # type: ignore[override]
        return self.net.preprocess

    @property
    def memory_format(self) -> torch.memory_format:
        return self.net.memory_format

    @memory_format.setter
    def memory_format(self, fmt: torch.memory_format) -> None:
        self.net.memory_format = fmt

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised -> (N, C5, h5, w5), pool5's map at this net's stride:
        (H//32, W//32) at stride 32, (H//s - 32/s + 1, W//s - 32/s + 1) at a finer s."""
        if self.atrous is None:
            return super().forward_features(x)
        return self.atrous(self._to_memory_format(x))

    def _feature_steps(self) -> Sequence[Callable[[torch.Tensor], torch.Tensor]]:
        return self.features if self.atrous is None else self.atrous.steps()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(N, C5, h5, w5) from :meth:`forward_features` -> (N, K, h, w) (FC1 as a k x k
        conv, dilated by 32 / stride), or the FC7 map when ``pre_logits``."""
        return self.head[:-1](x) if pre_logits else self.head(x)

    def layer_stride(self, name: str) -> int:
        """Pixels between neighbouring positions of layer ``name``'s map (``extract``):
        2^p after p pools, at most this net's stride (its last pools run with stride 1);
        ``stride`` for fc6 ... fc8."""
        _check_names(self, [name])
        if name in HEAD_NAMES:
            return self.stride
        pools = sum(1 for m in self.features[:self.layer_names[name] + 1]
                    if isinstance(m, nn.MaxPool2d))
        return min(2 ** pools, self.stride)

    def map_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the score map of an H x W input (both >= crop)."""
        s, c = self.stride, self.config.crop
        return height // s - c // s + 1, width // s - c // s + 1

    def window(self, i: int, j: int) -> tuple[int, int, int]:
        """The input window ``(x0, y0, side)`` that position (i, j) of the score map
        classifies: the crop x crop square at (stride * j, stride * i) (box decoding,
        Appendix A)."""
        return self.stride * j, self.stride * i, self.config.crop

    def windows(self, h: int, w: int) -> torch.Tensor:
        """(h * w, 3) float64 windows ``(x0, y0, side)`` of every position of an h x w map,
        row-major (the order of ``map.flatten(2)``)."""
        ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        return torch.stack([self.stride * jj.flatten(), self.stride * ii.flatten(),
                            torch.full((h * w,), self.config.crop)], dim=1).to(torch.float64)

    def extra_repr(self) -> str:
        return f"stride={self.stride}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised, H, W >= crop -> (N, K, h, w) score map."""
        if x.dim() != 4 or x.shape[1] != 3 or min(x.shape[-2:]) < self.config.crop:
            raise ValueError(f"{self.config.name} (fully-convolutional) takes (N, 3, H, W) "
                             f"with H, W >= {self.config.crop}, got {tuple(x.shape)}")
        return self.forward_head(self.forward_features(x))


def shift_and_stitch(model: _VGGBase, x: torch.Tensor, stride: int) -> torch.Tensor:
    """The score map of ``model.to_fully_conv(stride)`` computed OverFeat's way (Sermanet et
    al. 2014, offset max-pooling, applied at each of the last m pools, s = 32 / 2^m): each
    of those pools runs with stride 2 at the 2 x 2 offsets of its input, the later layers
    run plain on every offset map, and the (32/s)^2 stride-32 maps are interleaved.

    It gives the a trous map exactly (up to float round-off, border positions included):
    a cross-check and the baseline of ``benchmarks/bench_dense.py``, not the method used.
    Offset maps of the same size go through the later layers as one batch."""
    stride = check_dense_stride(stride)
    fcn = model.to_fully_conv()
    feats = model.features
    m = (NET_STRIDE // stride).bit_length() - 1
    pools = [i for i, layer in enumerate(feats) if isinstance(layer, nn.MaxPool2d)]
    last = pools[len(pools) - m:]
    n, height, width = x.shape[0], x.shape[-2], x.shape[-1]
    x = fcn._to_memory_format(x)
    y = feats[:last[0]](x) if m else fcn.forward_features(x)
    # groups of offset maps: the (oy, ox) of each block of n rows, in units of ``stride``
    groups: list[tuple[list[tuple[int, int]], torch.Tensor]] = [([(0, 0)], y)]
    for level, p in enumerate(last):
        end = last[level + 1] if level + 1 < m else len(feats)
        by_shape: dict[tuple[int, int], tuple[list[tuple[int, int]], list[torch.Tensor]]] = {}
        for offsets, t in groups:
            for dy in (0, 1):
                for dx in (0, 1):
                    if min(t.shape[-2] - dy, t.shape[-1] - dx) < 2:
                        continue  # no position of the map has this offset
                    z = feats[p](t[..., dy:, dx:])
                    offs, ts = by_shape.setdefault((z.shape[-2], z.shape[-1]), ([], []))
                    offs.extend((oy + (dy << level), ox + (dx << level)) for oy, ox in offsets)
                    ts.append(z)
        groups = [(offs, feats[p + 1:end](torch.cat(ts))) for offs, ts in by_shape.values()]
    r = NET_STRIDE // stride
    h, w = model.to_fully_conv(stride).map_size(height, width)
    out: torch.Tensor | None = None
    k = model.config.fc_kernel
    for offsets, t in groups:
        if min(t.shape[-2:]) < k:
            continue  # an offset map too small for one crop x crop window
        scores = fcn.forward_head(t)  # (len(offsets) * n, K, h', w')
        if out is None:
            out = scores.new_zeros(n, scores.shape[1], h, w)
        for b, (oy, ox) in enumerate(offsets):
            out[:, :, oy::r, ox::r] = scores[b * n:(b + 1) * n]
    assert out is not None
    return out

