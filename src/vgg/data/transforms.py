"""The paper's transforms (Sect. 3.1 training, Sect. 3.2 testing), CPU side, per image.

Batches travel as uint8. The PCA colour shift is *drawn* here (alpha, 3 floats per image)
and *applied* on the device by ``DeviceAugment`` together with the normalisation, so the
workers never touch float pixels.

Geometry of the fast training transform: the isotropic rescale to S followed by the random
crop is computed by mapping the crop window back to source pixels and resampling only that
region to crop x crop (antialiased bilinear, like Pillow's BILINEAR). The region is snapped
to whole source pixels, so the result is "rescale the whole image, then crop" up to a
sub-pixel shift and a scale change below 1/crop, while only the pixels that end in the crop
are computed. ``RescaleTransform`` and ``CenterCropTransform`` use Pillow's resize with a
``box``, which places output pixel centres and filter taps exactly as a full rescale would.

Colour statistics (AlexNet "PCA lighting"): ``mean_rgb`` in 0..255; ``eigval``/``eigvec``
of the 3x3 covariance of RGB pixels in [0, 1] units; ``eigvec[:, i]`` (a column) is the
i-th eigenvector, eigenvalues in decreasing order. The shift added to every pixel of an
image, in 0..255 units, is ``255 * eigvec @ (alpha * eigval)``, alpha ~ N(0, 0.1)^3.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..errors import ConfigError
from ..preprocess import IMAGENET_MEAN_RGB, Preprocess
from .decode import decode_with_size, pil_to_uint8, to_rgb

ImageSource = str | Path | Image.Image

_BILINEAR = Image.Resampling.BILINEAR


@dataclass(frozen=True)
class Geometry:
    """How a training crop was cut: the original image (w, h) rescaled to (nw, nh), the
    ``crop`` x ``crop`` window at (x0, y0) of the rescaled image, then mirrored when
    ``flip`` (``vgg.localize.data`` moves boxes with the pixels by the same map)."""

    w: int
    h: int
    nw: int
    nh: int
    x0: int
    y0: int
    crop: int
    flip: bool


def rescale_size(w: int, h: int, s: int) -> tuple[int, int]:
    """Isotropic rescale so that the smaller side is ``s``: (new_w, new_h)."""
    if w <= 0 or h <= 0 or s <= 0:
        raise ValueError(f"sizes must be positive, got {w}x{h} -> {s}")
    if w <= h:
        return s, max(1, round(h * s / w))
    return max(1, round(w * s / h)), s


def _load(src: ImageSource, target_min_side: int | None) -> tuple[Image.Image, int, int]:
    """Decode ``src``; returns (RGB image, original width, original height). The image may
    be smaller than the original (JPEG draft) when target_min_side <= smaller side / 2."""
    if isinstance(src, Image.Image):
        return to_rgb(src), src.size[0], src.size[1]
    return decode_with_size(src, target_min_side)


def _resize_window(img: Image.Image, orig: tuple[int, int], scaled: tuple[int, int],
                   window: tuple[int, int, int, int]) -> Image.Image:
    """The pixels ``window`` (x0, y0, x1, y1) of ``img`` rescaled to ``scaled`` (a size
    in the original image's frame), resampling only that window."""
    iw, ih = img.size
    # Source pixels per rescaled pixel, relative to the (possibly drafted) decoded image.
    fx, fy = iw / scaled[0], ih / scaled[1]
    x0, y0, x1, y1 = window
    box = (x0 * fx, y0 * fy, x1 * fx, y1 * fy)
    out_size = (x1 - x0, y1 - y0)
    if box == (0.0, 0.0, float(iw), float(ih)) and out_size == (iw, ih):
        return img
    return img.resize(out_size, _BILINEAR, box=box)


def _check_scale(scale: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(scale, (int, np.integer)):
        s_min = s_max = int(scale)
    else:
        s_min, s_max = (int(v) for v in scale)
    if s_min < 1 or s_max < s_min:
        raise ConfigError(f"training scale must be S >= 1 or s_min <= s_max, got {scale}")
    return s_min, s_max


class TrainTransform:
    """Sect. 3.1: isotropic rescale to S (fixed, or S ~ U[s_min, s_max] per image), random
    ``crop`` x ``crop`` window, random horizontal flip, alpha ~ N(0, colour_std)^3.

    ``__call__(path, rng) -> {"image": uint8 (3, crop, crop), "alpha": float32 (3,)}``.
    Random draws, in this order: S, crop x, crop y, flip, alpha.
    """

    def __init__(self, crop: int, scale: int | tuple[int, int], flip: bool = True,
                 colour_std: float = 0.1) -> None:
        self.crop = int(crop)
        self.s_min, self.s_max = _check_scale(scale)
        if self.crop < 1 or self.s_min < self.crop:
            raise ConfigError(f"the training scale S (smallest {self.s_min}) must be >= the "
                              f"crop size {self.crop}")
        if colour_std < 0:
            raise ConfigError(f"colour_std must be >= 0, got {colour_std}")
        self.flip = bool(flip)
        self.colour_std = float(colour_std)

    def __repr__(self) -> str:
        return (f"TrainTransform(crop={self.crop}, scale=({self.s_min}, {self.s_max}), "
                f"flip={self.flip}, colour_std={self.colour_std})")

    def __call__(self, src: ImageSource, rng: np.random.Generator) -> dict[str, Any]:
        # S is drawn before decoding so that the JPEG draft can use it; the remaining
        # draws need the size, read from the header.
        s = int(rng.integers(self.s_min, self.s_max + 1))
        img, w, h = _load(src, s)
        nw, nh = rescale_size(w, h, s)
        x0 = int(rng.integers(0, nw - self.crop + 1))
        y0 = int(rng.integers(0, nh - self.crop + 1))
        flip = bool(rng.random() < 0.5) if self.flip else False
        alpha = rng.normal(0.0, self.colour_std, 3).astype(np.float32) \
            if self.colour_std > 0 else np.zeros(3, np.float32)
        image = resize_window(img, (nw, nh), (x0, y0, x0 + self.crop, y0 + self.crop))
        if flip:
            image = image.flip(-1)
        # where the crop came from, so that boxes can follow the pixels (localisation):
        # original size, rescaled size, crop offset in the rescaled image, mirrored or not
        geometry = Geometry(w, h, nw, nh, x0, y0, self.crop, flip)
        return {"image": image, "alpha": torch.from_numpy(alpha), "geometry": geometry}


def resize_window(img: Image.Image, scaled: tuple[int, int],
                  window: tuple[int, int, int, int]) -> torch.Tensor:
    """The pixels ``window`` (x0, y0, x1, y1) of ``img`` rescaled to ``scaled`` (a size in
    the original image's frame; ``img`` may be a drafted, smaller decode), as a uint8
    (3, y1 - y0, x1 - x0) tensor, resampling only that window.

    The window is mapped to source pixels and snapped to whole source pixels (less than
    half a source pixel of shift, a scale change below 1 / window size), then resampled
    with antialiased bilinear interpolation (torch's uint8 channels-last kernel, the same
    filter as Pillow's BILINEAR and several times faster than it here).
    """
    iw, ih = img.size
    fx, fy = iw / scaled[0], ih / scaled[1]
    x0, y0, x1, y1 = window
    sx0 = min(max(0, round(x0 * fx)), iw - 1)
    sy0 = min(max(0, round(y0 * fy)), ih - 1)
    sx1 = min(max(sx0 + 1, round(x1 * fx)), iw)
    sy1 = min(max(sy0 + 1, round(y1 * fy)), ih)
    region = img.crop((sx0, sy0, sx1, sy1)) if (sx0, sy0, sx1, sy1) != (0, 0, iw, ih) else img
    a = np.asarray(region)  # (h, w, 3) uint8, read-only (Pillow's buffer): never written
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        x = torch.from_numpy(a).permute(2, 0, 1).unsqueeze(0)  # (1, 3, h, w) channels-last
    out_size = (y1 - y0, x1 - x0)
    if tuple(x.shape[2:]) != out_size:
        x = torch.nn.functional.interpolate(x, size=out_size, mode="bilinear",
                                            antialias=True, align_corners=False)
    return x[0].contiguous()


class RescaleTransform:
    """Sect. 3.2: isotropic rescale so the smaller side is Q, no crop (dense evaluation and
    the multi-crop grid work on this). ``__call__(path, rng=None) -> {"image": uint8}``."""

    def __init__(self, q: int) -> None:
        if int(q) < 1:
            raise ConfigError(f"test scale Q must be >= 1, got {q}")
        self.q = int(q)

    def __repr__(self) -> str:
        return f"RescaleTransform(q={self.q})"

    def __call__(self, src: ImageSource, rng: np.random.Generator | None = None
                 ) -> dict[str, Any]:
        img, w, h = _load(src, self.q)
        nw, nh = rescale_size(w, h, self.q)
        return {"image": pil_to_uint8(_resize_window(img, (w, h), (nw, nh), (0, 0, nw, nh)))}


class CenterCropTransform:
    """Rescale so the smaller side is Q, then the central ``crop`` x ``crop`` window."""

    def __init__(self, q: int, crop: int) -> None:
        if int(crop) < 1 or int(q) < int(crop):
            raise ConfigError(f"need test scale Q >= crop, got Q={q}, crop={crop}")
        self.q, self.crop = int(q), int(crop)

    def __repr__(self) -> str:
        return f"CenterCropTransform(q={self.q}, crop={self.crop})"

    def __call__(self, src: ImageSource, rng: np.random.Generator | None = None
                 ) -> dict[str, Any]:
        img, w, h = _load(src, self.q)
        nw, nh = rescale_size(w, h, self.q)
        x0, y0 = (nw - self.crop) // 2, (nh - self.crop) // 2
        win = (x0, y0, x0 + self.crop, y0 + self.crop)
        return {"image": pil_to_uint8(_resize_window(img, (w, h), (nw, nh), win))}


# AlexNet's ImageNet PCA (as published with fb.resnet.torch), for pixels in [0, 1].
_IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
_IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                    (-0.5808, -0.0045, -0.8140),
                    (-0.5836, -0.6948, 0.4203))


@dataclass(frozen=True)
class ColourStats:
    """Mean RGB (0..255) and the eigen-decomposition of the RGB covariance of pixels in
    [0, 1] units: ``eigvec[r][i]`` is component r of eigenvector i (columns are vectors),
    ``eigval`` in decreasing order."""

    mean_rgb: tuple[float, float, float]
    eigval: tuple[float, float, float]
    eigvec: tuple[tuple[float, float, float], ...]
    n_images: int = 0
    n_pixels: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        ev = np.asarray(self.eigvec, dtype=np.float64)
        if len(self.mean_rgb) != 3 or len(self.eigval) != 3 or ev.shape != (3, 3):
            raise ValueError("ColourStats needs mean_rgb (3,), eigval (3,), eigvec (3, 3)")
        object.__setattr__(self, "mean_rgb", tuple(float(v) for v in self.mean_rgb))
        object.__setattr__(self, "eigval", tuple(float(v) for v in self.eigval))
        object.__setattr__(self, "eigvec", tuple(tuple(float(v) for v in r) for r in ev))

    @classmethod
    def imagenet(cls) -> ColourStats:
        """The ImageNet values everyone uses (mean RGB of the paper's preprocessing,
        AlexNet's PCA as published with fb.resnet.torch)."""
        return cls(IMAGENET_MEAN_RGB, _IMAGENET_EIGVAL, _IMAGENET_EIGVEC,
                   extra={"source": "imagenet (fb.resnet.torch PCA)"})

    def shift(self, alpha: np.ndarray | torch.Tensor) -> np.ndarray:
        """The per-pixel RGB shift in 0..255 units for alpha (3,) or (N, 3)."""
        a = np.asarray(alpha, dtype=np.float64)
        return 255.0 * (a * np.asarray(self.eigval)) @ np.asarray(self.eigvec).T

    def to_dict(self) -> dict[str, Any]:
        return {"mean_rgb": list(self.mean_rgb), "eigval": list(self.eigval),
                "eigvec": [list(r) for r in self.eigvec], "n_images": int(self.n_images),
                "n_pixels": int(self.n_pixels), "extra": dict(self.extra)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ColourStats:
        return cls(tuple(d["mean_rgb"]), tuple(d["eigval"]),
                   tuple(tuple(r) for r in d["eigvec"]), int(d.get("n_images", 0)),
                   int(d.get("n_pixels", 0)), dict(d.get("extra", {})))

    @classmethod
    def load(cls, path: str | Path) -> ColourStats:
        from ..errors import DataError
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"cannot read colour stats {path}: {e}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


class DeviceAugment(nn.Module):
    """The device half of the pipeline: uint8 (N, 3, H, W) + alphas (N, 3) -> normalised
    float. Adds the AlexNet PCA shift ``255 * eigvec @ (alpha * eigval)`` per image (Sect.
    3.1) when alphas and stats are given, then applies ``preprocess`` (mean subtraction
    or mean/std, channel order). No clamping, as in AlexNet."""

    def __init__(self, preprocess: Preprocess, stats: ColourStats | None = None, *,
                 channels_last: bool = False, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.stats = stats
        self.channels_last = channels_last
        self.dtype = dtype
        # (3, 3) matrix M with shift = alpha @ M, M[i] = 255 * eigval_i * eigvec[:, i]
        m = (torch.zeros(3, 3) if stats is None else
             255.0 * torch.tensor(stats.eigval, dtype=torch.float32)[:, None]
             * torch.tensor(stats.eigvec, dtype=torch.float32).T)
        self.register_buffer("colour_matrix", m, persistent=False)

    def forward(self, images: torch.Tensor, alphas: torch.Tensor | None = None) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W) images, got {tuple(images.shape)}")
        x = images.to(torch.float32)
        if alphas is not None and self.stats is not None:
            m = self.colour_matrix.to(x.device)
            shift = alphas.to(device=x.device, dtype=torch.float32) @ m  # (N, 3)
            x = x + shift[:, :, None, None]
        x = self.preprocess(x, dtype=self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x
