"""The VGG networks of Table 1: the classification net :class:`VGG` and its builder.
The layers and what every form shares are in :mod:`vgg.layers`, the fully-convolutional
form (Sect. 3.2, dense at any output stride) in :mod:`vgg.fully_conv`, the initialisation
schemes and pre-initialisation from net A (Sect. 3.1) in :mod:`vgg.init`; their public
names are importable from here too.

State-dict keys follow torchvision (``features.N.*``, ``classifier.{0,3,6}.*``) so its
published weights load without renaming.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from .errors import ConfigError
from .fully_conv import (DENSE_STRIDES, NET_STRIDE, POSITIONS_PER_WINDOW, AtrousFeatures,
                         LinearAsConv, VGGFullyConv, check_dense_stride, default_dense_stride,
                         resolve_dense_stride, shift_and_stitch)
from .init import (INIT_SCHEMES, LITERAL_INIT_STD, PAPER_INIT_STD, PAPER_SHAPE, fan_ins,
                   init_from, init_weights, scaled_init_stds)
from .layers import (DEFAULT_MEMORY_FORMAT, HEAD_NAMES, HEADS, LRN_ALPHA, LRN_BETA, LRN_K,
                     LRN_SIZE, MAX_CLASSES, MAX_FC_WIDTH, MAX_WIDTH, LayerSpec,
                     LocalResponseNorm, NetShape, VGGConfig, _VGGBase, last_channels,
                     layer_specs, make_layers)
from .preprocess import Preprocess

__all__ = [
    "DEFAULT_MEMORY_FORMAT", "DENSE_STRIDES", "HEADS", "HEAD_NAMES", "INIT_SCHEMES",
    "LITERAL_INIT_STD", "LRN_ALPHA", "LRN_BETA", "LRN_K", "LRN_SIZE", "MAX_CLASSES",
    "MAX_FC_WIDTH", "MAX_WIDTH", "NET_STRIDE", "PAPER_INIT_STD", "PAPER_SHAPE",
    "POSITIONS_PER_WINDOW", "AtrousFeatures", "LayerSpec", "LinearAsConv",
    "LocalResponseNorm", "NetShape", "VGG", "VGGConfig", "VGGFullyConv", "build",
    "check_dense_stride", "count_params", "default_dense_stride", "fan_ins", "init_from",
    "init_weights", "last_channels", "layer_specs", "make_layers", "resolve_dense_stride",
    "scaled_init_stds", "shift_and_stitch",
]


class VGG(_VGGBase):
    """The classification net: ``features`` (conv stack) then ``classifier`` (three FC
    layers). Takes a (N, 3, crop, crop) batch normalised by ``self.preprocess``."""

    def __init__(self, config: VGGConfig, classes: Sequence[str] | None = None,
                 preprocess: Preprocess | None = None,
                 class_names: Sequence[str] | None = None) -> None:
        super().__init__()
        self._init_common(config, classes, preprocess, class_names)
        self.features, self.layer_names = make_layers(config)
        k, fc = config.fc_kernel, config.fc_width
        self.classifier = nn.Sequential(
            nn.Linear(last_channels(config) * k * k, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(p=config.dropout),
            nn.Linear(fc, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(p=config.dropout),
            nn.Linear(fc, config.out_features),
        )
        self.to(memory_format=self.memory_format)  # conv weights NHWC (4-D params only)

    @property
    def head(self) -> nn.Sequential:  # type: ignore[override]
        return self.classifier

    def _head_input(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, 1)

    def _check_input(self, x: torch.Tensor) -> None:
        c = self.config.crop
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2:] != (c, c):
            raise ValueError(
                f"{self.config.name} (FC form) takes (N, 3, {c}, {c}) inputs, got "
                f"{tuple(x.shape)}; for other sizes use model.to_fully_conv() (dense "
                f"evaluation, Sect. 3.2)")

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(N, C5, k, k) -> (N, num_classes) logits, or the 4096-D FC7 output (after ReLU
        and dropout) when ``pre_logits``."""
        x = torch.flatten(x, 1)
        return self.classifier[:-1](x) if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, crop, crop) normalised -> (N, K) class scores (pre-soft-max), or box
        numbers for a localisation net (K = ``config.out_features``)."""
        self._check_input(x)
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int, classes: Sequence[str] | None = None,
                         std: float = PAPER_INIT_STD, head: str = "classes") -> None:
        """Replace FC8 (fine-tuning), keeping FC6/FC7: ``num_classes`` class scores, or a box
        regressor (``head="scr"``: 4 outputs, ``"pcr"``: 4 per class; Appendix A). The new
        layer is N(0, std) with zero biases."""
        if classes is not None and len(classes) != num_classes:
            raise ConfigError(f"{len(classes)} class names for {num_classes} classes")
        config = dataclasses.replace(self.config, num_classes=num_classes, head=head)
        old = self.classifier[6]
        new = nn.Linear(old.in_features, config.out_features, device=old.weight.device,
                        dtype=old.weight.dtype)
        nn.init.normal_(new.weight, 0.0, std)
        nn.init.zeros_(new.bias)
        self.classifier[6] = new
        self.config = config
        self.classes = list(classes) if classes is not None else None
        self.class_names = None

    def to_fully_conv(self, stride: int = NET_STRIDE) -> VGGFullyConv:
        """Sect. 3.2: the same net with FC1 applied as a k x k conv (k = crop / 32) and
        FC2/FC3 as 1x1 convs. Nothing is copied: the dense net holds this net and reads
        its current weights at every call, so it follows ``.to()``, ``.double()``,
        ``.cuda()``, ``load_state_dict`` and ``reset_classifier`` of this net.

        ``stride``: the output stride in pixels, a divisor of 32 (SPEC 6b; see
        :func:`default_dense_stride`). 32 is the plain net (five pools of stride 2). A
        finer ``s = 32 / 2^m`` runs the last m pools with stride 1 and dilates every later
        layer ("a trous"; OverFeat's offset max-pooling is its m = 1 case): one pass over
        the whole image, each position seeing its real neighbouring context. Position
        ``(i, j)`` of the map is the crop x crop window at ``(s j, s i)`` (``fcn.window``);
        the positions with ``i, j`` multiples of ``32 / s`` are the stride-32 map's."""
        return VGGFullyConv(self, stride)


def build(arch: str = "D", *, batch_norm: bool = False, num_classes: int | None = None,
          width: float | None = None, fc_width: int | None = None, crop: int | None = None,
          dropout: float = 0.5, init: str = "gaussian", init_std: float = PAPER_INIT_STD,
          classes: Sequence[str] | None = None, preprocess: Preprocess | None = None,
          generator: torch.Generator | None = None, head: str = "classes") -> VGG:
    """Build a Table 1 net. ``arch``: A, A-LRN, B, C, D, E, B-5x5 or an alias (vgg16,
    vgg16_bn, ...). ``num_classes`` defaults to ``len(classes)`` or 1000; ``width``,
    ``fc_width`` and ``crop`` to the paper's 1.0, 4096 and 224. ``head``: "classes", or
    "scr" / "pcr" for a localisation net (Appendix A). Freshly initialised by ``init``;
    ``vgg.build`` (:func:`vgg.builders.build`) also takes ``weights=``."""
    if num_classes is None:
        num_classes = len(classes) if classes is not None else 1000
    config = VGGConfig(arch=arch, batch_norm=batch_norm, num_classes=num_classes,
                       width=1.0 if width is None else width,
                       fc_width=4096 if fc_width is None else fc_width,
                       crop=224 if crop is None else crop, dropout=dropout, head=head)
    with torch.device("meta"):  # skip torch's default init: init_weights sets every weight
        model = VGG(config, classes=classes, preprocess=preprocess)
    model.to_empty(device="cpu")  # keeps the channels-last strides
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
    init_weights(model, init, init_std, generator=generator)
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
