"""torchvision and timm state dicts. torchvision's keys are ours (``features.N.*``,
``classifier.{0,3,6}.*``), so reading one is mostly validation; timm stores the head as
convs (``pre_logits.fc1`` / ``pre_logits.fc2``) and a linear ``head.fc``. Also the
torchvision-layout conversions of the Caffe nets (BGR inputs) and the BGR -> RGB
rewrite of conv1_1. Files are read from local paths only, safely
(``weights_only=True``); nothing is downloaded."""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import state_dict_error
from ..errors import CheckpointError, ConfigError
from ..model import VGG, VGGConfig, last_channels
from ..preprocess import Preprocess
from .classes import ClassesArg, resolve_classes
from .layout import StateDict, infer_config
from .safetensors import read_safetensors
from .sniff import sniff_format


# timm's names for torchvision's classifier.{0,3,6} (timm/models/vgg.py, _filter_fn).
TIMM_KEYS = {"classifier.0": "pre_logits.fc1", "classifier.3": "pre_logits.fc2",
             "classifier.6": "head.fc"}


def torch_load(path: Path) -> Any:
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


def unwrap_state_dict(obj: Any, where: str) -> dict[str, torch.Tensor]:
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
            obj: Any = read_safetensors(path)[0]
        else:
            obj = torch_load(path)
        return unwrap_state_dict(obj, str(path))
    return unwrap_state_dict(source, "state dict")


def _model_from(sd: dict[str, torch.Tensor], config: VGGConfig,
                classes: ClassesArg, preprocess: Preprocess) -> VGG:
    ids, names = resolve_classes(classes, config.num_classes)
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


def torchvision_layout(sd: dict[str, torch.Tensor], fmt: str | None, arch: str | None,
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

