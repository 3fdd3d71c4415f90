"""The public builders: ``vgg.build``, ``vgg.vgg11`` ... ``vgg.vgg19_bn``,
``vgg.create_model`` and ``vgg.list_models``. Without ``weights`` a net is
:func:`vgg.model.build`'s (freshly initialised); with it the file or state dict is opened
through :mod:`vgg.weights`, imported only then, so ``import vgg`` stays quick."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from . import model
from .archs import ALIASES, resolve_arch
from .errors import ConfigError
from .model import VGG

Weights = Mapping[str, torch.Tensor] | str | os.PathLike[str] | None


def build(arch: str = "D", *, weights: Weights = None, **kwargs: Any) -> VGG:
    """A Table 1 net: :func:`vgg.model.build` and its keyword arguments (``batch_norm``,
    ``num_classes``, ``width``, ``fc_width``, ``crop``, ``dropout``, ``init``, ``init_std``,
    ``classes``, ``preprocess``, ``generator``, ``head``).

    ``weights``: a file vgg reads (a vgg checkpoint or safetensors export, torchvision or
    timm ``.pth`` / ``.safetensors``, Caffe ``.caffemodel``, Keras ``.h5``) or a torchvision
    state dict: the net then has those weights and their preprocessing, its shape is read
    off them (``width`` / ``fc_width`` / ``crop`` must agree when given), and another
    ``num_classes`` replaces FC8 (see :func:`vgg.weights.pretrained`)."""
    if weights is None:
        return model.build(arch, **kwargs)
    from .weights.pretrained import pretrained

    return pretrained(weights, arch, **kwargs)


def create_model(name: str, weights: Any = None, num_classes: int | None = None,
                 **kwargs: Any) -> VGG:
    """The net called ``name`` (see :func:`list_models`; Table 1 names like "D" or
    "A-LRN" work too), optionally with ``weights`` (any file vgg reads) and another
    ``num_classes`` (a fresh FC8). Other keyword arguments go to :func:`build`."""
    try:
        arch, bn = resolve_arch(name)
    except KeyError as e:
        raise ConfigError(e.args[0]) from None
    bn = bn or bool(kwargs.pop("batch_norm", False))
    return build(arch, batch_norm=bn, num_classes=num_classes, weights=weights, **kwargs)


def list_models() -> list[str]:
    """The names :func:`create_model` takes: torchvision's (vgg11 ... vgg19_bn) and the
    paper's other nets (vgg11_lrn = A-LRN, vgg16_c = C, vgg13_5x5 = the 5x5 net of
    Sect. 4.1), with _bn variants (none for A-LRN: LRN and batch norm both normalise)."""
    names = []
    for alias, arch in ALIASES.items():
        names.append(alias)
        if arch != "A-LRN":
            names.append(alias + "_bn")
    return sorted(names)


def vgg11(**kwargs: Any) -> VGG:
    return build("A", **kwargs)


def vgg11_bn(**kwargs: Any) -> VGG:
    return build("A", batch_norm=True, **kwargs)


def vgg13(**kwargs: Any) -> VGG:
    return build("B", **kwargs)


def vgg13_bn(**kwargs: Any) -> VGG:
    return build("B", batch_norm=True, **kwargs)


def vgg16(**kwargs: Any) -> VGG:
    return build("D", **kwargs)


def vgg16_bn(**kwargs: Any) -> VGG:
    return build("D", batch_norm=True, **kwargs)


def vgg19(**kwargs: Any) -> VGG:
    return build("E", **kwargs)


def vgg19_bn(**kwargs: Any) -> VGG:
    return build("E", batch_norm=True, **kwargs)
