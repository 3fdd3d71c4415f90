"""Read Keras HDF5 weight files (``vgg16_weights_tf_dim_ordering_tf_kernels.h5``, the
``_notop`` variants, and whole models saved with ``model.save("x.h5")``) with h5py.

The layout is Keras's own (keras/saving/legacy/hdf5_format.py): the root (or the
``model_weights`` group of a whole-model file) has an attribute ``layer_names``; each
layer's group has an attribute ``weight_names`` naming its datasets relative to the group
(``block1_conv1_W_1:0`` in the files of keras-applications 0.1, ``block1_conv1/kernel:0``
in Keras 2). Long attributes are split by Keras into ``layer_names0``, ``layer_names1``...
Both attributes are read as Keras reads them; no dataset name is guessed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import CheckpointError

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
