"""Weights from elsewhere, and weights for elsewhere.

In: torchvision state dicts (same keys as ours, so mostly validation), timm VGG
checkpoints (head stored as convs ``pre_logits.fc1`` / ``pre_logits.fc2`` and a linear
``head.fc``), and the original Caffe / Keras ports (torchvision layout, but expecting BGR
0..255 inputs with the mean [103.939, 116.779, 123.68] subtracted; the model carries that
preprocessing, so a user always feeds RGB). Files are read from local paths only, safely
(``weights_only=True``); nothing is downloaded.

Out: safetensors (weights plus config, class names and preprocessing as JSON metadata)
and ONNX (the FC net on the crop with a dynamic batch, or the fully-convolutional net
with dynamic batch, height and width).
"""

from __future__ import annotations

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

import torch
from torch import nn

from .archs import ARCHS, resolve_arch
from .checkpoint import atomic_write, check_finite, state_dict_error
from .errors import CheckpointError, ConfigError
from .model import VGG, VGGConfig, VGGFullyConv, last_channels
from .preprocess import Preprocess

log = logging.getLogger(__name__)

StateDict = Mapping[str, torch.Tensor]
SAFETENSORS_FORMAT = "vgg-safetensors"

# timm's names for torchvision's classifier.{0,3,6} (timm/models/vgg.py, _filter_fn).
TIMM_KEYS = {"classifier.0": "pre_logits.fc1", "classifier.3": "pre_logits.fc2",
             "classifier.6": "head.fc"}


# ---------------------------------------------------------------------------- reading

def read_state_dict(source: StateDict | str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state dict given directly or read from a local ``.pth`` / ``.pt`` / ``.safetensors``
    file. Unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` containers and the
    ``module.`` prefix of DataParallel checkpoints. Never executes code from the file."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise CheckpointError(f"weights file not found: {path}")
        if path.suffix == ".safetensors":
            from safetensors import SafetensorError
            from safetensors.torch import load_file
            try:
                obj: Any = load_file(str(path))
            except (SafetensorError, OSError, ValueError) as e:
                raise CheckpointError(f"cannot read {path}: {e}") from None
        else:
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as e:
                raise CheckpointError(f"refusing to load {path}: it holds objects other than "
                                      f"weights (possible code): "
                                      f"{str(e).splitlines()[0] if str(e) else e}") from None
            except Exception as e:  # noqa: BLE001 - corrupt files raise anything
                raise CheckpointError(f"cannot read {path}: not a torch file or corrupt "
                                      f"({type(e).__name__})") from None
        where = str(path)
    else:
        obj, where = source, "state dict"
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
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"safetensors file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path}: not a safetensors file or corrupt "
                              f"({e})") from None
    if meta.get("format") != SAFETENSORS_FORMAT:
        raise CheckpointError(f"{path} has no vgg metadata (config, classes, preprocessing); "
                              f"for bare weights use vgg.weights.from_torchvision({str(path)!r})")
    try:
        config = VGGConfig.from_dict(json.loads(meta["config"]))
        classes = json.loads(meta["classes"])
        names = json.loads(meta.get("class_names", "null"))
        preprocess = Preprocess.from_dict(json.loads(meta["preprocess"]))
    except (KeyError, TypeError, ValueError, ConfigError) as e:
        raise CheckpointError(f"{path}: malformed vgg metadata ({e})") from None
    check_finite(tensors, str(path))
    model = _model_from(tensors, config, classes, preprocess)
    model.set_class_names(names)
    return model


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
