"""The paper's initialisation (Sect. 3.1): N(0, 0.01) and its scale-aware form for
scaled-down nets (SPEC 6b), Glorot, He (torchvision's), and pre-initialisation of a deeper
net from a trained net A.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from .errors import ConfigError
from .layers import NetShape, _VGGBase, last_channels, layer_specs

INIT_SCHEMES = ("gaussian", "gaussian-scaled", "glorot", "kaiming")
PAPER_INIT_STD = 0.01  # "10^-2 variance" read as std 0.01 (MatConvNet's reading)
LITERAL_INIT_STD = 0.1  # the literal reading: variance 1e-2 -> std 0.1

# The full-size net of Table 1 / Sect. 2.1 that a scaled-down net stands for.
PAPER_SHAPE = {"width": 1.0, "fc_width": 4096, "crop": 224}


def fan_ins(config: NetShape) -> dict[str, tuple[int, int]]:
    """Per weight layer (``conv1_1`` ... ``fc6``, ``fc7``, ``fc8``): its fan-in (inputs per
    output unit: in_channels x kernel^2, or in_features) in ``config`` and in the same layer
    of the paper's full-size net (width 1, FC 4096, crop 224; fc6 = 512 x 7 x 7)."""
    full = dataclasses.replace(NetShape(**config.shape_dict()), **PAPER_SHAPE)
    out: dict[str, tuple[int, int]] = {}
    convs = [s for s in layer_specs(config) if s.kind == "conv"]
    full_convs = [s for s in layer_specs(full) if s.kind == "conv"]
    for s, f in zip(convs, full_convs):
        out[s.name] = (s.in_ch * s.kernel ** 2, f.in_ch * f.kernel ** 2)
    out["fc6"] = (last_channels(config) * config.fc_kernel ** 2,
                  last_channels(full) * full.fc_kernel ** 2)
    out["fc7"] = (config.fc_width, full.fc_width)
    out["fc8"] = (config.fc_width, full.fc_width)
    return out


def scaled_init_stds(config: NetShape, std: float = PAPER_INIT_STD) -> dict[str, float]:
    """SPEC 6b: the std of each weight layer under ``init="gaussian-scaled"``,
    ``std x sqrt(full fan-in / fan-in)``, so that every layer of a scaled-down net has the
    gain (fan-in x std^2) its full-size layer has under N(0, std). At the paper's size
    every value is ``std``. At width 1/4 the convs after the first get 2 x std; FC1 of a
    crop-32 net (fan-in 128 against 25088) 14 x std."""
    return {name: std * math.sqrt(full / n) for name, (n, full) in fan_ins(config).items()}


def _layer_stds(model: nn.Module, std: float) -> dict[int, float]:
    """``id(weight layer) -> std`` of :func:`scaled_init_stds` for a VGG net."""
    if not (isinstance(model, _VGGBase) and hasattr(model, "classifier")):  # a VGG
        raise ConfigError("init 'gaussian-scaled' needs a VGG net (it scales each layer by "
                          "its fan-in in the paper's full-size net)")
    stds = scaled_init_stds(model.config, std)
    out = {id(model.features[i]): stds[name] for name, i in model.layer_names.items()
           if name.startswith("conv")}
    for name, i in (("fc6", 0), ("fc7", 3), ("fc8", 6)):
        out[id(model.classifier[i])] = stds[name]
    return out


def init_weights(model: nn.Module, scheme: str = "gaussian", std: float = PAPER_INIT_STD,
                 generator: torch.Generator | None = None) -> None:
    """Sect. 3.1 initialisation of every conv and linear layer; biases zero.

    ``gaussian``: N(0, std) with std 0.01 by default (use ``LITERAL_INIT_STD`` = 0.1 for the
    literal "variance 1e-2" reading); ``gaussian-scaled``: the same with each layer's std
    multiplied by sqrt(full-size fan-in / its fan-in) (:func:`scaled_init_stds`, SPEC 6b),
    so a scaled-down net's layers keep the full-size layers' gains (identical to
    ``gaussian`` at the paper's size); ``glorot``: Glorot & Bengio 2010 (uniform), which
    the authors found trains deep nets without pre-training; ``kaiming``: He et al. 2015
    (normal, fan-out, ReLU gain) for the convs and N(0, 0.01) for the FC layers, exactly
    torchvision's scheme (He init on FC8, with only ``num_classes`` fan-out, makes the
    initial logits explode). Batch norm: weight 1, bias 0.
    """
    if scheme not in INIT_SCHEMES:
        raise ConfigError(f"unknown init scheme {scheme!r}; choose from {INIT_SCHEMES}")
    if not std > 0:
        raise ConfigError(f"init std must be > 0, got {std}")
    scaled = _layer_stds(model, std) if scheme == "gaussian-scaled" else {}
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            with torch.no_grad():
                if scheme == "gaussian":
                    m.weight.normal_(0.0, std, generator=generator)
                elif scheme == "gaussian-scaled":
                    m.weight.normal_(0.0, scaled[id(m)], generator=generator)
                elif scheme == "glorot":
                    nn.init.xavier_uniform_(m.weight, generator=generator)
                elif isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu",
                                            generator=generator)
                else:
                    m.weight.normal_(0.0, PAPER_INIT_STD, generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _conv_names(model: _VGGBase) -> list[str]:
    return [n for n, i in sorted(model.layer_names.items(), key=lambda t: t[1])
            if n.startswith("conv")]


def init_from(model: _VGGBase, source: _VGGBase, n_conv: int = 4) -> list[str]:
    """Sect. 3.1 pre-initialisation: copy the first ``n_conv`` conv layers and the three FC
    layers of a trained shallower net (net A) into ``model``; the other layers keep their
    random init. Returns the names of the copied layers.

    A's first four convs are conv1_1, conv2_1, conv3_1, conv3_2; they are copied to the
    layers of the same name in the deeper net (the only placement where the shapes agree
    for B, C, D and E). Raises ``ConfigError`` naming the layer when a shape differs.
    """
    copied: list[str] = []
    src_convs = _conv_names(source)[:n_conv]
    pairs: list[tuple[str, nn.Module, nn.Module]] = []
    for name in src_convs:
        if name not in model.layer_names:
            raise ConfigError(f"cannot initialise {model.config.name} from "
                              f"{source.config.name}: it has no layer {name}")
        pairs.append((name, source.features[source.layer_names[name]],
                      model.features[model.layer_names[name]]))
        bn = "bn" + name[4:]
        if bn in source.layer_names and bn in model.layer_names:
            pairs.append((bn, source.features[source.layer_names[bn]],
                          model.features[model.layer_names[bn]]))
    for name, idx in (("fc6", 0), ("fc7", 3), ("fc8", 6)):
        pairs.append((name, source.classifier[idx], model.classifier[idx]))
    for name, src, dst in pairs:  # check every shape before changing anything
        s_sd, d_sd = src.state_dict(), dst.state_dict()
        for key, value in s_sd.items():
            if key not in d_sd or d_sd[key].shape != value.shape:
                got = tuple(d_sd[key].shape) if key in d_sd else None
                raise ConfigError(
                    f"cannot initialise {model.config.name} from {source.config.name}: "
                    f"{name}.{key} has shape {got} in the target but {tuple(value.shape)} in "
                    f"the source (width, fc_width, crop and classes must match)")
    with torch.no_grad():
        for name, src, dst in pairs:
            dst.load_state_dict(src.state_dict())
            copied.append(name)
    return copied

