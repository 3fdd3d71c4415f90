"""A Table 1 net with the weights of any file vgg reads: what ``vgg.vgg16(weights=...)``,
``vgg.build(..., weights=...)`` and ``vgg.create_model`` return."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence

import torch

from ..archs import ALIASES, resolve_arch
from ..errors import CheckpointError, ConfigError
from ..model import PAPER_INIT_STD, VGG, build
from ..preprocess import Preprocess
from .layout import StateDict
from .load import open_weights, state_dict_checkpoint

log = logging.getLogger(__name__)

WeightsArg = StateDict | str | os.PathLike[str]


def pretrained(weights: WeightsArg, arch: str, batch_norm: bool = False, *,
               num_classes: int | None = None, classes: Sequence[str] | None = None,
               width: float | None = None, fc_width: int | None = None,
               crop: int | None = None, dropout: float = 0.5,
               preprocess: Preprocess | None = None, init: str = "gaussian",
               init_std: float = PAPER_INIT_STD, generator: torch.Generator | None = None,
               head: str = "classes") -> VGG:
    """Net ``arch`` with the weights of any file vgg reads (or a torchvision/timm state
    dict): what ``vgg.vgg16(weights=...)`` and ``vgg.create_model`` return (train mode,
    like a freshly built net).

    The file must hold this architecture (else ``CheckpointError`` naming what it holds);
    ``width``, ``fc_width`` and ``crop``, when given, must match its shapes. A different
    ``num_classes`` (or ``classes`` of another length, or a box ``head``) replaces FC8 with
    a fresh layer, as for fine-tuning. A features-only file (Keras ``_notop``) fills the
    conv layers; FC6-FC8 are built from ``fc_width`` (4096), ``crop`` (224) and
    ``num_classes`` (1000) and initialised by ``init``. The preprocessing is the weights'
    own unless ``preprocess`` is given.
    """
    try:
        want, bn = resolve_arch(arch)
    except KeyError as e:
        raise ConfigError(e.args[0]) from None
    bn = bn or batch_norm
    if isinstance(weights, (str, os.PathLike)):
        ck, where = open_weights(weights), str(weights)
    else:
        ck, where = state_dict_checkpoint(weights, arch=want, batch_norm=bn), "state dict"
    c = ck.config
    if (c.arch, c.batch_norm) != (want, bn):
        name = next((a for a, v in ALIASES.items() if v == c.arch), c.arch)
        name += "_bn" if c.batch_norm else ""
        raise CheckpointError(f"{where} holds a {c.name} net, not {want}"
                              f"{'-BN' if bn else ''}: use vgg.create_model({name!r}, "
                              f"weights=...)")
    features_only = bool(ck.meta.get("features_only"))
    given = {"width": width} if features_only else \
        {"width": width, "fc_width": fc_width, "crop": crop}
    for key, value in given.items():
        if value is not None and value != getattr(c, key):
            raise ConfigError(f"{key}={value} but the weights in {where} have "
                              f"{key}={getattr(c, key)}")
    n = num_classes if num_classes is not None else (len(classes) if classes is not None
                                                     else None)
    if features_only:
        model = build(want, batch_norm=bn, num_classes=n, width=c.width,
                      fc_width=fc_width, crop=crop, dropout=dropout, init=init,
                      init_std=init_std, classes=classes,
                      preprocess=preprocess or ck.preprocess, generator=generator, head=head)
        feats = {k[len("features."):]: v for k, v in ck.state_dict.items()
                 if k.startswith("features.")}
        model.features.load_state_dict(feats)
        log.info("%s has convolutional layers only: fc6-fc8 start from %s init", where, init)
        return model
    ck.config = dataclasses.replace(c, dropout=dropout)
    model = ck.build_model()
    if preprocess is not None:
        model.preprocess = preprocess
    if head != "classes" or (n is not None and n != c.num_classes):
        model.reset_classifier(n if n is not None else c.num_classes, classes, std=init_std,
                               head=head)
        log.info("%s: fc8 replaced by a fresh layer with %d outputs", where,
                 model.config.out_features)
    elif classes is not None:
        model.classes, model.class_names = [str(x) for x in classes], None
    return model

