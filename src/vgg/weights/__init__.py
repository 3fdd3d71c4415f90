"""Weights from elsewhere, each format a module that ends in a :class:`vgg.Checkpoint`:

- :mod:`.statedict`: torchvision state dicts (same keys as ours, so mostly validation) and
  timm VGG checkpoints (head stored as convs ``pre_logits.fc1`` / ``pre_logits.fc2`` and a
  linear ``head.fc``), the torchvision-layout conversions of the Caffe nets;
- :mod:`.caffe`: the authors' Caffe ``.caffemodel`` files, read without Caffe;
- :mod:`.keras`: Keras's HDF5 ports (HWIO kernels, a channels-last FC1 permuted to torch's
  order);
- :mod:`.safetensors`: safetensors files, vgg's own exports included;
- :mod:`.layout` (our state-dict layout, config inference), :mod:`.classes` (ImageNet's
  class names), :mod:`.sniff` (a file's kind from its first bytes);
- :mod:`.load`: :func:`read_weights` (any file, ``vgg convert``) and :func:`open_weights`,
  the facade every command uses (``vgg.load_checkpoint``);
- :mod:`.pretrained`: a Table 1 net with a file's weights (the builders' ``weights=``).

Caffe and Keras nets expect BGR 0..255 inputs with the mean [103.939, 116.779, 123.68]
subtracted; the model carries that preprocessing, so a user always feeds RGB. Files are
read from local paths only, safely (``weights_only=True``; protobuf and HDF5 are parsed as
data); nothing is downloaded. Weights for elsewhere (safetensors, ONNX) are written by
:mod:`vgg.export`; its functions are re-exported here.
"""

from ..export import SAFETENSORS_FORMAT, export_onnx, export_safetensors
from .caffe import caffe_state_dict, read_caffemodel
from .classes import ClassesArg, imagenet_classes, read_class_names
from .keras import keras_state_dict, read_keras_h5
from .layout import FEATURES_ONLY_CROP, StateDict, infer_config
from .load import (CAFFE_TRAIN_SCALE, TORCHVISION_TRAIN_SCALE, describe_source, load_weights,
                   open_model, open_weights, read_weights, state_dict_checkpoint)
from .pretrained import WeightsArg, pretrained
from .safetensors import load_safetensors
from .sniff import FORMATS, sniff_format
from .statedict import (TIMM_KEYS, bgr_to_rgb, from_caffe, from_timm, from_torchvision,
                        mark_caffe, read_state_dict, timm_to_torchvision, to_timm)

__all__ = [
    "CAFFE_TRAIN_SCALE", "FEATURES_ONLY_CROP", "FORMATS", "SAFETENSORS_FORMAT", "TIMM_KEYS",
    "TORCHVISION_TRAIN_SCALE", "ClassesArg", "StateDict", "WeightsArg", "bgr_to_rgb",
    "caffe_state_dict", "describe_source", "export_onnx", "export_safetensors", "from_caffe",
    "from_timm", "from_torchvision", "imagenet_classes", "infer_config", "keras_state_dict",
    "load_safetensors", "load_weights", "mark_caffe", "open_model", "open_weights",
    "pretrained", "read_caffemodel", "read_class_names", "read_keras_h5", "read_state_dict",
    "read_weights", "sniff_format", "state_dict_checkpoint", "timm_to_torchvision", "to_timm",
]
