"""Any weights file vgg reads, as one :class:`Checkpoint`. :func:`read_weights` converts
(``vgg convert``: format, config and class names can be pinned); :func:`open_weights` is
the facade that every command, ``vgg.load_checkpoint`` and the builders' ``weights=`` go
through: a vgg checkpoint as it is, anything else converted on the fly and said so once in
the log. The format comes from the file's content (:func:`sniff_format`); the file is read
once."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import (Checkpoint, check_finite, checkpoint_file, checkpoint_from_dict,
                          is_checkpoint_dict, load_checkpoint, read_torch_file,
                          unreadable_error)
from ..errors import CheckpointError, ConfigError
from ..export import SAFETENSORS_FORMAT
from ..model import VGG, VGGConfig
from ..preprocess import Preprocess
from .caffe import caffe_state_dict, read_caffemodel
from .classes import ClassesArg, resolve_classes
from .keras import keras_state_dict, read_keras_h5
from .layout import StateDict
from .safetensors import read_safetensors, safetensors_checkpoint
from .sniff import check_kind, sniff_format
from .statedict import torch_load, torchvision_layout, unwrap_state_dict

log = logging.getLogger(__name__)

# The authors' released D and E were "trained with scale jittering" [256; 512] (their
# model-zoo notes), so Sect. 3.2's default test scales are Q = {256, 384, 512} (Table 4).
CAFFE_TRAIN_SCALE = [256, 512]
# torchvision/timm ImageNet weights are evaluated at resize 256, centre crop 224: S = 256.
TORCHVISION_TRAIN_SCALE = [256]


@dataclass
class Converted:
    """Foreign weights in our layout, before they become a :class:`Checkpoint`."""

    state_dict: dict[str, torch.Tensor]
    config: VGGConfig
    fmt: str  # "torchvision", "timm", "caffe" or "keras"
    preprocess: Preprocess
    features_only: bool = False  # the file has no FC layers: state_dict has placeholders


def read_weights(source: str | os.PathLike[str], fmt: str | None = None, *,
                 arch: str | None = None, batch_norm: bool = False,
                 classes: ClassesArg = "auto", obj: Any = None,
                 allow_vgg: bool = True) -> Checkpoint:
    """Any weights file vgg reads, as a :class:`Checkpoint` (CPU tensors, not yet a model).

    ``fmt``: "torchvision", "timm", "caffe", "keras", or None to detect it from the file's
    content (HDF5 -> Keras; zip/pickle or safetensors -> a vgg file, or timm when it has
    ``pre_logits.fc1`` keys, else torchvision; a NetParameter protobuf -> Caffe). A vgg
    checkpoint or vgg safetensors file is returned as it is (with ``fmt`` given or not
    ``allow_vgg``, that is an error: nothing to convert). ``arch`` / ``batch_norm`` pin
    the config (else inferred from the shapes). ``classes``: "auto" (the ImageNet classes
    for a 1000-output net), "imagenet", a list of names, or None. The preprocessing is the weights' own:
    torchvision's mean/std on [0, 1] inputs for torchvision and timm, BGR 0..255 minus
    [103.939, 116.779, 123.68] for Caffe and Keras. ``meta`` records ``converted_from``,
    ``source``, ``train_scale`` (full-size nets) and ``features_only`` (no FC layers in
    the file: ``_notop``). ``obj``: the file's contents already read by ``torch.load``."""
    path = Path(source)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a weights file")
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    kind = "torch" if obj is not None else sniff_format(path)
    if fmt is not None:
        check_kind(fmt, kind, path)
    return _read(path, kind, fmt, arch=arch, batch_norm=batch_norm, classes=classes, obj=obj,
                 allow_vgg=allow_vgg)


def _read(path: Path, kind: str, fmt: str | None, *, arch: str | None = None,
          batch_norm: bool = False, classes: ClassesArg = "auto", obj: Any = None,
          allow_vgg: bool = True) -> Checkpoint:
    """:func:`read_weights` of a file whose kind (:func:`sniff_format`) is known."""
    if kind == "keras":
        if batch_norm:
            arch = (arch or "D") + "_bn"  # refused by the config lookup with a clear message
        sd, config, features_only = keras_state_dict(read_keras_h5(path), arch, str(path))
        converted = Converted(sd, config, "keras", Preprocess.caffe(), features_only)
    elif kind == "caffe" or (kind == "unknown" and fmt == "caffe"):
        if batch_norm:
            arch = (arch or "D") + "_bn"
        _, layers = read_caffemodel(path)
        sd, config, features_only = caffe_state_dict(layers, arch, str(path))
        converted = Converted(sd, config, "caffe", Preprocess.caffe(), features_only)
    elif kind in ("torch", "safetensors"):
        if kind == "safetensors":
            tensors, st_meta = read_safetensors(path)
            if st_meta.get("format") == SAFETENSORS_FORMAT:
                if fmt is not None or not allow_vgg:
                    raise CheckpointError(f"{path} is already a vgg safetensors file "
                                          f"(nothing to convert)")
                return safetensors_checkpoint(path, tensors, st_meta)
            obj = tensors
        else:
            obj = torch_load(path) if obj is None else obj
            if is_checkpoint_dict(obj):
                if fmt is not None or not allow_vgg:
                    raise CheckpointError(f"{path} is already a vgg checkpoint (nothing to "
                                          f"convert)")
                return checkpoint_from_dict(obj, path)
        sd, config, fmt = torchvision_layout(unwrap_state_dict(obj, str(path)), fmt, arch,
                                             batch_norm, str(path))
        converted = Converted(sd, config, fmt, Preprocess.torchvision())
    else:
        raise CheckpointError(
            f"cannot read {path}: not a format vgg reads (a vgg checkpoint, torchvision or "
            f"timm .pth/.safetensors, Caffe .caffemodel, Keras .h5); the file is corrupt, "
            f"truncated or in another format")
    return _checkpoint(converted, classes, path)


def _checkpoint(converted: Converted, classes: ClassesArg, path: Path | None) -> Checkpoint:
    """The converted :class:`Checkpoint`: finite weights, class names ("auto": ImageNet's
    for a 1000-output net), and what it was converted from in ``meta``."""
    where = str(path) if path is not None else "state dict"
    sd, config, fmt = converted.state_dict, converted.config, converted.fmt
    features_only = converted.features_only
    check_finite(sd, where)
    if classes == "auto":
        classes = "imagenet" if config.num_classes == 1000 and not features_only else None
    elif features_only and classes is not None:
        raise ConfigError(f"{where} has no FC layers (convolutional layers only), so no class "
                          f"outputs to name")
    if isinstance(classes, Sequence) and not isinstance(classes, str) \
            and len(classes) != config.num_classes:
        raise ConfigError(f"{len(classes)} class names given for a net with "
                          f"{config.num_classes} outputs")
    ids, names = resolve_classes(classes, config.num_classes)
    meta: dict[str, Any] = {"converted_from": fmt, "source": where}
    if config.crop == 224 and not features_only:
        meta["train_scale"] = CAFFE_TRAIN_SCALE if fmt in ("caffe", "keras") \
            else TORCHVISION_TRAIN_SCALE
    if features_only:
        meta["features_only"] = True
    return Checkpoint(config=config, state_dict=sd, classes=ids,
                      preprocess=converted.preprocess, class_names=names, meta=meta,
                      path=path)


def state_dict_checkpoint(state_dict: StateDict, fmt: str | None = None, *,
                          arch: str | None = None, batch_norm: bool = False,
                          classes: ClassesArg = "auto") -> Checkpoint:
    """:func:`read_weights` for a torchvision or timm state dict already in memory."""
    if fmt is not None and fmt not in ("torchvision", "timm"):
        raise ConfigError(f"a state dict in memory is torchvision or timm weights, not {fmt}")
    sd, config, fmt = torchvision_layout(unwrap_state_dict(state_dict, "state dict"), fmt,
                                         arch, batch_norm, "state dict")
    return _checkpoint(Converted(sd, config, fmt, Preprocess.torchvision()), classes, None)


def describe_source(ck: Checkpoint) -> str:
    """"torchvision weights: D, 1000 classes (ImageNet), RGB mean/std on [0, 1]" for a
    converted checkpoint."""
    c, p = ck.config, ck.preprocess
    what = ("convolutional layers only (no FC layers)" if ck.meta.get("features_only")
            else f"{c.num_classes} classes" + (" (ImageNet)" if c.num_classes == 1000
                                               and ck.classes else ""))
    inputs = ("BGR 0..255 minus mean " + "/".join(f"{v:g}" for v in p.mean)
              if p.channel_order == "BGR" else "RGB mean/std" if p.std != (1.0, 1.0, 1.0)
              else "RGB minus mean")
    return f"{ck.meta.get('converted_from')} weights: {c.name}, {what}, inputs {inputs}"


def load_weights(source: str | os.PathLike[str], fmt: str | None = None, *,
                 arch: str | None = None, classes: ClassesArg = "auto") -> VGG:
    """The model of any weights file vgg reads (see :func:`read_weights`), eval mode."""
    return read_weights(source, fmt, arch=arch, classes=classes).build_model().eval()


def open_weights(path: str | os.PathLike[str], map_location: str | torch.device = "cpu",
                 allow_nonfinite: bool = False, convert: bool = True) -> Checkpoint:
    """A checkpoint written by :func:`vgg.save_checkpoint`, or with ``convert`` (the
    default) any other weights file vgg reads, converted on the fly and said so once in
    the log: torchvision / timm ``.pth`` or ``.safetensors`` files, vgg safetensors
    exports, Caffe ``.caffemodel`` and Keras ``.h5`` files (see :func:`read_weights`; the
    format comes from the file's content). ``vgg.load_checkpoint`` is this function.

    Raises ``CheckpointError`` naming the file when it is missing, not a file vgg reads,
    corrupt, carries pickled code, or (unless ``allow_nonfinite``) holds NaN or infinite
    weights.
    """
    if not convert:
        return load_checkpoint(path, map_location, allow_nonfinite)
    path = checkpoint_file(path)
    kind = sniff_format(path)
    if kind == "unknown":  # neither zip nor pickle: no torch file at all
        raise unreadable_error(path)
    obj = None
    if kind == "torch":
        obj = read_torch_file(path, map_location)
        if is_checkpoint_dict(obj) or not isinstance(obj, dict):
            return checkpoint_from_dict(obj, path, allow_nonfinite)
    ck = _read(path, kind, None, obj=obj)
    if ck.meta.get("converted_from"):
        log.info("%s: %s, converted on the fly (`vgg convert` saves the conversion)", path,
                 describe_source(ck))
    return ck


def open_model(path: str | os.PathLike[str],
               map_location: str | torch.device = "cpu") -> VGG:
    """The model of any weights file :func:`open_weights` reads, ready to use (``eval()``
    mode). ``vgg.load_model`` is this function."""
    return open_weights(path, map_location).build_model().eval()
