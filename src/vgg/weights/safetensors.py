"""safetensors files in: the tensors and metadata of any of them (torchvision/timm weights
saved that way), and the files :func:`vgg.export.export_safetensors` writes (config,
class names and preprocessing in the metadata) as a :class:`Checkpoint`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..checkpoint import Checkpoint, check_finite
from ..errors import CheckpointError, ConfigError
from ..export import SAFETENSORS_FORMAT
from ..model import VGG, VGGConfig
from ..preprocess import Preprocess
from .layout import shape_problems


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
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


def load_safetensors(path: str | os.PathLike[str]) -> VGG:
    """Read a file written by :func:`vgg.export.export_safetensors` (eval mode)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"safetensors file not found: {path}")
    tensors, meta = read_safetensors(path)
    if meta.get("format") != SAFETENSORS_FORMAT:
        raise CheckpointError(f"{path} has no vgg metadata (config, classes, preprocessing); "
                              f"for bare weights use vgg.weights.from_torchvision({str(path)!r})")
    return safetensors_checkpoint(path, tensors, meta).build_model().eval()


def safetensors_checkpoint(path: Path, tensors: dict[str, torch.Tensor],
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
    problems = shape_problems(tensors, config)
    if problems:
        raise CheckpointError(f"weights in {path} do not fit {config.name}: "
                              f"{'; '.join(problems[:3])}")
    return Checkpoint(config=config, state_dict=tensors,
                      classes=[str(c) for c in classes] if classes is not None else None,
                      preprocess=preprocess,
                      class_names=[str(n) for n in names] if names is not None else None,
                      path=path)

