"""VGG as a loss network: feature (content) and Gram-matrix (style) distances at named
layers, the most common use of VGG today (Gatys et al. 2015, "A Neural Algorithm of
Artistic Style"; Johnson et al. 2016, "Perceptual Losses for Real-Time Style Transfer").

``PerceptualLoss(model)`` takes RGB images in [0, 1], normalises them as the model's own
preprocessing says (torchvision's mean/std, the Caffe ports' BGR 0..255 minus the mean, or
the paper's mean RGB), runs the conv stack only up to the deepest layer asked for, and
compares activations:

- content (``style=False``): ``sum_l w_l * mean((F_l(x) - F_l(y))^2)``, Johnson et al.'s
  feature reconstruction loss (squared distance over C_l H_l W_l, averaged over the batch);
- style (``style=True``): ``sum_l w_l * mean((G_l(x) - G_l(y))^2)`` with the Gram matrix
  ``G_l = F_l F_l^T / (C_l H_l W_l)`` (C_l x C_l, so ``x`` and ``y`` may differ in size;
  a single target image is compared with every image of the batch). Gatys et al. and
  PyTorch's neural-style tutorial normalise the same way, so that tutorial's weights
  (content 1, style 1e6) are a starting point.

The loss keeps its own frozen copy of the conv layers it needs (``requires_grad=False``,
eval mode kept even inside a module put in training mode), so the model passed in is left
as it was; gradients flow to the input. The layers follow the input's
device and dtype: the loss works on CPU and CUDA without being moved by hand.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .errors import ConfigError
from .model import VGG, VGGFullyConv
from .preprocess import Preprocess

# Johnson et al. 2016's style layers of VGG-16 (their content layer is relu3_3 / relu2_2).
DEFAULT_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")

Features = dict[str, torch.Tensor]


def gram(f: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C): ``F F^T / (C H W)``."""
    n, c, h, w = f.shape
    flat = f.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


class PerceptualLoss(nn.Module):
    """Content or style distance between two image batches at named layers of a VGG.

    ``model``: a :class:`VGG` (or its fully-convolutional form), or a path to any weights
    file vgg reads (a converted torchvision net, a Caffe or Keras file, a Keras ``_notop``
    file). Only its conv stack up to the deepest of ``layers`` is kept (a frozen copy).
    ``layers``: paper names of the conv stack
    (``relu1_2``, ``conv3_1``, ``pool4``...); ``weights``: one non-negative factor per
    layer (default 1). ``forward(x, target)``: ``x`` (N, 3, H, W) RGB in [0, 1];
    ``target`` the same, or the dict :meth:`features` returned for it (computed once,
    e.g. a fixed style image). Returns a scalar.
    """

    def __init__(self, model: VGG | VGGFullyConv | str | os.PathLike[str],
                 layers: Sequence[str] = DEFAULT_LAYERS,
                 weights: Sequence[float] | None = None, style: bool = False) -> None:
        super().__init__()
        if isinstance(model, (str, os.PathLike)):
            from .weights import open_weights as load_checkpoint

            model = load_checkpoint(model).build_model()
        if isinstance(model, VGGFullyConv):
            model = model.net
        if not isinstance(model, VGG):
            raise ConfigError(f"PerceptualLoss takes a vgg VGG model or a weights file, "
                              f"not {type(model).__name__}")
        if isinstance(layers, str):
            layers = (layers,)
        self.layers = tuple(layers)
        if not self.layers:
            raise ConfigError("PerceptualLoss needs at least one layer")
        unknown = [n for n in self.layers if n not in model.layer_names]
        if unknown or len(set(self.layers)) != len(self.layers):
            raise ConfigError(f"PerceptualLoss layers {unknown or list(self.layers)} "
                              f"{'unknown' if unknown else 'repeated'} for "
                              f"{model.config.name}; the conv stack's layers are "
                              f"{', '.join(model.layer_names)}")
        w = [1.0] * len(self.layers) if weights is None else [float(v) for v in weights]
        if len(w) != len(self.layers) or not all(math.isfinite(v) and v >= 0 for v in w):
            raise ConfigError(f"PerceptualLoss weights must be {len(self.layers)} finite "
                              f"numbers >= 0 (one per layer), got {list(weights or [])}")
        self.layer_weights = w
        self.style = bool(style)
        self.preprocess: Preprocess = model.preprocess
        self.memory_format = model.memory_format
        self._index = {model.layer_names[n]: n for n in self.layers}
        # A copy of the stack up to the deepest layer (59 MB at most for VGG-16): freezing
        # it and moving it to the input's device leave the caller's model as it was.
        self.net = copy.deepcopy(model.features[:max(self._index) + 1])
        self.net.requires_grad_(False)
        self.net.eval()

    def train(self, mode: bool = True) -> PerceptualLoss:
        """The loss network stays in eval mode (batch norm uses its running statistics)."""
        super().train(mode)
        self.net.eval()
        return self

    def features(self, images: torch.Tensor) -> Features:
        """The activations at ``layers`` of RGB images in [0, 1], (N, 3, H, W) on any
        device; the layers move to that device and dtype first."""
        if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"PerceptualLoss takes (N, 3, H, W) float RGB images in [0, 1], "
                             f"got {images.dtype} of shape {tuple(images.shape)}")
        dtype = images.dtype
        param = next(self.net.parameters())
        if param.device != images.device or param.dtype != dtype:
            self.net.to(device=images.device, dtype=dtype)
        x = self.preprocess(images * 255.0, dtype=dtype)
        if x.device.type in ("cpu", "cuda"):
            x = x.contiguous(memory_format=self.memory_format)
        out: Features = {}
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i in self._index:
                nxt = self.net[i + 1] if i + 1 < len(self.net) else None
                # an in-place ReLU next would overwrite what we keep
                keep = x.clone() if getattr(nxt, "inplace", False) else x
                out[self._index[i]] = gram(keep) if self.style else keep
        return out

    def forward(self, x: torch.Tensor, target: torch.Tensor | Mapping[str, torch.Tensor]
                ) -> torch.Tensor:
        fx = self.features(x)
        fy = target if isinstance(target, Mapping) else self.features(target)
        total = x.new_zeros((), dtype=next(iter(fx.values())).dtype)
        for name, w in zip(self.layers, self.layer_weights):
            a, b = fx[name], fy[name]
            if not self.style and a.shape != b.shape:
                raise ValueError(f"content loss at {name}: input activations {tuple(a.shape)} "
                                 f"and target {tuple(b.shape)} differ (give images of the "
                                 f"same size)")
            total = total + w * (a - b).pow(2).mean()
        return total

    def extra_repr(self) -> str:
        kind = "style (Gram)" if self.style else "content"
        return f"{kind} at {', '.join(self.layers)}, weights {self.layer_weights}"
