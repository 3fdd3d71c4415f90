"""Which kind of weights file a path is, from its first bytes, and whether that kind can
hold the format a user named (``vgg convert --from``)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CheckpointError, ConfigError
from .caffe import looks_like_caffemodel
from .keras import HDF5_MAGIC

FORMATS = ("torchvision", "timm", "caffe", "keras")

_KIND_TEXT = {"torch": "torch file (.pth/.pt)", "safetensors": "safetensors file",
              "caffe": "Caffe model", "keras": "Keras HDF5 file",
              "unknown": "file of no format vgg knows"}
_FORMAT_KINDS = {"torchvision": ("torch", "safetensors"), "timm": ("torch", "safetensors"),
                 "caffe": ("caffe", "unknown"), "keras": ("keras",)}


def sniff_format(path: str | os.PathLike[str]) -> str:
    """What kind of file ``path`` is, from its first bytes (the suffix only decides for a
    ``.caffemodel`` whose start is not recognised): "keras" (HDF5), "safetensors",
    "torch" (zip or pickle), "caffe" (a NetParameter protobuf) or "unknown"."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    if head.startswith(HDF5_MAGIC):
        return "keras"
    if len(head) >= 10:
        n = int.from_bytes(head[:8], "little")
        if 2 <= n <= size - 8 and head[8:9] == b"{":
            return "safetensors"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    if path.suffix.lower() == ".caffemodel" or looks_like_caffemodel(head):
        return "caffe"
    return "unknown"


def check_kind(fmt: str, kind: str, path: Path) -> None:
    """``ConfigError`` for an unknown ``fmt``; ``CheckpointError`` when a file of this
    ``kind`` (:func:`sniff_format`) cannot hold ``fmt`` weights."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown weights format {fmt!r}; choose from {', '.join(FORMATS)}")
    if kind not in _FORMAT_KINDS[fmt]:
        raise CheckpointError(f"{path} is a {_KIND_TEXT[kind]}, not {fmt} weights "
                              f"(leave out --from to detect the format)")
