"""VGG as a loss network: feature (content) and Gram-matrix (style) distances at named
layers, the most common use of VGG today (Gatys et al. 2015, "A Neural Algorithm of
Artistic Style"; Johnson et al. 2016, "Perceptual Losses for Real-Time Style Transfer").

``PerceptualLoss(model)`` takes RGB images in [0, 1] (or, with ``input_range``, in [-1, 1]
or 0..255; anything else is refused), normalises them as the model's own preprocessing
says (torchvision's mean/std, the Caffe ports' BGR 0..255 minus the mean, or the paper's
mean RGB), runs the conv stack only up to the deepest layer asked for, and compares
activations:

- content (``style=False``): ``sum_l w_l * mean((F_l(x) - F_l(y))^2)``, Johnson et al.'s
  feature reconstruction loss (squared distance over C_l H_l W_l, averaged over the batch);
- style (``style=True``), Gram matrices C_l x C_l (so ``x`` and ``y`` may differ in size;
  a single target image is compared with every image of the batch), two normalisations:

  - ``gram_norm="chw"`` (default, as before): ``G_l = F_l F_l^T / (C_l H_l W_l)`` and
    ``sum_l w_l * mean((G_l(x) - G_l(y))^2)``, the mean over the C_l^2 entries. The Gram
    matrix of PyTorch's neural-style tutorial and of Johnson et al. (whose paper writes the
    squared Frobenius norm, C_l^2 times this mean); the tutorial's weights (content 1,
    style 1e6) assume it. Layers of 64 and 512 channels weigh alike.
  - ``gram_norm="gatys"``: Gatys et al.'s ``E_l = sum((G_l - A_l)^2) / (4 N_l^2 M_l^2)``
    on unnormalised Gram matrices (N_l channels, M_l = H_l W_l positions), averaged over
    the batch: ``C_l^2 / 4`` times the "chw" value, so a 512-channel layer weighs 64 times a
    64-channel one. Their layer weights (1/5 on each of relu1_1 ... relu5_1) and
    alpha/beta ratios (1e-3, 1e-4) assume it. Stored as ``F F^T / M_l`` (what
    :meth:`PerceptualLoss.features` returns), so a style image of another size compares
    with its own M_l; for equal sizes the value is exactly E_l.

Gram matrices and distances are computed in float32 whatever the autocast (fp16 Gram
matrices overflow past 65504; bf16 ones lose the differences), so the loss is float32 (or
float64 for float64 inputs).

The loss keeps its own frozen copy of the conv layers it needs (``requires_grad=False``,
eval mode kept even inside a module put in training mode, ReLUs out of place so that a
conv output, ``conv5_4`` before its ReLU as ESRGAN uses, is never overwritten), so the
model passed in is left as it was; gradients flow to the input. The layers follow the
input's device and dtype: the loss works on CPU and CUDA without being moved by hand.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .errors import ConfigError, InputRangeError
from .model import VGG, VGGFullyConv
from .preprocess import Preprocess

# Johnson et al. 2016's style layers of VGG-16 (their content layer is relu3_3 / relu2_2).
DEFAULT_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
GRAM_NORMS = ("chw", "gatys")
# The pixel ranges ``input_range`` names, mapped linearly onto [0, 1].
INPUT_RANGES = {"0,1": (0.0, 1.0), "-1,1": (-1.0, 1.0), "0,255": (0.0, 255.0)}
# Inputs may pass their range by this fraction of its width (float rounding of a
# conversion such as ``/ 255`` or ``* 2 - 1``); a wrong convention goes far beyond it.
RANGE_TOLERANCE = 1e-3

# Beyond the range by less than this fraction of its width is an overshoot (resampling, an
# unclamped output), not another convention: the message says so instead of guessing one.
OVERSHOOT = 0.25

Features = dict[str, torch.Tensor]


def _within(found_lo: float, found_hi: float, lo: float, hi: float, tol: float) -> bool:
    margin = tol * (hi - lo)
    return found_lo >= lo - margin and found_hi <= hi + margin


def _wide(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision tensors, float64 kept."""
    return torch.promote_types(dtype, torch.float32)


def gram(f: torch.Tensor, norm: str = "chw") -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C) in float32 (float64 kept), whatever the autocast:
    ``F F^T / (C H W)`` for ``norm="chw"``, ``F F^T / (H W)`` for ``"gatys"`` (see the
    module docstring)."""
    if norm not in GRAM_NORMS:
        raise ConfigError(f"gram_norm must be one of {', '.join(GRAM_NORMS)}, not {norm!r}")
    n, c, h, w = f.shape
    with torch.autocast(f.device.type, enabled=False):
        flat = f.reshape(n, c, h * w).to(_wide(f.dtype))
        # scale before the product: the sums stay near the features' own magnitude
        flat = flat / math.sqrt(c * h * w if norm == "chw" else h * w)
        return flat @ flat.transpose(1, 2)


def parse_input_range(spec: str) -> tuple[float, float]:
    """``"0,1"``, ``"-1,1"``, ``"0,255"`` -> (low, high)."""
    key = spec.replace(" ", "") if isinstance(spec, str) else None
    if key not in INPUT_RANGES:
        raise ConfigError(f"input_range must be one of {', '.join(map(repr, INPUT_RANGES))}, "
                          f"not {spec!r}")
    return INPUT_RANGES[key]


class PerceptualLoss(nn.Module):
    """Content or style distance between two image batches at named layers of a VGG.

    ``model``: a :class:`VGG` (or its fully-convolutional form), or a path to any weights
    file vgg reads (a converted torchvision net, a Caffe or Keras file, a Keras ``_notop``
    file). Only its conv stack up to the deepest of ``layers`` is kept (a frozen copy).
    ``layers``: paper names of the conv stack (``relu1_2``, ``conv5_4`` before its ReLU,
    ``relu5_4`` after it, ``pool4``...); ``weights``: one non-negative factor per layer
    (default 1). ``gram_norm``: "chw" (default) or "gatys", the style loss's normalisation
    (module docstring). ``input_range``: "0,1" (default), "-1,1" (a tanh GAN output) or
    "0,255", mapped linearly onto [0, 1]; ``check_range=False`` skips refusing inputs
    outside that range (one min/max pass, a device sync, per call), e.g. for a
    generator's unclamped output, which is then used as it is.
    ``forward(x, target)``: ``x`` (N, 3, H, W) float RGB; ``target`` the same, or the dict
    :meth:`features` returned for it (computed once, e.g. a fixed style image). Returns a
    float32 scalar (float64 for float64 inputs).
    """

    def __init__(self, model: VGG | VGGFullyConv | str | os.PathLike[str],
                 layers: Sequence[str] = DEFAULT_LAYERS,
                 weights: Sequence[float] | None = None, style: bool = False,
                 gram_norm: str = "chw", input_range: str = "0,1",
                 check_range: bool = True) -> None:
        super().__init__()
        if gram_norm not in GRAM_NORMS:
            raise ConfigError(f"PerceptualLoss gram_norm must be one of "
                              f"{', '.join(GRAM_NORMS)}, not {gram_norm!r}")
        self.input_range = parse_input_range(input_range)
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
        self.gram_norm = gram_norm
        self.check_range = bool(check_range)
        self.preprocess: Preprocess = model.preprocess
        self.memory_format = model.memory_format
        self._index = {model.layer_names[n]: n for n in self.layers}
        # A copy of the stack up to the deepest layer (59 MB at most for VGG-16): freezing
        # it and moving it to the input's device leave the caller's model as it was.
        self.net = copy.deepcopy(model.features[:max(self._index) + 1])
        self.net.requires_grad_(False)
        self.net.eval()
        # Out-of-place ReLUs: a conv output kept (conv5_4) or seen by a forward hook is
        # never overwritten by the ReLU after it. Their backward keeps the same tensors.
        for m in self.net.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = False

    def train(self, mode: bool = True) -> PerceptualLoss:
        """The loss network stays in eval mode (batch norm uses its running statistics)."""
        super().train(mode)
        self.net.eval()
        return self

    def _check_range(self, images: torch.Tensor) -> None:
        lo, hi = self.input_range
        found_lo, found_hi = (float(v) for v in torch.aminmax(images.detach()))
        if _within(found_lo, found_hi, lo, hi, RANGE_TOLERANCE):  # False for NaN
            return
        name = next(k for k, v in INPUT_RANGES.items() if v == self.input_range)
        expect = f"PerceptualLoss expects RGB images in [{lo:g}, {hi:g}] (input_range={name!r})"
        if not (math.isfinite(found_lo) and math.isfinite(found_hi)):
            raise InputRangeError(f"{expect}, got NaN or inf values")
        fits = [k for k, (a, b) in INPUT_RANGES.items()
                if k != name and _within(found_lo, found_hi, a, b, RANGE_TOLERANCE)]
        if _within(found_lo, found_hi, lo, hi, OVERSHOOT) or not fits:
            hint = ("clamp them, or pass check_range=False to use them as they are (a "
                    "generator's unclamped output)")
        else:
            hint = (f"images in [{fits[0].replace(',', ', ')}]? pass input_range="
                    f"{fits[0]!r}")
        raise InputRangeError(f"{expect}, got values in [{found_lo:.4g}, {found_hi:.4g}]: "
                              f"{hint}")

    def features(self, images: torch.Tensor) -> Features:
        """The activations at ``layers`` of RGB images in ``input_range``, (N, 3, H, W) on
        any device (with ``style=True``, their Gram matrices, float32); the layers move
        to that device and dtype first."""
        if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"PerceptualLoss takes (N, 3, H, W) float RGB images in "
                             f"[{self.input_range[0]:g}, {self.input_range[1]:g}], got "
                             f"{images.dtype} of shape {tuple(images.shape)}")
        if self.check_range and images.numel():
            self._check_range(images)
        dtype = images.dtype
        param = next(self.net.parameters())
        if param.device != images.device or param.dtype != dtype:
            self.net.to(device=images.device, dtype=dtype)
        lo, hi = self.input_range
        x = self.preprocess((images - lo) * (255.0 / (hi - lo)) if lo else
                            images * (255.0 / hi), dtype=dtype)
        if x.device.type in ("cpu", "cuda"):
            x = x.contiguous(memory_format=self.memory_format)
        out: Features = {}
        for i, layer in enumerate(self.net):
            x = layer(x)  # no layer works in place: x stays as computed
            if i in self._index:
                out[self._index[i]] = gram(x, self.gram_norm) if self.style else x
        return out

    def forward(self, x: torch.Tensor, target: torch.Tensor | Mapping[str, torch.Tensor]
                ) -> torch.Tensor:
        fx = self.features(x)
        fy = target if isinstance(target, Mapping) else self.features(target)
        wide = _wide(x.dtype)
        with torch.autocast(x.device.type, enabled=False):
            total = torch.zeros((), dtype=wide, device=x.device)
            for name, w in zip(self.layers, self.layer_weights):
                a, b = fx[name].to(wide), fy[name].to(wide)
                if not self.style and a.shape != b.shape:
                    raise ValueError(f"content loss at {name}: input activations "
                                     f"{tuple(a.shape)} and target {tuple(b.shape)} differ "
                                     f"(give images of the same size)")
                sq = (a - b).pow(2)
                if self.style and self.gram_norm == "gatys":
                    c = a.shape[-1]  # E_l = sum((G - A)^2) / (4 N^2 M^2), G here F F^T / M
                    layer = sq.sum((-2, -1)).mean() / (4 * c * c)
                else:
                    layer = sq.mean()
                total = total + w * layer
        return total

    def extra_repr(self) -> str:
        kind = f"style (Gram, {self.gram_norm})" if self.style else "content"
        lo, hi = self.input_range
        return (f"{kind} at {', '.join(self.layers)}, weights {self.layer_weights}, "
                f"inputs in [{lo:g}, {hi:g}]")
