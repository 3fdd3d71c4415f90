"""Weights for elsewhere: safetensors (weights plus config, class names and preprocessing as
JSON metadata; :func:`vgg.weights.load_safetensors` reads it back) and ONNX (the FC net on
the crop with a dynamic batch, or the fully-convolutional net with dynamic batch, height
and width). Both files are written atomically."""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import atomic_write
from .errors import CheckpointError, ConfigError
from .model import VGG, VGGFullyConv

SAFETENSORS_FORMAT = "vgg-safetensors"


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
