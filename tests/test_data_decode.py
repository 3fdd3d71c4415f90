"""Robust decoding: every Pillow mode to RGB uint8, bad files to BadImageError, JPEG draft."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vgg.data import decode
from vgg.data.decode import decode_image, image_size, pil_to_uint8
from vgg.data.transforms import rescale_size
from vgg.errors import BadImageError


def _photo(w: int, h: int, seed: int = 0) -> Image.Image:
    """A smooth, photo-like RGB image (gradients + low-frequency blobs)."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    base = np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), np.float64)
    yy, xx = np.mgrid[0:h, 0:w]
    base += 40 * np.sin(xx / 17.0)[..., None] * np.cos(yy / 23.0)[..., None]
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def _png_rgb16(path: Path, a: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one)."""
    h, w, _ = a.shape
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b""))


def test_16bit_rgb_png(tmp_path: Path) -> None:
    src = np.asarray(_photo(24, 16), np.uint16)
    _png_rgb16(tmp_path / "rgb16.png", src * 257)
    t = pil_to_uint8(decode_image(tmp_path / "rgb16.png"))
    assert tuple(t.shape) == (3, 16, 24)
    assert np.abs(t.numpy().transpose(1, 2, 0).astype(int) - src).max() <= 1


def _png_header_only(path: Path, w: int, h: int) -> None:
    """A valid PNG signature + IHDR claiming w x h, and a tiny IDAT (a bomb by its header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA", "LA", "I;16", "1", "RGB"])
def test_every_mode_decodes_to_rgb(tmp_path: Path, mode: str) -> None:
    src = _photo(40, 30)
    if mode == "I;16":
        a = (np.asarray(src.convert("L"), np.uint16) * 257)
        img = Image.fromarray(a.astype("<u2"))
        ext = ".png"
    else:
        img = src.convert(mode)
        ext = ".jpg" if mode in ("L", "CMYK", "RGB") else (".tif" if mode == "LA" else ".png")
    p = tmp_path / f"x{ext}"
    img.save(p)
    out = decode_image(p)
    assert out.mode == "RGB" and out.size == (40, 30)
    t = pil_to_uint8(out)
    assert t.dtype.__str__() == "torch.uint8" and tuple(t.shape) == (3, 30, 40)
    if mode in ("L", "I;16"):
        # 16-bit keeps the grey levels (65535 -> 255)
        grey = np.asarray(src.convert("L"), np.int16)
        assert np.abs(t[0].numpy().astype(np.int16) - grey).mean() < (3 if mode == "L" else 1)


def test_rgba_transparency_is_composited_on_white(tmp_path: Path) -> None:
    a = np.zeros((10, 10, 4), np.uint8)
    a[..., 0] = 200
    a[:5, :, 3] = 255  # top half opaque red, bottom transparent
    Image.fromarray(a, "RGBA").save(tmp_path / "a.png")
    t = pil_to_uint8(decode_image(tmp_path / "a.png"))
    assert t[:, 0, 0].tolist() == [200, 0, 0]
    assert t[:, 9, 0].tolist() == [255, 255, 255]


def test_palette_with_transparency_and_gif(tmp_path: Path) -> None:
    img = _photo(20, 20).convert("P")
    img.info["transparency"] = 0
    img.save(tmp_path / "p.png", transparency=0)
    frames = [_photo(20, 20, s).convert("P") for s in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert decode_image(tmp_path / "p.png").mode == "RGB"
    g = decode_image(tmp_path / "anim.gif")
    assert g.mode == "RGB" and g.size == (20, 20)


@pytest.mark.parametrize("kind", ["truncated", "empty", "text", "bomb"])
def test_bad_files_raise_bad_image_error_naming_the_file(tmp_path: Path, kind: str) -> None:
    p = tmp_path / f"{kind}.jpg"
    if kind == "truncated":
        _photo(120, 90).save(tmp_path / "full.jpg", quality=90)
        data = (tmp_path / "full.jpg").read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("this is not an image\n")
    else:
        p = tmp_path / "bomb.png"
        _png_header_only(p, 30000, 30000)
    with pytest.raises(BadImageError) as e:
        decode_image(p)
    assert str(p) in str(e.value)
    if kind in ("empty", "text", "bomb"):  # the header alone tells
        with pytest.raises(BadImageError):
            image_size(p)


def test_bomb_limit_is_ours_not_pillows_warning(tmp_path: Path, monkeypatch) -> None:
    p = tmp_path / "big.png"
    _photo(50, 40).save(p)
    monkeypatch.setattr(decode, "MAX_PIXELS", 1999)
    with pytest.raises(BadImageError, match="decompression bomb"):
        decode_image(p)


def test_image_size_reads_header(tmp_path: Path) -> None:
    _photo(123, 45).save(tmp_path / "a.jpg")
    assert image_size(tmp_path / "a.jpg") == (123, 45)


def test_jpeg_draft_is_close_to_full_decode(tmp_path: Path) -> None:
    p = tmp_path / "big.jpg"
    _photo(800, 600).save(p, quality=92)
    s = 140  # <= 600 / 4: draft decodes at 1/4 (200 x 150)
    drafted = decode_image(p, target_min_side=s)
    assert min(drafted.size) >= s and drafted.size[0] < 800
    full = decode_image(p)
    assert full.size == (800, 600)
    size = rescale_size(800, 600, s)
    a = np.asarray(drafted.resize(size, Image.Resampling.BILINEAR), np.float64)
    b = np.asarray(full.resize(size, Image.Resampling.BILINEAR), np.float64)
    assert np.abs(a - b).mean() < 2.0


def test_no_draft_when_target_is_more_than_half(tmp_path: Path) -> None:
    p = tmp_path / "a.jpg"
    _photo(200, 100).save(p)
    assert decode_image(p, target_min_side=60).size == (200, 100)
    assert decode_image(p, target_min_side=50).size == (100, 50)


@pytest.mark.parametrize("fmt,want", [("JPEG", "JPEG"), ("PNG", "PNG"), ("GIF", "GIF"),
                                      ("BMP", "BMP"), ("TIFF", "TIFF"), ("WEBP", "WEBP"),
                                      ("PPM", "PNM")])
def test_sniff_image_format_by_content(tmp_path: Path, fmt: str, want: str) -> None:
    from vgg.data.decode import sniff_image_format

    p = tmp_path / "file.unknown"
    _photo(16, 12).save(p, fmt)
    assert sniff_image_format(p) == want
    assert decode_image(p).size == (16, 12)  # and Pillow decodes it whatever the name


def test_sniff_rejects_look_alikes(tmp_path: Path) -> None:
    from vgg.data.decode import sniff_image_format

    for name, data in [("bm.txt", b"BMW service notes, 2019........"),
                       ("riff.wav", b"RIFF\x24\x00\x00\x00WAVEfmt "),
                       ("p7", b"P7\nWIDTH 4\n"), ("empty", b""), ("pdf", b"%PDF-1.4\n")]:
        (tmp_path / name).write_bytes(data)
        assert sniff_image_format(tmp_path / name) is None, name
    assert sniff_image_format(tmp_path / "missing") is None
    Image.new("L", (4, 4)).save(tmp_path / "grey", "PPM")   # PGM: P5
    assert sniff_image_format(tmp_path / "grey") == "PNM"
