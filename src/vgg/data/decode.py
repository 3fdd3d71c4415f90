"""Decoding that survives real files: any image Pillow reads ends as RGB uint8.

Grayscale, CMYK, palette, RGBA (composited on white), 16-bit and 32-bit integer images
become 8-bit RGB. Truncated, empty, non-image and decompression-bomb files raise
``BadImageError(path, reason)``; callers (the dataset) skip them with one warning.

JPEG fast path: when the caller will shrink the image so that its smaller side is
``target_min_side`` and that is at most half the smaller side, the decoder uses Pillow's
draft mode (libjpeg DCT scaling by 1/2, 1/4 or 1/8) so that far fewer pixels are decoded.
The drafted image still has its smaller side >= ``target_min_side``.
EXIF orientation is ignored (as torchvision's ImageFolder does), so boxes in annotation
files keep matching the stored pixels.

Which files are images: ``IMAGE_EXTENSIONS`` is the project's one list of image file name
extensions (files with one are taken as images without opening them); a file with any
other extension (``photo.jpg.1``, ``x.jpg_large``, none at all) is an image when its first
bytes are a JPEG, PNG, GIF, BMP, TIFF, WebP or PNM signature (``sniff_image_format``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import BadImageError

# Images with more pixels than this are refused (Pillow's own default bomb limit, ~89 MP).
MAX_PIXELS: int = 89_478_485

# The one list of image file extensions (lower case) for the whole project.
IMAGE_EXTENSIONS: frozenset[str] = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".dib", ".tif", ".tiff",
    ".webp", ".ppm", ".pgm", ".pbm", ".pnm"})

# BMP info-header sizes (BITMAPCOREHEADER .. BITMAPV5HEADER): "BM" alone is too weak a sign.
_BMP_DIB_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})


def has_image_extension(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def sniff_image_format(path: str | Path) -> str | None:
    """The image format named by the first bytes of ``path`` ("JPEG", "PNG", "GIF", "BMP",
    "TIFF", "WEBP", "PNM"), or None (not an image, or unreadable). Reads 32 bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
    except OSError:
        return None
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:2] == b"BM" and len(head) >= 18 and \
            int.from_bytes(head[14:18], "little") in _BMP_DIB_SIZES:
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"123456" and \
            head[2:3] in b" \t\r\n":
        return "PNM"
    return None

class Region(NamedTuple):
    """A box of an image file, usable wherever an image path is (``image_size``,
    ``decode_with_size`` and so every transform): the region's pixels are the image.
    ``box`` = (x0, y0, x1, y1) in 0-based pixel edges (``vgg.data.boxes.Box``'s
    convention), rounded to whole pixels and clipped to the image when read; a box with
    no pixel inside the image is a bad image (``BadImageError``), reported like one."""

    path: Path
    box: tuple[float, float, float, float]

    def __str__(self) -> str:
        return f"{self.path}[{','.join(f'{v:g}' for v in self.box)}]"

    def pixels(self, w: int, h: int) -> tuple[int, int, int, int]:
        """The whole-pixel window of the box inside a ``w`` x ``h`` image."""
        x0, y0, x1, y1 = self.box
        win = (min(max(int(round(x0)), 0), w), min(max(int(round(y0)), 0), h),
               min(max(int(round(x1)), 0), w), min(max(int(round(y1)), 0), h))
        if win[2] <= win[0] or win[3] <= win[1]:
            raise BadImageError(self.path, f"box {self.box} has no pixel inside the "
                                           f"{w}x{h} image")
        return win


_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError,
           UnidentifiedImageError, Image.DecompressionBombError, MemoryError)


def _open(path: str | Path) -> Image.Image:
    """Open (header only) and check the pixel count; raise BadImageError on anything wrong."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadImageError(path, "empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
    except BadImageError:
        raise
    except Image.DecompressionBombWarning as e:
        raise BadImageError(path, f"decompression bomb: {e}") from None
    except UnidentifiedImageError:
        raise BadImageError(path, "not an image Pillow can identify") from None
    except _ERRORS as e:
        raise BadImageError(path, f"{type(e).__name__}: {e}") from None
    w, h = img.size
    if w < 1 or h < 1:
        img.close()
        raise BadImageError(path, f"empty image size {w}x{h}")
    if w * h > MAX_PIXELS:
        img.close()
        raise BadImageError(path, f"decompression bomb: {w}x{h} = {w * h} pixels > {MAX_PIXELS}")
    return img


def image_size(path: str | Path | Region) -> tuple[int, int]:
    """(width, height) from the file header, without decoding pixels (of the box, for a
    ``Region``)."""
    img = _open(path.path if isinstance(path, Region) else path)
    try:
        size = img.size
    finally:
        img.close()
    if isinstance(path, Region):
        x0, y0, x1, y1 = path.pixels(*size)
        return x1 - x0, y1 - y0
    return size


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB. Alpha is composited on white; 16/32-bit integer images
    are scaled to 0..255 from their full range (65535 for 16-bit)."""
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img)
        if img.mode == "F":
            a = np.clip(a * (255.0 if a.size and float(a.max()) <= 1.0 else 1.0), 0, 255)
        elif img.mode.startswith("I;16") or (a.size and int(a.max()) > 255):
            a = np.clip(a.astype(np.float64) / 257.0, 0, 255)
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")


def decode_opened(img: Image.Image, path: str | Path,
                  target_min_side: int | None = None) -> Image.Image:
    """Decode an image opened by ``_open`` (draft mode first when it pays); RGB out."""
    try:
        if target_min_side is not None and img.format == "JPEG":
            w, h = img.size
            m = min(w, h)
            if 0 < target_min_side <= m / 2:
                # draft() keeps the drafted size >= the requested size.
                img.draft("RGB", (max(1, -(-w * target_min_side // m)),
                                  max(1, -(-h * target_min_side // m))))
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)  # animated GIF / multi-page TIFF: the first frame
        img.load()
        return to_rgb(img)
    except BadImageError:
        raise
    except _ERRORS as e:
        raise BadImageError(path, f"{type(e).__name__}: {e}") from None


def decode_image(path: str | Path, target_min_side: int | None = None) -> Image.Image:
    """Decode ``path`` to an RGB Pillow image.

    With ``target_min_side`` (the smaller side the caller will rescale to), JPEGs use
    draft mode when ``target_min_side <= min(w, h) / 2``; the result's smaller side is
    then between ``target_min_side`` and twice it (not the original size).
    Raises BadImageError for truncated / empty / non-image / decompression-bomb files.
    """
    return decode_with_size(path, target_min_side)[0]


def decode_with_size(path: str | Path | Region, target_min_side: int | None = None
                     ) -> tuple[Image.Image, int, int]:
    """``decode_image`` plus the original (width, height) from the header (the decoded
    image is smaller when the JPEG draft applied). A ``Region`` decodes its whole image
    (no draft) and returns the box's pixels and size."""
    if isinstance(path, Region):
        full, w, h = decode_with_size(path.path)
        x0, y0, x1, y1 = path.pixels(w, h)
        return full.crop((x0, y0, x1, y1)), x1 - x0, y1 - y0
    img = _open(path)
    w, h = img.size
    try:
        out = decode_opened(img, path, target_min_side)
    except BaseException:
        img.close()
        raise
    if out is not img:
        img.close()
    elif getattr(img, "fp", None) is not None:  # multi-frame files keep their file open
        out = img.copy()
        img.close()
    return out, w, h


def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    """RGB Pillow image -> (3, H, W) uint8 tensor."""
    if img.mode != "RGB":
        img = to_rgb(img)
    a = np.asarray(img, dtype=np.uint8)  # (H, W, 3)
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))
