"""vgg: the system of "Very Deep Convolutional Networks for Large-Scale Image Recognition"
(Simonyan & Zisserman, ICLR 2015), as a PyTorch library and command-line tool.

The sub-packages ``vgg.weights``, ``vgg.eval``, ``vgg.data``, ``vgg.train``,
``vgg.localize`` and ``vgg.perceptual`` are attributes of ``vgg`` (imported on first use,
so ``import vgg`` stays quick). So are ``vgg.load_checkpoint`` / ``vgg.open_weights`` and
``vgg.load_model``, which open any weights file vgg reads (:func:`vgg.weights.open_weights`,
:func:`vgg.weights.open_model`).
"""

import importlib
from typing import TYPE_CHECKING, Any

from .archs import ARCHS, resolve_arch
from .builders import (build, create_model, list_models, vgg11, vgg11_bn, vgg13, vgg13_bn,
                       vgg16, vgg16_bn, vgg19, vgg19_bn)
from .checkpoint import Checkpoint, save_checkpoint
from .errors import VggError
from .model import VGG, VGGConfig, VGGFullyConv, count_params, init_from, init_weights
from .perceptual import PerceptualLoss
from .preprocess import Preprocess

if TYPE_CHECKING:
    from .weights.load import open_model as load_model
    from .weights.load import open_weights
    from .weights.load import open_weights as load_checkpoint

__version__ = "0.1.0"

_SUBMODULES = ("data", "eval", "localize", "perceptual", "train", "weights")
# name here -> its function in vgg.weights (the facade that sniffs a file and dispatches)
_FROM_WEIGHTS = {"load_checkpoint": "open_weights", "open_weights": "open_weights",
                 "load_model": "open_model"}

__all__ = [
    "ARCHS", "VGG", "Checkpoint", "PerceptualLoss", "Preprocess", "VGGConfig", "VGGFullyConv",
    "VggError", "build", "count_params", "create_model", "init_from", "init_weights",
    "list_models", "load_checkpoint", "load_model", "open_weights", "resolve_arch",
    "save_checkpoint", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19",
    "vgg19_bn",
]


def __getattr__(name: str) -> Any:
    """``vgg.weights``, ``vgg.eval``, ..., ``vgg.load_checkpoint`` imported when first used."""
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _FROM_WEIGHTS:
        return getattr(importlib.import_module(f"{__name__}.weights"), _FROM_WEIGHTS[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_SUBMODULES) + list(_FROM_WEIGHTS))
