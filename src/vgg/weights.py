"""Weights from elsewhere, and weights for elsewhere.

In: torchvision state dicts (same keys as ours, so mostly validation), timm VGG
checkpoints (head stored as convs ``pre_logits.fc1`` / ``pre_logits.fc2`` and a linear
``head.fc``), the authors' Caffe ``.caffemodel`` files (read by :mod:`vgg.caffemodel`,
without Caffe) and Keras's HDF5 ports (:mod:`vgg.keras_h5`, HWIO kernels and a
channels-last FC1 permuted to torch's order), and torchvision-layout conversions of the
Caffe nets. Caffe and Keras nets expect BGR 0..255 inputs with the mean [103.939, 116.779,
123.68] subtracted; the model carries that preprocessing, so a user always feeds RGB.
:func:`read_weights` reads any of them (the format detected from the file's content) into
the one checkpoint format; ``vgg convert`` and every command that loads a checkpoint use
it. Files are read from local paths only, safely (``weights_only=True``; protobuf and
HDF5 are parsed as data); nothing is downloaded.

Out: safetensors (weights plus config, class names and preprocessing as JSON metadata)
and ONNX (the FC net on the crop with a dynamic batch, or the fully-convolutional net
with dynamic batch, height and width).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import os
import pickle
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .archs import ALIASES, ARCHS, resolve_arch
from .checkpoint import FORMAT as CHECKPOINT_FORMAT
from .checkpoint import Checkpoint, atomic_write, check_finite, state_dict_error
from .errors import CheckpointError, ConfigError
from .model import (PAPER_INIT_STD, VGG, NetShape, VGGConfig, VGGFullyConv, last_channels,
                    layer_specs)
from .preprocess import Preprocess

log = logging.getLogger(__name__)

StateDict = Mapping[str, torch.Tensor]
SAFETENSORS_FORMAT = "vgg-safetensors"

# timm's names for torchvision's classifier.{0,3,6} (timm/models/vgg.py, _filter_fn).
TIMM_KEYS = {"classifier.0": "pre_logits.fc1", "classifier.3": "pre_logits.fc2",
             "classifier.6": "head.fc"}


# ---------------------------------------------------------------------------- reading

def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the metadata of a safetensors file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path}: not a safetensors file or corrupt "
                              f"({e})") from None
    return tensors, meta


def _read_torch_file(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with one-line errors naming the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"refusing to load {path}: it holds objects other than "
                              f"weights (possible code): "
                              f"{str(e).splitlines()[0] if str(e) else e}") from None
    except Exception as e:  # noqa: BLE001 - corrupt files raise anything
        raise CheckpointError(f"cannot read {path}: not a torch file or corrupt "
                              f"({type(e).__name__})") from None


def _unwrap_state_dict(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """Unwrap ``{"state_dict": ...}`` / ``{"model": ...}`` containers and DataParallel's
    ``module.`` prefix; check that what is left maps names to tensors."""
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{where} does not hold a state dict (a mapping of names to "
                              f"tensors)")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{where}: entries that are not tensors: {bad[:5]}")
    out = dict(obj)
    if all(k.startswith("module.") for k in out):
        out = {k[len("module."):]: v for k, v in out.items()}
    return out


def read_state_dict(source: StateDict | str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state dict given directly or read from a local ``.pth`` / ``.pt`` / ``.safetensors``
    file. Unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` containers and the
    ``module.`` prefix of DataParallel checkpoints. Never executes code from the file."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise CheckpointError(f"weights file not found: {path}")
        if path.suffix == ".safetensors" or sniff_format(path) == "safetensors":
            obj: Any = _read_safetensors(path)[0]
        else:
            obj = _read_torch_file(path)
        return _unwrap_state_dict(obj, str(path))
    return _unwrap_state_dict(source, "state dict")


# ------------------------------------------------------------------ shape inference

def _expected_shapes(config: VGGConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = VGG(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _mismatches(sd: StateDict, expected: dict[str, tuple[int, ...]]) -> list[str]:
    problems = [f"missing {k}" for k in expected if k not in sd]
    problems += [f"unexpected {k}" for k in sd if k not in expected]
    problems += [f"{k}: shape {tuple(sd[k].shape)}, expected {expected[k]}"
                 for k in expected if k in sd and tuple(sd[k].shape) != expected[k]]
    return problems


def infer_config(state_dict: StateDict, arch: str | None = None,
                 dropout: float = 0.5) -> VGGConfig:
    """The :class:`VGGConfig` whose torchvision-layout state dict ``state_dict`` is.

    Reads width (first conv / 64), FC width, number of classes and crop (from FC1's input
    size) off the shapes, batch norm off ``running_mean`` keys, and tries every config of
    Table 1 (or only ``arch``). Raises ``CheckpointError`` naming the mismatched keys of
    the closest config when none fits.
    """
    sd = state_dict
    try:
        first = sd["features.0.weight"]
        fc1, fc3 = sd["classifier.0.weight"], sd["classifier.6.weight"]
    except KeyError as e:
        raise CheckpointError(f"not a VGG state dict in torchvision layout: no key {e.args[0]} "
                              f"(keys: {sorted(sd)[:6]}...)") from None
    if first.dim() != 4 or fc1.dim() != 2 or fc3.dim() != 2:
        raise CheckpointError("not a VGG state dict: features.0.weight must be a 4-D conv "
                              "weight and classifier.{0,6}.weight 2-D linear weights")
    batch_norm = any(k.endswith("running_mean") for k in sd)
    if arch is not None:
        try:
            name, bn = resolve_arch(arch)
        except KeyError as e:
            raise ConfigError(e.args[0]) from None
        candidates, batch_norm = [name], bn or batch_norm
    else:
        candidates = list(ARCHS)
    # Channel counts are round(c * width): the widest conv (512 w) pins width best.
    widest = max(v.shape[0] for k, v in sd.items()
                 if k.startswith("features.") and k.endswith(".weight") and v.dim() == 4)
    widths = list(dict.fromkeys([widest / 512, first.shape[0] / 64]))
    fc_width, num_classes = fc1.shape[0], fc3.shape[0]
    best: tuple[int, str, list[str]] | None = None
    for name, width in ((n, w) for n in candidates for w in widths):
        base = VGGConfig(arch=name, batch_norm=batch_norm, width=width)
        k2 = fc1.shape[1] / last_channels(base)
        k = int(round(math.sqrt(k2)))
        if k < 1 or k * k != k2:
            problems = [f"classifier.0.weight: {fc1.shape[1]} inputs is not "
                        f"{last_channels(base)} x k x k"]
            config = None
        else:
            config = VGGConfig(arch=name, batch_norm=batch_norm, num_classes=num_classes,
                               width=width, fc_width=fc_width, crop=32 * k, dropout=dropout)
            problems = _mismatches(sd, _expected_shapes(config))
        if not problems and config is not None:
            return config
        if best is None or len(problems) < len(best[2]):
            best = (len(problems), name + ("-BN" if batch_norm else ""), problems)
    assert best is not None
    shown = "; ".join(best[2][:6]) + (f" (+{len(best[2]) - 6} more)" if len(best[2]) > 6 else "")
    raise CheckpointError(f"the weights fit no VGG config{'' if arch is None else ' ' + arch}; "
                          f"closest is {best[1]}: {shown}")


ClassesArg = Sequence[str] | str | None


def imagenet_classes() -> tuple[list[str], list[str]]:
    """The 1000 ILSVRC-2012 classes in the order of the published weights (torchvision,
    timm, the Caffe/Keras ports): (wnids, human-readable names), from the file shipped
    with vgg (nothing is downloaded)."""
    text = (Path(__file__).parent / "imagenet_classes.tsv").read_text(encoding="utf-8")
    rows = [ln.split("\t") for ln in text.splitlines() if ln and not ln.startswith("#")]
    return [r[0] for r in rows], [r[1] for r in rows]


def _classes(classes: ClassesArg, num_classes: int) -> tuple[list[str] | None,
                                                              list[str] | None]:
    """``classes`` as (ids, display names): None, a list of names, or "imagenet" (wnids as
    ids, so datasets in ImageNet's folder layout match by name; English names shown)."""
    if classes is None:
        return None, None
    if isinstance(classes, str):
        if classes.lower() != "imagenet":
            raise ConfigError(f"classes={classes!r}: give a list of names or 'imagenet'")
        if num_classes != 1000:
            raise ConfigError(f"classes='imagenet' needs a 1000-class net, these weights have "
                              f"{num_classes} outputs")
        return imagenet_classes()
    return [str(c) for c in classes], None


def _model_from(sd: dict[str, torch.Tensor], config: VGGConfig,
                classes: ClassesArg, preprocess: Preprocess) -> VGG:
    ids, names = _classes(classes, config.num_classes)
    with torch.device("meta"):
        model = VGG(config, classes=ids, preprocess=preprocess, class_names=names)
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as e:
        raise CheckpointError(f"weights do not fit {config.name}: {state_dict_error(e)}") from None
    return model.to(memory_format=model.memory_format).eval()


# ------------------------------------------------------------------ torchvision / Caffe

def from_torchvision(source: StateDict | str | os.PathLike[str], arch: str | None = None, *,
                     classes: ClassesArg = None,
                     preprocess: Preprocess | None = None, dropout: float = 0.5) -> VGG:
    """A :class:`VGG` from a torchvision ``vgg11/13/16/19[_bn]`` state dict or ``.pth`` file
    (keys are identical; ``arch`` and batch norm are inferred from the shapes unless given).
    The model gets torchvision's preprocessing (ImageNet mean/std) unless ``preprocess``
    says otherwise, and is returned in eval mode. ``classes="imagenet"`` names the 1000
    outputs (wnids, with English display names) as the published weights order them."""
    sd = read_state_dict(source)
    config = infer_config(sd, arch, dropout=dropout)
    return _model_from(sd, config, classes, preprocess or Preprocess.torchvision())


def from_caffe(source: StateDict | str | os.PathLike[str], arch: str | None = None, *,
               classes: ClassesArg = None, to_rgb: bool = False) -> VGG:
    """Weights of the original Caffe model (or its Keras port) already in torchvision key
    layout (as the common ``vgg16-caffe.pth`` / ``vgg16-00b39a1b.pth`` conversions are):
    the net expects BGR, 0..255, mean [103.939, 116.779, 123.68] subtracted. The model
    carries :meth:`Preprocess.caffe`, so ``model.predict`` takes RGB like every other model.
    ``to_rgb=True`` also permutes conv1_1 to take RGB (see :func:`bgr_to_rgb`)."""
    model = from_torchvision(source, arch, classes=classes, preprocess=Preprocess.caffe())
    return bgr_to_rgb(model) if to_rgb else model


def mark_caffe(model: VGG) -> VGG:
    """Declare that ``model``'s weights follow the Caffe convention (BGR, 0..255, mean
    subtracted): sets ``model.preprocess = Preprocess.caffe()`` and returns the model."""
    model.preprocess = Preprocess.caffe()
    return model


def bgr_to_rgb(model: VGG) -> VGG:
    """Make a BGR net take RGB: reverse the input channels of conv1_1 and turn the stored
    preprocessing into the equivalent RGB one (mean and std reversed). The outputs for the
    same RGB images are unchanged. Works in place and returns ``model``; a model that
    already takes RGB is returned as it is."""
    if model.preprocess.channel_order == "RGB":
        return model
    conv: nn.Conv2d = model.features[model.layer_names["conv1_1"]]
    with torch.no_grad():
        conv.weight.copy_(conv.weight.flip(1))
    p = model.preprocess
    model.preprocess = Preprocess(mean=p.mean[::-1], std=p.std[::-1], channel_order="RGB")
    return model


# ------------------------------------------------------------------------- timm

def to_timm(model: VGG) -> dict[str, torch.Tensor]:
    """``model``'s weights in timm's VGG layout: FC1 as a (fc, C, k, k) conv
    ``pre_logits.fc1``, FC2 as a 1x1 conv ``pre_logits.fc2``, FC3 as linear ``head.fc``."""
    out: dict[str, torch.Tensor] = {}
    c, k = last_channels(model.config), model.config.fc_kernel
    for key, value in model.state_dict().items():
        prefix, _, leaf = key.rpartition(".")
        if prefix in TIMM_KEYS:
            if leaf == "weight" and prefix == "classifier.0":
                value = value.reshape(value.shape[0], c, k, k)
            elif leaf == "weight" and prefix == "classifier.3":
                value = value.reshape(value.shape[0], value.shape[1], 1, 1)
            key = f"{TIMM_KEYS[prefix]}.{leaf}"
        out[key] = value.detach().clone().contiguous()
    return out


def timm_to_torchvision(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """Rename timm's head keys to torchvision's and flatten the conv-shaped FC weights
    (``(fc, C, k, k)`` -> ``(fc, C*k*k)``, in the same C, H, W order torchvision's flatten
    uses)."""
    back = {v: k for k, v in TIMM_KEYS.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        prefix, _, leaf = key.rpartition(".")
        if prefix in back:
            if leaf == "weight" and value.dim() == 4:
                value = value.reshape(value.shape[0], -1)
            key = f"{back[prefix]}.{leaf}"
        elif not key.startswith("features."):
            raise CheckpointError(f"unexpected key {key!r} in a timm VGG state dict "
                                  f"(expected features.*, pre_logits.fc1/fc2.*, head.fc.*)")
        out[key] = value
    return out


def from_timm(source: StateDict | str | os.PathLike[str], arch: str | None = None, *,
              classes: ClassesArg = None, preprocess: Preprocess | None = None,
              dropout: float = 0.5) -> VGG:
    """A :class:`VGG` from a timm ``vgg*`` state dict or file. timm's head is convolutional
    (FC1 a k x k conv); the crop is 32 k. timm's ImageNet weights are torchvision's, so the
    model gets torchvision's preprocessing unless ``preprocess`` is given."""
    sd = read_state_dict(source)
    if "pre_logits.fc1.weight" not in sd:
        raise CheckpointError("not a timm VGG state dict: no key pre_logits.fc1.weight")
    return from_torchvision(timm_to_torchvision(sd), arch, classes=classes,
                            preprocess=preprocess, dropout=dropout)


# ------------------------------------------------------- Caffe and Keras files, any file

FORMATS = ("torchvision", "timm", "caffe", "keras")
# The authors' released D and E were "trained with scale jittering" [256; 512] (their
# model-zoo notes), so Sect. 3.2's default test scales are Q = {256, 384, 512} (Table 4).
CAFFE_TRAIN_SCALE = [256, 512]
# torchvision/timm ImageNet weights are evaluated at resize 256, centre crop 224: S = 256.
TORCHVISION_TRAIN_SCALE = [256]
# The 2-D placeholder FC layers of a features-only net (a Keras ``_notop`` file, a Caffe net
# without fc6-fc8): one unit each, on a 7 x 7 pool5 (crop 224). Never used to classify.
FEATURES_ONLY_CROP = 224

_KIND_TEXT = {"torch": "torch file (.pth/.pt)", "safetensors": "safetensors file",
              "caffe": "Caffe model", "keras": "Keras HDF5 file",
              "unknown": "file of no format vgg knows"}
_FORMAT_KINDS = {"torchvision": ("torch", "safetensors"), "timm": ("torch", "safetensors"),
                 "caffe": ("caffe", "unknown"), "keras": ("keras",)}


def sniff_format(path: str | os.PathLike[str]) -> str:
    """What kind of file ``path`` is, from its first bytes (the suffix only decides for a
    ``.caffemodel`` whose start is not recognised): "keras" (HDF5), "safetensors",
    "torch" (zip or pickle), "caffe" (a NetParameter protobuf) or "unknown"."""
    from .caffemodel import looks_like_caffemodel
    from .keras_h5 import HDF5_MAGIC

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


def _conv_positions(arch: str) -> list[tuple[int, int]]:
    """(index in ``features``, kernel side) of each conv of ``arch`` without batch norm."""
    return [(i, s.kernel) for i, s in enumerate(layer_specs(NetShape(arch=arch)))
            if s.kind == "conv"]


def _arch_for(kernels: list[int], arch: str | None, lrn: bool, where: str) -> str:
    """The Table 1 config whose convs have these kernel sides, in order (A-LRN over A when
    the file has an LRN layer); ``arch`` restricts the choice."""
    if arch is not None:
        try:
            name, bn = resolve_arch(arch)
        except KeyError as e:
            raise ConfigError(e.args[0]) from None
        if bn:
            raise ConfigError(f"{where} has no batch-norm layers (the Caffe and Keras VGG "
                              f"nets have none): drop --bn / _bn")
        candidates = [name]
    else:
        candidates = list(ARCHS)
    fits = [a for a in candidates if [k for _, k in _conv_positions(a)] == kernels]
    if "A" in fits and "A-LRN" in fits and arch is None:
        fits.remove("A" if lrn else "A-LRN")
    if not fits:
        known = ", ".join(f"{a}: {len(_conv_positions(a))}" for a in candidates)
        raise CheckpointError(f"{where}: its {len(kernels)} conv layers (kernels "
                              f"{'/'.join(map(str, kernels))}) fit no VGG config "
                              f"({known} convs)")
    return fits[0]


def _tensor(a: np.ndarray) -> torch.Tensor:
    """A float32 tensor owning its memory: copies only arrays that are views of a read-only
    buffer (a Caffe file's bytes), unaligned, of another dtype or not contiguous."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not (a.flags.writeable and a.flags.aligned):
        a = a.copy()
    return torch.from_numpy(a)


def _assemble(convs: list[tuple[str, np.ndarray, np.ndarray]],
              fcs: list[tuple[str, np.ndarray, np.ndarray]], arch: str | None, lrn: bool,
              where: str) -> tuple[dict[str, torch.Tensor], VGGConfig, bool]:
    """A torchvision-layout state dict from conv weights (O, I, k, k) and FC weights
    (out, in) in torchvision's (C, H, W) input order, in forward order; its config; and
    whether the file had no FC layers (``features_only``: placeholder FC layers)."""
    for name, w, b in convs:
        if w.ndim != 4 or w.shape[2] != w.shape[3] or b.shape != (w.shape[0],):
            raise CheckpointError(f"{where}: conv layer {name!r} has weights {w.shape} and "
                                  f"bias {b.shape}, not (out, in, k, k) and (out,)")
    name = _arch_for([w.shape[2] for _, w, _ in convs], arch, lrn, where)
    sd: dict[str, torch.Tensor] = {}
    for (idx, _), (_, w, b) in zip(_conv_positions(name), convs):
        sd[f"features.{idx}.weight"], sd[f"features.{idx}.bias"] = _tensor(w), _tensor(b)
    features_only = not fcs
    if features_only:
        c5 = convs[-1][1].shape[0]
        k = FEATURES_ONLY_CROP // 32
        fcs = [("fc6", np.zeros((1, c5 * k * k)), np.zeros(1)),
               ("fc7", np.zeros((1, 1)), np.zeros(1)), ("fc8", np.zeros((1, 1)), np.zeros(1))]
    if len(fcs) != 3:
        raise CheckpointError(f"{where}: {len(fcs)} fully-connected layers "
                              f"({', '.join(n for n, _, _ in fcs)}); a VGG net has three "
                              f"(fc6, fc7, fc8) or none (convolutional layers only)")
    for idx, (fc_name, w, b) in zip((0, 3, 6), fcs):
        if w.ndim != 2 or b.shape != (w.shape[0],):
            raise CheckpointError(f"{where}: FC layer {fc_name!r} has weights {w.shape} and "
                                  f"bias {b.shape}, not (out, in) and (out,)")
        sd[f"classifier.{idx}.weight"], sd[f"classifier.{idx}.bias"] = _tensor(w), _tensor(b)
    try:
        config = infer_config(sd, name)
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {e}") from None
    return sd, config, features_only


def caffe_state_dict(layers: Sequence[Any], arch: str | None = None, where: str = "Caffe model"
                     ) -> tuple[dict[str, torch.Tensor], VGGConfig, bool]:
    """Map the layers of a Caffe VGG (:func:`vgg.caffemodel.read_caffemodel`) to our layout:
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
    return _assemble(convs, fcs, arch, lrn, where)


def keras_state_dict(layers: Sequence[tuple[str, Sequence[np.ndarray]]],
                     arch: str | None = None, where: str = "Keras file"
                     ) -> tuple[dict[str, torch.Tensor], VGGConfig, bool]:
    """Map the layers of a Keras VGG (:func:`vgg.keras_h5.read_keras_h5`) to our layout.

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
    return _assemble(convs, fcs, arch, False, where)


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


def read_class_names(path: str | os.PathLike[str]) -> list[str]:
    """Class names from a text file (one name a line; blank lines at the end ignored) or a
    JSON list of strings (``.json``, or a file starting with ``[``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read class names from {path}: "
                          f"{getattr(e, 'strerror', None) or e}") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except ValueError as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{path} must hold a JSON list of class names (strings)")
    else:
        names = [ln.strip() for ln in text.rstrip().splitlines()]
    empty = [i + 1 for i, n in enumerate(names) if not n.strip()]
    if not names or empty:
        raise ConfigError(f"{path}: " + (f"empty class name at line/item {empty[0]}" if empty
                                         else "no class names"))
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"{path}: class name {dup!r} appears twice")
    return names


def _kind_matches(fmt: str, kind: str, path: Path) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown weights format {fmt!r}; choose from {', '.join(FORMATS)}")
    if kind not in _FORMAT_KINDS[fmt]:
        raise CheckpointError(f"{path} is a {_KIND_TEXT[kind]}, not {fmt} weights "
                              f"(leave out --from to detect the format)")


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
        _kind_matches(fmt, kind, path)
    features_only = False
    if kind == "keras":
        from .keras_h5 import read_keras_h5

        if batch_norm:
            arch = (arch or "D") + "_bn"  # refused by _arch_for with a clear message
        sd, config, features_only = keras_state_dict(read_keras_h5(path), arch, str(path))
        fmt, preprocess = "keras", Preprocess.caffe()
    elif kind == "caffe" or (kind == "unknown" and fmt == "caffe"):
        from .caffemodel import read_caffemodel

        if batch_norm:
            arch = (arch or "D") + "_bn"
        _, layers = read_caffemodel(path)
        sd, config, features_only = caffe_state_dict(layers, arch, str(path))
        fmt, preprocess = "caffe", Preprocess.caffe()
    elif kind in ("torch", "safetensors"):
        if kind == "safetensors":
            tensors, st_meta = _read_safetensors(path)
            if st_meta.get("format") == SAFETENSORS_FORMAT:
                if fmt is not None or not allow_vgg:
                    raise CheckpointError(f"{path} is already a vgg safetensors file "
                                          f"(nothing to convert)")
                return _safetensors_checkpoint(path, tensors, st_meta)
            obj = tensors
        else:
            obj = _read_torch_file(path) if obj is None else obj
            if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
                if fmt is not None or not allow_vgg:
                    raise CheckpointError(f"{path} is already a vgg checkpoint (nothing to "
                                          f"convert)")
                from .checkpoint import load_checkpoint

                return load_checkpoint(path, convert=False)
        sd, config, fmt = _from_state_dict(_unwrap_state_dict(obj, str(path)), fmt, arch,
                                           batch_norm, str(path))
        preprocess = Preprocess.torchvision()
    else:
        raise CheckpointError(
            f"cannot read {path}: not a format vgg reads (a vgg checkpoint, torchvision or "
            f"timm .pth/.safetensors, Caffe .caffemodel, Keras .h5); the file is corrupt, "
            f"truncated or in another format")
    return _checkpoint(sd, config, preprocess, classes, fmt, features_only, path)


def _from_state_dict(sd: dict[str, torch.Tensor], fmt: str | None, arch: str | None,
                     batch_norm: bool, where: str
                     ) -> tuple[dict[str, torch.Tensor], VGGConfig, str]:
    """A torchvision or timm state dict in torchvision's layout, its config and format."""
    is_timm = "pre_logits.fc1.weight" in sd
    fmt = fmt or ("timm" if is_timm else "torchvision")
    if fmt == "torchvision" and is_timm:
        raise CheckpointError(f"{where} holds timm keys (pre_logits.fc1.*): use --from timm")
    if fmt == "timm":
        if not is_timm:
            raise CheckpointError(f"{where} is not a timm VGG state dict: no key "
                                  f"pre_logits.fc1.weight")
        sd = timm_to_torchvision(sd)
    try:
        config = infer_config(sd, None if arch is None else arch + ("_bn" if batch_norm else ""))
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {e}") from None
    if batch_norm and not config.batch_norm:
        raise ConfigError(f"{where}: --bn given but the weights have no batch-norm layers")
    return sd, config, fmt


def _checkpoint(sd: dict[str, torch.Tensor], config: VGGConfig, preprocess: Preprocess,
                classes: ClassesArg, fmt: str, features_only: bool,
                path: Path | None) -> Checkpoint:
    """The converted :class:`Checkpoint`: finite weights, class names ("auto": ImageNet's
    for a 1000-output net), and what it was converted from in ``meta``."""
    where = str(path) if path is not None else "state dict"
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
    ids, names = _classes(classes, config.num_classes)
    meta: dict[str, Any] = {"converted_from": fmt, "source": where}
    if config.crop == 224 and not features_only:
        meta["train_scale"] = CAFFE_TRAIN_SCALE if fmt in ("caffe", "keras") \
            else TORCHVISION_TRAIN_SCALE
    if features_only:
        meta["features_only"] = True
    return Checkpoint(config=config, state_dict=sd, classes=ids, preprocess=preprocess,
                      class_names=names, meta=meta, path=path)


def state_dict_checkpoint(state_dict: StateDict, fmt: str | None = None, *,
                          arch: str | None = None, batch_norm: bool = False,
                          classes: ClassesArg = "auto") -> Checkpoint:
    """:func:`read_weights` for a torchvision or timm state dict already in memory."""
    if fmt is not None and fmt not in ("torchvision", "timm"):
        raise ConfigError(f"a state dict in memory is torchvision or timm weights, not {fmt}")
    sd, config, fmt = _from_state_dict(_unwrap_state_dict(state_dict, "state dict"), fmt,
                                       arch, batch_norm, "state dict")
    return _checkpoint(sd, config, Preprocess.torchvision(), classes, fmt, False, None)


WeightsArg = StateDict | str | os.PathLike[str]


def pretrained(weights: WeightsArg, arch: str, batch_norm: bool = False, *,
               num_classes: int | None = None, classes: Sequence[str] | None = None,
               width: float | None = None, fc_width: int | None = None,
               crop: int | None = None, dropout: float = 0.5,
               preprocess: Preprocess | None = None, init: str = "gaussian",
               init_std: float = PAPER_INIT_STD, generator: torch.Generator | None = None,
               head: str = "classes") -> VGG:
    """Net ``arch`` with the weights of any file vgg reads (or a torchvision/timm state
    dict): what ``vgg.vgg16(weights=...)`` and ``vgg.create_model`` return (train mode,
    like a freshly built net).

    The file must hold this architecture (else ``CheckpointError`` naming what it holds);
    ``width``, ``fc_width`` and ``crop``, when given, must match its shapes. A different
    ``num_classes`` (or ``classes`` of another length, or a box ``head``) replaces FC8 with
    a fresh layer, as for fine-tuning. A features-only file (Keras ``_notop``) fills the
    conv layers; FC6-FC8 are built from ``fc_width`` (4096), ``crop`` (224) and
    ``num_classes`` (1000) and initialised by ``init``. The preprocessing is the weights'
    own unless ``preprocess`` is given.
    """
    from .checkpoint import load_checkpoint
    from .model import build

    try:
        want, bn = resolve_arch(arch)
    except KeyError as e:
        raise ConfigError(e.args[0]) from None
    bn = bn or batch_norm
    if isinstance(weights, (str, os.PathLike)):
        ck, where = load_checkpoint(weights), str(weights)
    else:
        ck, where = state_dict_checkpoint(weights, arch=want, batch_norm=bn), "state dict"
    c = ck.config
    if (c.arch, c.batch_norm) != (want, bn):
        name = next((a for a, v in ALIASES.items() if v == c.arch), c.arch)
        name += "_bn" if c.batch_norm else ""
        raise CheckpointError(f"{where} holds a {c.name} net, not {want}"
                              f"{'-BN' if bn else ''}: use vgg.create_model({name!r}, "
                              f"weights=...)")
    features_only = bool(ck.meta.get("features_only"))
    given = {"width": width} if features_only else \
        {"width": width, "fc_width": fc_width, "crop": crop}
    for key, value in given.items():
        if value is not None and value != getattr(c, key):
            raise ConfigError(f"{key}={value} but the weights in {where} have "
                              f"{key}={getattr(c, key)}")
    n = num_classes if num_classes is not None else (len(classes) if classes is not None
                                                     else None)
    if features_only:
        model = build(want, batch_norm=bn, num_classes=n, width=c.width,
                      fc_width=fc_width, crop=crop, dropout=dropout, init=init,
                      init_std=init_std, classes=classes,
                      preprocess=preprocess or ck.preprocess, generator=generator, head=head)
        feats = {k[len("features."):]: v for k, v in ck.state_dict.items()
                 if k.startswith("features.")}
        model.features.load_state_dict(feats)
        log.info("%s has convolutional layers only: fc6-fc8 start from %s init", where, init)
        return model
    ck.config = dataclasses.replace(c, dropout=dropout)
    model = ck.build_model()
    if preprocess is not None:
        model.preprocess = preprocess
    if head != "classes" or (n is not None and n != c.num_classes):
        model.reset_classifier(n if n is not None else c.num_classes, classes, std=init_std,
                               head=head)
        log.info("%s: fc8 replaced by a fresh layer with %d outputs", where,
                 model.config.out_features)
    elif classes is not None:
        model.classes, model.class_names = [str(x) for x in classes], None
    return model


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


# ------------------------------------------------------------------- safetensors

def _metadata(model: VGG | VGGFullyConv) -> dict[str, str]:
    return {"format": SAFETENSORS_FORMAT,
            "config": json.dumps(model.config.to_dict()),
            "classes": json.dumps(model.classes),
            "class_names": json.dumps(model.class_names),
            "preprocess": json.dumps(model.preprocess.to_dict())}


def export_safetensors(model: VGG, path: str | os.PathLike[str]) -> Path:
    """Write ``model``'s weights (contiguous NCHW, CPU) to ``path`` with its config, class
    names and preprocessing as JSON strings in the safetensors metadata. Atomic."""
    from safetensors.torch import save

    if not isinstance(model, VGG):
        raise ConfigError("export_safetensors takes the FC net (VGG); its fully-convolutional "
                          "form has the same weights")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = save(tensors, metadata=_metadata(model))
    try:
        return atomic_write(path, lambda f: f.write(data))
    except OSError as e:
        raise CheckpointError(f"cannot write {path}: {e.strerror or e}") from None


def load_safetensors(path: str | os.PathLike[str]) -> VGG:
    """Read a file written by :func:`export_safetensors` (eval mode)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"safetensors file not found: {path}")
    tensors, meta = _read_safetensors(path)
    if meta.get("format") != SAFETENSORS_FORMAT:
        raise CheckpointError(f"{path} has no vgg metadata (config, classes, preprocessing); "
                              f"for bare weights use vgg.weights.from_torchvision({str(path)!r})")
    return _safetensors_checkpoint(path, tensors, meta).build_model().eval()


def _safetensors_checkpoint(path: Path, tensors: dict[str, torch.Tensor],
                            meta: dict[str, str]) -> Checkpoint:
    """The :class:`Checkpoint` a vgg safetensors file describes (config, classes, names and
    preprocessing from its metadata); the weights are checked against the config."""
    try:
        config = VGGConfig.from_dict(json.loads(meta["config"]))
        classes = json.loads(meta["classes"])
        names = json.loads(meta.get("class_names", "null"))
        preprocess = Preprocess.from_dict(json.loads(meta["preprocess"]))
        if classes is not None and (not isinstance(classes, list)
                                    or len(classes) != config.num_classes):
            raise ValueError(f"classes must be a list of {config.num_classes} names")
        if names is not None and (classes is None or not isinstance(names, list)
                                  or len(names) != len(classes)):
            raise ValueError("class_names must be a list aligned with classes")
    except (KeyError, TypeError, ValueError, ConfigError) as e:
        raise CheckpointError(f"{path}: malformed vgg metadata ({e})") from None
    check_finite(tensors, str(path))
    problems = _mismatches(tensors, _expected_shapes(config))
    if problems:
        raise CheckpointError(f"weights in {path} do not fit {config.name}: "
                              f"{'; '.join(problems[:3])}")
    return Checkpoint(config=config, state_dict=tensors,
                      classes=[str(c) for c in classes] if classes is not None else None,
                      preprocess=preprocess,
                      class_names=[str(n) for n in names] if names is not None else None,
                      path=path)


# ------------------------------------------------------------------------- ONNX

def export_onnx(model: VGG | VGGFullyConv, path: str | os.PathLike[str], *,
                fully_conv: bool = False, opset: int | None = None) -> Path:
    """Write ``model`` as ONNX (float32, CPU trace), input ``images`` (N, 3, H, W)
    normalised as ``model.preprocess`` says, output ``scores`` (pre-soft-max).

    FC net: H = W = crop, dynamic batch; output (N, K). ``fully_conv=True`` (or a
    :class:`VGGFullyConv`): dynamic batch, height and width (both >= crop); output the
    (N, K, H/32 - k + 1, W/32 - k + 1) score map of Sect. 3.2. The config, class names and
    preprocessing go into the ONNX metadata (JSON strings). Atomic write.
    """
    try:
        import onnx
    except ImportError:
        raise ConfigError("ONNX export needs the onnx package: pip install 'vgg[export]' "
                          "(or pip install onnx)") from None

    if isinstance(model, VGGFullyConv):
        net: nn.Module = model
        fully_conv = True
    elif fully_conv:
        net = model.to_fully_conv()
    else:
        net = model
    was_training = model.training
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    crop = model.config.crop
    dummy = torch.zeros(1, 3, crop, crop)
    if fully_conv:
        axes = {"images": {0: "batch", 2: "height", 3: "width"},
                "scores": {0: "batch", 2: "score_height", 3: "score_width"}}
    else:
        axes = {"images": {0: "batch"}, "scores": {0: "batch"}}
    buf = io.BytesIO()
    net = net.cpu().float().eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter traces in well under a second and keeps H, W symbolic
            # through convs and pools; the input-size checks in forward are traced away.
            warnings.simplefilter("ignore")
            kwargs: dict[str, Any] = dict(input_names=["images"], output_names=["scores"],
                                          dynamic_axes=axes, dynamo=False)
            if opset is not None:
                kwargs["opset_version"] = opset
            torch.onnx.export(net, (dummy,), buf, **kwargs)
    finally:
        model.to(device=device, dtype=dtype).train(was_training)
    proto = onnx.load_from_string(buf.getvalue())
    for key, value in _metadata(model).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    entry = proto.metadata_props.add()
    entry.key, entry.value = "fully_conv", json.dumps(fully_conv)
    data = proto.SerializeToString()
    try:
        return atomic_write(path, lambda f: f.write(data))
    except OSError as e:
        raise CheckpointError(f"cannot write {path}: {e.strerror or e}") from None
