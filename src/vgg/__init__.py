"""vgg: the system of "Very Deep Convolutional Networks for Large-Scale Image Recognition"
(Simonyan & Zisserman, ICLR 2015), as a PyTorch library and command-line tool."""

from .archs import ARCHS, resolve_arch
from .checkpoint import Checkpoint, load_checkpoint, load_model, save_checkpoint
from .errors import VggError
from .model import (VGG, VGGConfig, VGGFullyConv, build, count_params, init_from, init_weights,
                    vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn)
from .preprocess import Preprocess

__version__ = "0.1.0"

__all__ = [
    "ARCHS", "VGG", "Checkpoint", "Preprocess", "VGGConfig", "VGGFullyConv", "VggError",
    "build", "count_params", "init_from", "init_weights", "load_checkpoint", "load_model",
    "resolve_arch", "save_checkpoint", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16",
    "vgg16_bn", "vgg19", "vgg19_bn",
]
