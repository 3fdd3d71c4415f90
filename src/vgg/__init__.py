"""vgg: the system of "Very Deep Convolutional Networks for Large-Scale Image Recognition"
(Simonyan & Zisserman, ICLR 2015), as a PyTorch library and command-line tool.

The sub-packages ``vgg.weights``, ``vgg.eval``, ``vgg.data``, ``vgg.train``,
``vgg.localize`` and ``vgg.perceptual`` are attributes of ``vgg`` (imported on first use,
so ``import vgg`` stays quick).
"""

import importlib
from typing import Any

from .archs import ARCHS, resolve_arch
from .checkpoint import Checkpoint, load_checkpoint, load_model, save_checkpoint
from .errors import VggError
from .model import (VGG, VGGConfig, VGGFullyConv, build, count_params, create_model, init_from,
                    init_weights, list_models, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16,
                    vgg16_bn, vgg19, vgg19_bn)
from .perceptual import PerceptualLoss
from .preprocess import Preprocess

__version__ = "0.1.0"

_SUBMODULES = ("data", "eval", "localize", "perceptual", "train", "weights")

__all__ = [
    "ARCHS", "VGG", "Checkpoint", "PerceptualLoss", "Preprocess", "VGGConfig", "VGGFullyConv",
    "VggError", "build", "count_params", "create_model", "init_from", "init_weights",
    "list_models", "load_checkpoint", "load_model", "resolve_arch", "save_checkpoint",
    "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
]


def __getattr__(name: str) -> Any:
    """``vgg.weights``, ``vgg.eval``, ... imported when first used."""
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_SUBMODULES))
