"""Keras's VGG ports: read HDF5 weight files (``vgg16_weights_tf_dim_ordering_tf_kernels.h5``,
the ``_notop`` variants, and whole models saved with ``model.save("x.h5")``) with h5py, and
map their layers to our layout (:func:`keras_state_dict`).

The layout is Keras's own (keras/saving/legacy/hdf5_format.py): the root (or the
``model_weights`` group of a whole-model file) has an attribute ``layer_names``; each
layer's group has an attribute ``weight_names`` naming its datasets relative to the group
(``block1_conv1_W_1:0`` in the files of keras-applications 0.1, ``block1_conv1/kernel:0``
in Keras 2). Long attributes are split by Keras into ``layer_names0``, ``layer_names1``...
Both attributes are read as Keras reads them; no dataset name is guessed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError
from ..model import VGGConfig
from .layout import assemble

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _names(group, attr: str) -> list[str]:  # noqa: ANN001 - an h5py Group
    """A list-of-strings attribute, joined from Keras's ``attr0``, ``attr1``... chunks."""
    if attr in group.attrs:
        raw = list(group.attrs[attr])
    else:
        raw, i = [], 0
        while f"{attr}{i}" in group.attrs:
            raw += list(group.attrs[f"{attr}{i}"])
            i += 1
        if i == 0:
            return []
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in raw]


def read_keras_h5(path: str | os.PathLike[str]) -> list[tuple[str, list[np.ndarray]]]:
    """``[(layer_name, [weights...]), ...]`` in the order of ``layer_names``, for the layers
    that have weights (kernel first, then bias, as Keras stores them), as float32 arrays in
    Keras's layout (conv kernels HWIO, dense kernels (in, out)). ``CheckpointError`` naming
    the file and the layer when the file is not HDF5, not Keras weights, or a listed layer or
    dataset is missing."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Keras weights file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise CheckpointError(f"cannot read {path} as a Keras .h5 file: not HDF5, or corrupt "
                              f"or truncated ({e})") from None
    out: list[tuple[str, list[np.ndarray]]] = []
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        layer_names = _names(root, "layer_names")
        if not layer_names:
            raise CheckpointError(f"{path} has no 'layer_names' attribute: not a Keras HDF5 "
                                  f"weights file (Keras 3 '.weights.h5' files are not read; "
                                  f"save with the legacy .h5 format)")
        for name in layer_names:
            if name not in root:
                raise CheckpointError(f"{path}: layer {name!r} is listed in layer_names but "
                                      f"has no group in the file (truncated or edited file)")
            group = root[name]
            weights = []
            for wname in _names(group, "weight_names"):
                try:
                    weights.append(np.asarray(group[wname], dtype=np.float32))
                except (KeyError, OSError, ValueError, TypeError) as e:
                    raise CheckpointError(f"{path}: layer {name!r} has no readable dataset "
                                          f"{wname!r} ({e})") from None
            if weights:
                out.append((name, weights))
    if not out:
        raise CheckpointError(f"{path}: no layer with weights")
    return out


def keras_state_dict(layers: Sequence[tuple[str, Sequence[np.ndarray]]],
                     arch: str | None = None, where: str = "Keras file"
                     ) -> tuple[dict[str, torch.Tensor], VGGConfig, bool]:
    """Map the layers of a Keras VGG (:func:`read_keras_h5`) to our layout.

    Conv kernels are HWIO: (kh, kw, in, out) -> (out, in, kh, kw). Dense kernels are
    (in, out): transposed. FC1's inputs are Keras's Flatten of the channels-last pool5
    map, index (h * W + w) * C + c; torch flattens (C, H, W), index (c * H + h) * W + w,
    so FC1's kernel is viewed as (H, W, C, out) and permuted to (out, C, H, W). Kernels
    stored channels-first (Theano's ``th_dim_ordering`` files, also flipped) are refused."""
    for name, ws in layers:
        if len(ws) != 2 or ws[0].ndim not in (2, 4):
            raise CheckpointError(f"{where}: layer {name!r} has weights of shapes "
                                  f"{[tuple(w.shape) for w in ws]}; a VGG net has only convs "
                                  f"(kernel, bias) and dense layers (kernel, bias)")
    _check_hwio([(n, ws[0].shape) for n, ws in layers if ws[0].ndim == 4], where)
    convs, fcs = [], []
    for name, (kernel, bias) in layers:
        if kernel.ndim == 4:
            convs.append((name, kernel.transpose(3, 2, 0, 1), bias.reshape(-1)))
        else:
            if not convs:
                raise CheckpointError(f"{where}: dense layer {name!r} before any conv layer")
            if not fcs:  # FC1: (H * W * C, out) channels-last -> (out, C * H * W)
                c = convs[-1][1].shape[0]
                hw = kernel.shape[0] // c
                k = math.isqrt(hw)
                if k * k * c != kernel.shape[0]:
                    raise CheckpointError(f"{where}: dense layer {name!r} takes "
                                          f"{kernel.shape[0]} inputs, not k x k x {c}")
                kernel = kernel.reshape(k, k, c, -1).transpose(3, 2, 0, 1)  # (out, C, H, W)
                kernel = kernel.reshape(kernel.shape[0], -1)
            else:
                kernel = kernel.T
            fcs.append((name, kernel, bias.reshape(-1)))
    if not convs:
        raise CheckpointError(f"{where}: no conv layer with weights")
    return assemble(convs, fcs, arch, False, where)


def _chained(shapes: list[tuple[int, ...]], square: tuple[int, int], cin: int, cout: int
             ) -> bool:
    """Square kernels, 3 inputs first, each conv's inputs the previous one's outputs."""
    prev = 3
    for s in shapes:
        if s[square[0]] != s[square[1]] or s[cin] != prev:
            return False
        prev = s[cout]
    return True


def _check_hwio(kernels: list[tuple[str, tuple[int, ...]]], where: str) -> None:
    """``CheckpointError`` unless the conv kernels chain as (kh, kw, in, out); channels-first
    kernels (Theano's ``th_dim_ordering`` files, stored flipped) are named as such."""
    shapes = [tuple(s) for _, s in kernels]
    if _chained(shapes, (0, 1), 2, 3):
        return
    if _chained(shapes, (2, 3), 1, 0):
        raise CheckpointError(f"{where}: the conv kernels are channels-first (out, in, kh, "
                              f"kw), as in Theano's 'th_dim_ordering' files, which vgg does "
                              f"not read; use the tf_dim_ordering file")
    raise CheckpointError(f"{where}: the conv kernels do not chain as (kh, kw, in, out) "
                          f"from 3 input channels: "
                          f"{', '.join(f'{n} {s}' for n, s in kernels[:4])}...")
