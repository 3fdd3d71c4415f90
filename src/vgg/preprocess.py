"""Input normalisation stored with every model, so a user always feeds RGB in 0..255.

The paper subtracts the training set's mean RGB (Sect. 2.1) and nothing else; torchvision's
published weights (and timm's, which are the same) take ``Normalize(mean=(0.485, 0.456,
0.406), std=(0.229, 0.224, 0.225))`` on [0, 1] inputs; the original Caffe/Keras ports expect
BGR channel order, 0..255 range and the mean [103.939, 116.779, 123.68] (BGR) subtracted.
All three are one affine map per channel after an optional channel swap, held here in
0..255 units. The two ImageNet means differ (the Caffe mean in RGB is 123.68, 116.779,
103.939; torchvision's is 255 x (0.485, 0.456, 0.406) = 123.675, 116.28, 103.53): each
set of weights gets its own.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .errors import InputRangeError

log = logging.getLogger(__name__)

# Values a 0..255 image can hold after resampling: bicubic / Lanczos interpolation of a
# uint8 image overshoots a little at sharp edges (a few tens of levels at most).
RANGE_MARGIN = 64.0
# A float batch whose values all lie in [-SMALL_RANGE, SMALL_RANGE] is not a 0..255 image
# (it would be black to the eye) but 0..1 pixels or an already-normalised tensor
# (ImageNet mean/std puts 0..1 pixels in [-2.12, 2.64]).
SMALL_RANGE = 3.0

# ImageNet mean RGB in 0..255 (the value the paper's recipe computes on ILSVRC-2012 train,
# and the one the authors' Caffe models subtract, there in BGR order).
IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)
# torchvision's (and timm's IMAGENET_DEFAULT_MEAN/STD) normalisation, Normalize(mean=(0.485,
# 0.456, 0.406), std=(0.229, 0.224, 0.225)) on [0, 1], in 0..255 units: 255 x each value.
TORCHVISION_MEAN_RGB = (123.675, 116.28, 103.53)
TORCHVISION_STD_RGB = (58.395, 57.12, 57.375)
IMAGENET_STD_RGB = TORCHVISION_STD_RGB  # the name this module used before


@dataclass(frozen=True)
class Preprocess:
    """``y = (x[:, order] - mean) / std`` with ``x`` RGB in 0..255 (uint8 or float).

    ``mean`` and ``std`` are given in the model's channel order (BGR for Caffe ports), in
    0..255 units. ``std = (1, 1, 1)`` is the paper's mean-only subtraction.
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN_RGB
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channel_order: str = "RGB"  # "RGB" or "BGR": the order the net's first conv expects

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', not {self.channel_order!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values, std > 0: {self.mean}, {self.std}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @classmethod
    def paper(cls, mean_rgb: tuple[float, float, float] = IMAGENET_MEAN_RGB) -> Preprocess:
        """Sect. 2.1: subtract the training set's mean RGB, nothing else."""
        return cls(mean=tuple(mean_rgb), std=(1.0, 1.0, 1.0), channel_order="RGB")

    @classmethod
    def torchvision(cls) -> Preprocess:
        """torchvision's and timm's published weights: ``Normalize(mean=(0.485, 0.456,
        0.406), std=(0.229, 0.224, 0.225))`` on [0, 1] inputs (not the Caffe mean)."""
        return cls(mean=TORCHVISION_MEAN_RGB, std=TORCHVISION_STD_RGB, channel_order="RGB")

    @classmethod
    def caffe(cls) -> Preprocess:
        """The original Caffe / Keras ports: BGR, 0..255, mean [103.939, 116.779, 123.68]."""
        return cls(mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0), channel_order="BGR")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        """The preprocessing a checkpoint stores. One stored value is corrected: the Caffe
        mean with torchvision's std, which vgg wrote for torchvision/timm weights converted
        before it used torchvision's own mean (no recipe of vgg's gives that pair, and the
        weights were trained with torchvision's mean); it loads as :meth:`torchvision`,
        said once per process in the log. Build a ``Preprocess`` by hand to keep it."""
        p = cls(mean=tuple(d["mean"]), std=tuple(d["std"]), channel_order=d["channel_order"])
        if p == _OLD_TORCHVISION:
            _say_mean_corrected()
            return cls.torchvision()
        return p

    def mean_rgb(self) -> tuple[float, float, float]:
        """The mean in RGB order (for colour statistics and reports)."""
        return self.mean if self.channel_order == "RGB" else self.mean[::-1]

    def __call__(self, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(N, 3, H, W) RGB in 0..255 (uint8 or float) -> (N, 3, H, W) normalised ``dtype``.

        Runs on whatever device ``x`` is on; keeps the memory format of ``x``.
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (N, 3, H, W) batch, got shape {tuple(x.shape)}")
        x = x.to(torch.float32)
        if self.channel_order == "BGR":
            x = x.flip(1)
        mean = torch.tensor(self.mean, device=x.device, dtype=torch.float32).view(1, 3, 1, 1)
        inv_std = torch.tensor([1.0 / s for s in self.std], device=x.device,
                               dtype=torch.float32).view(1, 3, 1, 1)
        return ((x - mean) * inv_std).to(dtype)


# What vgg stored for torchvision/timm weights before it used torchvision's own mean.
_OLD_TORCHVISION = Preprocess(mean=IMAGENET_MEAN_RGB, std=TORCHVISION_STD_RGB)


@functools.cache
def _say_mean_corrected() -> None:
    log.warning("this checkpoint stores the Caffe mean RGB %s with torchvision's std, as vgg "
                "wrote for torchvision/timm weights before; using torchvision's mean %s, "
                "the one those weights were trained with (saving the model again stores "
                "it)", IMAGENET_MEAN_RGB, TORCHVISION_MEAN_RGB)


def check_input_range(x: torch.Tensor, what: str = "the net") -> None:
    """Raise ``InputRangeError`` saying what is expected when ``x`` cannot be RGB images
    in 0..255, the input every model's ``preprocess`` takes: NaN or inf; values beyond
    0..255 by more than ``RANGE_MARGIN`` (16-bit pixels, mean-subtracted tensors); a float
    batch within [-SMALL_RANGE, SMALL_RANGE] that is not all zero (0..1 pixels, as
    torchvision's ``ToTensor`` gives, or a tensor normalised already). uint8 batches are
    always valid and cost nothing; others cost one pass over ``x`` (and a device sync)."""
    if x.dtype == torch.uint8 or x.numel() == 0:
        return
    if x.dtype == torch.bool or x.is_complex():
        raise InputRangeError(f"{what} expects RGB images in 0..255 (uint8, or float on that "
                              f"scale), got a {x.dtype} tensor")
    v = x.detach()
    v = v if v.dtype in (torch.float32, torch.float64) else v.float()
    if v.is_floating_point() and not bool(torch.isfinite(v).all()):
        raise InputRangeError(f"{what} got images with NaN or inf values; it expects RGB "
                              f"images in 0..255")
    lo, hi = (float(t) for t in torch.aminmax(v))
    got = f"got {x.dtype} values in [{lo:.4g}, {hi:.4g}]"
    expect = f"{what} expects RGB images in 0..255 (uint8, or float on that scale)"
    if lo < -RANGE_MARGIN or hi > 255.0 + RANGE_MARGIN:
        hint = (": 16-bit pixels? scale them to 0..255" if lo >= 0 and hi <= 65535
                else ": is the mean subtracted already? pass the raw image; the model "
                "normalises it itself" if lo < 0 else "")
        raise InputRangeError(f"{expect}; {got}{hint}")
    if x.is_floating_point() and -SMALL_RANGE <= lo and hi <= SMALL_RANGE and (lo, hi) != (0, 0):
        hint = ("0..1 images (torchvision's ToTensor)? multiply them by 255"
                if lo >= 0 and hi <= 1.0 else
                "images normalised already (mean/std)? pass them before normalising: the "
                "model applies its own preprocessing")
        raise InputRangeError(f"{expect}; {got}: {hint} (only a 0..255 image darker than "
                              f"{SMALL_RANGE:g}/255 everywhere looks like this; for one, "
                              f"pass check_range=False)")
