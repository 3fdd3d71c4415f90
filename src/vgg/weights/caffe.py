"""The authors' Caffe nets: read a binary ``.caffemodel`` (a ``NetParameter`` protobuf)
without Caffe, and map its layers to our layout (:func:`caffe_state_dict`).

A small hand-written reader of the protobuf wire format, enough for the layers and their
weight blobs: the authors' released ``VGG_ILSVRC_16_layers.caffemodel`` /
``VGG_ILSVRC_19_layers.caffemodel`` use the V1 ``layers`` field, files upgraded by newer
Caffe the V2 ``layer`` field; both are read (and the V0 layer nested in a V1 one). Every
other field is skipped by its wire type. The fields used (caffe/src/caffe/proto/caffe.proto):

- ``NetParameter``: ``layers = 2`` (V1LayerParameter), ``layer = 100`` (LayerParameter)
- ``V1LayerParameter``: ``layer = 1`` (V0), ``name = 4``, ``type = 5`` (enum), ``blobs = 6``
- ``V0LayerParameter``: ``name = 1``, ``type = 2`` (string), ``blobs = 50``
- ``LayerParameter``: ``name = 1``, ``type = 2`` (string), ``blobs = 7``
- ``BlobProto``: ``num = 1``, ``channels = 2``, ``height = 3``, ``width = 4``, ``data = 5``
  (float), ``shape = 7`` (``BlobShape``: ``dim = 1``, int64), ``double_data = 8``

A truncated or garbled file raises ``CheckpointError`` saying so, with the byte offset.
The float data is viewed in place (``numpy.frombuffer``), so a 528 MB file costs about
twice its size in memory while it is converted.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..model import VGGConfig
from .layout import assemble

# V1LayerParameter.LayerType values of the layers a VGG net has (caffe.proto).
V1_TYPES = {4: "Convolution", 5: "Data", 6: "Dropout", 14: "InnerProduct", 15: "LRN",
            17: "Pooling", 18: "ReLU", 20: "Softmax", 21: "SoftmaxWithLoss", 1: "Accuracy"}

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


class _Corrupt(Exception):
    """Internal: the bytes do not parse; turned into a CheckpointError naming the file."""


@dataclass
class CaffeLayer:
    """One layer of a Caffe net: its name, type ("Convolution", "InnerProduct", ...) and
    weight blobs as float32 arrays in Caffe's own shapes (V1 files give every blob 4-D:
    (num, channels, height, width), e.g. (1, 1, 4096, 25088) for fc6)."""

    name: str = ""
    type: str = ""
    blobs: list[np.ndarray] = field(default_factory=list)


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _Corrupt(f"varint runs past the end at byte {pos}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Corrupt(f"varint longer than 10 bytes at byte {pos}")


def _fields(buf: memoryview, start: int, end: int):  # noqa: ANN202 - a generator of tuples
    """Yield ``(field_number, wire_type, value)`` of one message in ``buf[start:end]``:
    ints for varints and fixed-width values, ``(offset, end)`` for length-delimited ones."""
    pos = start
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise _Corrupt(f"field number 0 at byte {pos}")
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value
        elif wire == _BYTES:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise _Corrupt(f"a {length}-byte field at byte {pos} runs past the end "
                               f"({end})")
            yield number, wire, (pos, pos + length)
            pos += length
        elif wire in (_FIXED32, _FIXED64):
            size = 4 if wire == _FIXED32 else 8
            if pos + size > end:
                raise _Corrupt(f"a fixed-width field at byte {pos} runs past the end")
            yield number, wire, bytes(buf[pos:pos + size])
            pos += size
        else:  # 3/4 (groups) never appear in caffe.proto; anything else is garbage
            raise _Corrupt(f"wire type {wire} at byte {pos}")


def _text(buf: memoryview, span: tuple[int, int]) -> str:
    try:
        return bytes(buf[span[0]:span[1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise _Corrupt(f"a name at byte {span[0]} is not UTF-8") from None


def _packed_ints(buf: memoryview, wire: int, value: object) -> list[int]:
    if wire == _VARINT:
        return [int(value)]  # type: ignore[call-overload]
    if wire != _BYTES:
        raise _Corrupt("an integer field with a wrong wire type")
    pos, end = value  # type: ignore[misc]
    out = []
    while pos < end:
        v, pos = _varint(buf, pos, end)
        out.append(v)
    return out


def _floats(buf: memoryview, wire: int, value: object, dtype: str) -> np.ndarray:
    """A packed run of little-endian floats (viewed, not copied), or one unpacked value."""
    size = np.dtype(dtype).itemsize
    if wire == _BYTES:
        pos, end = value  # type: ignore[misc]
        if (end - pos) % size:
            raise _Corrupt(f"packed float data at byte {pos} is not a multiple of {size} "
                           f"bytes")
        return np.frombuffer(buf, dtype=dtype, count=(end - pos) // size, offset=pos)
    if wire in (_FIXED32, _FIXED64) and len(value) == size:  # type: ignore[arg-type]
        return np.frombuffer(value, dtype=dtype)  # type: ignore[arg-type]
    raise _Corrupt("float data with a wrong wire type")


def _blob(buf: memoryview, span: tuple[int, int]) -> np.ndarray:
    legacy = {1: 0, 2: 0, 3: 0, 4: 0}  # num, channels, height, width
    dims: list[int] | None = None
    chunks: list[np.ndarray] = []
    doubles: list[np.ndarray] = []
    for number, wire, value in _fields(buf, *span):
        if number in legacy and wire == _VARINT:
            legacy[number] = int(value)  # type: ignore[call-overload]
        elif number == 5:
            chunks.append(_floats(buf, wire, value, "<f4"))
        elif number == 8:
            doubles.append(_floats(buf, wire, value, "<f8"))
        elif number == 7 and wire == _BYTES:
            dims = []
            for n, w, v in _fields(buf, *value):  # type: ignore[misc]
                if n == 1:
                    dims += _packed_ints(buf, w, v)
    if dims is None:
        dims = [legacy[1], legacy[2], legacy[3], legacy[4]]
    parts = chunks or [d.astype(np.float32) for d in doubles]
    data = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else \
        np.zeros(0, np.float32)
    if int(np.prod(dims, dtype=np.int64)) != data.size:
        raise _Corrupt(f"a blob at byte {span[0]} has shape {dims} but {data.size} values")
    return data.reshape(dims)


def _layer(buf: memoryview, span: tuple[int, int], version: int) -> CaffeLayer:
    # field numbers of (name, type, blobs) per version; V1 may nest a V0 layer (field 1)
    name_f, type_f, blobs_f = {0: (1, 2, 50), 1: (4, 5, 6), 2: (1, 2, 7)}[version]
    layer = CaffeLayer()
    for number, wire, value in _fields(buf, *span):
        if number == name_f and wire == _BYTES:
            layer.name = _text(buf, value)  # type: ignore[arg-type]
        elif number == type_f and wire == _BYTES:
            layer.type = _text(buf, value)  # type: ignore[arg-type]
        elif number == type_f and wire == _VARINT:
            layer.type = V1_TYPES.get(int(value), f"V1 type {value}")  # type: ignore[call-overload]
        elif number == blobs_f and wire == _BYTES:
            layer.blobs.append(_blob(buf, value))  # type: ignore[arg-type]
        elif version == 1 and number == 1 and wire == _BYTES:
            v0 = _layer(buf, value, 0)  # type: ignore[arg-type]
            layer.name, layer.type = layer.name or v0.name, layer.type or v0.type
            layer.blobs = layer.blobs or v0.blobs
    return layer


def parse_net(data: bytes) -> tuple[str, list[CaffeLayer]]:
    """The net's name and its layers in file order (V1 ``layers`` and V2 ``layer``)."""
    buf = memoryview(data)
    name, layers = "", []
    for number, wire, value in _fields(buf, 0, len(buf)):
        if number == 1 and wire == _BYTES:
            name = _text(buf, value)  # type: ignore[arg-type]
        elif number in (2, 100) and wire == _BYTES:
            layers.append(_layer(buf, value, 1 if number == 2 else 2))  # type: ignore[arg-type]
    return name, layers


def read_caffemodel(path: str | os.PathLike[str]) -> tuple[str, list[CaffeLayer]]:
    """The net name and layers of a ``.caffemodel`` file; ``CheckpointError`` naming the
    file when it is missing, truncated or not a Caffe model."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Caffe model not found: {path}")
    data = path.read_bytes()
    try:
        name, layers = parse_net(data)
    except _Corrupt as e:
        raise CheckpointError(f"cannot read {path} as a Caffe model: the file is corrupt or "
                              f"truncated ({e})") from None
    if not any(layer.blobs for layer in layers):
        raise CheckpointError(f"{path} holds no layer with weights: not a trained Caffe "
                              f"model (a .prototxt net definition has none)")
    return name, layers


def looks_like_caffemodel(head: bytes) -> bool:
    """Whether the first bytes of a file open a ``NetParameter``: its net name (field 1, a
    short UTF-8 string) followed by another NetParameter field, or a layer (field 2 or
    100) right away. Fields are serialised in number order, so these come first."""
    buf = memoryview(head)
    net_fields = {(2, _BYTES), (3, _BYTES), (4, _VARINT), (4, _BYTES), (5, _VARINT),
                  (6, _BYTES), (7, _VARINT), (8, _BYTES), (100, _BYTES)}
    try:
        tag, pos = _varint(buf, 0, len(buf))
        if tag == (1 << 3 | _BYTES):
            length, pos = _varint(buf, pos, len(buf))
            if length > 1024 or pos + length >= len(buf):
                return False
            bytes(buf[pos:pos + length]).decode("utf-8")
            tag, _ = _varint(buf, pos + length, len(buf))
            return (tag >> 3, tag & 7) in net_fields
        return (tag >> 3, tag & 7) in {(2, _BYTES), (100, _BYTES)}
    except (_Corrupt, UnicodeDecodeError):
        return False


def caffe_state_dict(layers: Sequence[Any], arch: str | None = None, where: str = "Caffe model"
                     ) -> tuple[dict[str, torch.Tensor], VGGConfig, bool]:
    """Map the layers of a Caffe VGG (:func:`read_caffemodel`) to our layout:
    Convolution layers in order to conv1_1 ... conv5_x (Caffe's (out, in, kh, kw) weights
    are torch's), InnerProduct layers to fc6, fc7, fc8. FC weights are (out, in) whatever
    the blob's shape ((1, 1, out, in) in V1 files, (out, in) or (out, C, H, W) in V2 ones):
    Caffe flattens pool5 in C, H, W order, as torch does, so nothing is permuted. Returns
    (state dict, config, features_only)."""
    convs, fcs, lrn = [], [], False
    for layer in layers:
        kind = layer.type.lower()
        blobs = [np.asarray(b, dtype=np.float32) for b in layer.blobs]
        if kind == "lrn":
            lrn = True
        if not blobs:
            continue
        if kind not in ("convolution", "innerproduct"):
            raise CheckpointError(f"{where}: layer {layer.name!r} of type {layer.type} has "
                                  f"weights; a VGG net has weights only in Convolution and "
                                  f"InnerProduct layers")
        w = blobs[0]
        b = blobs[1].reshape(-1) if len(blobs) > 1 else np.zeros(w.shape[0] if w.ndim else 0,
                                                                  np.float32)
        if kind == "convolution":
            convs.append((layer.name, w, b))
        else:
            while w.ndim > 2 and w.shape[0] == 1:  # V1: (1, 1, out, in)
                w = w.reshape(w.shape[1:])
            if w.ndim < 2:
                raise CheckpointError(f"{where}: FC layer {layer.name!r} has a {w.ndim}-D "
                                      f"weight blob")
            b = blobs[1].reshape(-1) if len(blobs) > 1 else np.zeros(w.shape[0], np.float32)
            fcs.append((layer.name, w.reshape(w.shape[0], -1), b))
    if not convs:
        raise CheckpointError(f"{where}: no Convolution layer with weights")
    return assemble(convs, fcs, arch, lrn, where)
