"""The layers of the VGG nets of Table 1 and what every form of a net shares: the shape
settings (:class:`NetShape`, :class:`VGGConfig`), the conv stack (:func:`layer_specs`,
:func:`make_layers`), layer names, and :class:`_VGGBase` (memory format, class names,
``predict``, ``extract``) under both the FC net (:class:`vgg.model.VGG`) and its
fully-convolutional form (:class:`vgg.fully_conv.VGGFullyConv`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .archs import ARCHS, parse_token, resolve_arch
from .errors import ConfigError
from .preprocess import Preprocess, check_input_range
from .settings import MAX_SIDE, check_bool, check_choice, check_float, check_int

# Sect. 2.1 / Krizhevsky et al. 2012: n=5, alpha=1e-4, beta=0.75, k=2 in
# b = a / (k + alpha * sum a^2)^beta. torch's LocalResponseNorm divides alpha by n.
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0

# Default memory format of weights and activations. Channels-last (NHWC) lets oneDNN (CPU)
# and cuDNN (GPU) run the 3x3 convs without layout reorders: on a 2-core CPU VGG-16
# inference is about 1.4x faster than with NCHW (docs/benchmarks.md). Set
# ``model.memory_format = torch.contiguous_format`` to turn it off for one model.
DEFAULT_MEMORY_FORMAT = torch.channels_last
MAX_WIDTH = 16.0         # conv channels up to 16 x 512
MAX_FC_WIDTH = 65_536
MAX_CLASSES = 1_000_000


HEADS = ("classes", "scr", "pcr")

@dataclass(frozen=True)
class NetShape:
    """The settings that fix a net's layers, shared by :class:`VGGConfig` and the
    training config. Scaled-down nets are the same code: ``width`` multiplies conv
    channels, ``fc_width`` replaces 4096, ``crop`` (a multiple of 32) replaces 224."""

    arch: str = "D"
    batch_norm: bool = False
    width: float = 1.0
    fc_width: int = 4096
    crop: int = 224
    dropout: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.arch, str):
            raise ConfigError(f"arch (--arch) must be a name like D or vgg16, got {self.arch!r}")
        check_bool("batch_norm", self.batch_norm)
        if self.arch not in ARCHS:
            try:
                arch, bn = resolve_arch(self.arch)
            except KeyError as e:
                raise ConfigError(e.args[0]) from None
            object.__setattr__(self, "arch", arch)
            object.__setattr__(self, "batch_norm", self.batch_norm or bn)
        crop = check_int("crop", self.crop, 32, MAX_SIDE)
        if crop % 32:
            raise ConfigError(f"crop (--crop) must be a positive multiple of 32 (five 2x2 "
                              f"pools), got {crop}")
        object.__setattr__(self, "crop", crop)
        object.__setattr__(self, "width", check_float("width", self.width, 0.0, MAX_WIDTH,
                                                      lo_open=True))
        object.__setattr__(self, "fc_width", check_int("fc_width", self.fc_width, 1,
                                                       MAX_FC_WIDTH))
        object.__setattr__(self, "dropout", check_float("dropout", self.dropout, 0.0, 1.0,
                                                        hi_open=True))

    @property
    def name(self) -> str:
        return self.arch + ("-BN" if self.batch_norm else "")

    @property
    def fc_kernel(self) -> int:
        """Side of the last feature map at the training crop: FC1 becomes a k x k conv."""
        return self.crop // 32

    def channels(self, c: int) -> int:
        return max(1, int(round(c * self.width)))

    def shape_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(NetShape)}


@dataclass(frozen=True)
class VGGConfig(NetShape):
    """Everything that fixes a net: its layers (:class:`NetShape`), the number of classes
    and what the last FC layer predicts: ``head="classes"`` (class scores, Sect. 2),
    ``"scr"`` (one box for all classes, 4 outputs) or ``"pcr"`` (a box per class, 4 x K
    outputs; Appendix A)."""

    num_classes: int = 1000
    head: str = "classes"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "num_classes", check_int("num_classes", self.num_classes, 1,
                                                          MAX_CLASSES))
        check_choice("head", self.head, HEADS)

    @property
    def out_features(self) -> int:
        """Outputs of the last layer: K class scores, 4 box numbers (SCR) or 4K (PCR)."""
        return {"classes": self.num_classes, "scr": 4, "pcr": 4 * self.num_classes}[self.head]

    @property
    def is_classifier(self) -> bool:
        return self.head == "classes"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VGGConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)


class LocalResponseNorm(nn.LocalResponseNorm):
    """AlexNet's LRN with the paper's parameters (Sect. 2.1, A-LRN).

    ``b_c = a_c / (k + alpha * sum_{c'=c-n/2}^{c+n/2} a_{c'}^2)^beta`` with n=5,
    alpha=1e-4, beta=0.75, k=2. ``torch.nn.LocalResponseNorm`` computes
    ``alpha / n * sum``, so it is given ``alpha * n = 5e-4`` to compute the paper's layer.
    """

    def __init__(self) -> None:
        super().__init__(size=LRN_SIZE, alpha=LRN_ALPHA * LRN_SIZE, beta=LRN_BETA, k=LRN_K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The windowed sum over channels as a 1x1 convolution with a band of ones: the
        # same numbers as torch's avg_pool3d formulation (to float round-off) at a third
        # of its time on a CPU. Computed in fp32 (or fp64) and returned in the input's
        # dtype: torch has no bf16 CPU kernel for the pooled form (a bf16 autocast or bf16
        # inference pass of A-LRN failed), and a sum of squares is where half precision
        # loses most.
        dtype = x.dtype
        with torch.autocast(x.device.type, enabled=False):
            a = x.to(torch.promote_types(dtype, torch.float32))
            c = torch.arange(a.shape[1], device=a.device)
            offset = c[None, :] - c[:, None]  # channel c' - c
            band = ((offset >= -(self.size // 2)) & (offset <= (self.size - 1) // 2))
            window = torch.nn.functional.conv2d(a * a, band.to(a.dtype)[:, :, None, None])
            out = a * (window * (self.alpha / self.size) + self.k).pow(-self.beta)
        return out.to(dtype)


@dataclass(frozen=True)
class LayerSpec:
    """One layer of the conv stack, with its paper name (``conv3_1``, ``bn3_1``,
    ``relu3_1``, ``pool3``, ``norm1``), kind (conv, bn, relu, pool, lrn), kernel side and
    channels in and out."""

    name: str
    kind: str
    kernel: int
    in_ch: int
    out_ch: int


def layer_specs(config: NetShape) -> list[LayerSpec]:
    """The conv stack of ``config`` as data: the one walk over Table 1 that the module
    builder (:func:`make_layers`) and the summary (``vgg.summary``) share."""
    specs: list[LayerSpec] = []
    in_ch, block, conv_in_block = 3, 1, 0
    for token in ARCHS[config.arch]:
        kind, kernel, channels = parse_token(token)
        if kind == "pool":
            specs.append(LayerSpec(f"pool{block}", "pool", 2, in_ch, in_ch))
            block, conv_in_block = block + 1, 0
        elif kind == "lrn":
            specs.append(LayerSpec(f"norm{block}", "lrn", LRN_SIZE, in_ch, in_ch))
        else:
            conv_in_block += 1
            tag = f"{block}_{conv_in_block}"
            out_ch = config.channels(channels)
            specs.append(LayerSpec(f"conv{tag}", "conv", kernel, in_ch, out_ch))
            if config.batch_norm:
                specs.append(LayerSpec(f"bn{tag}", "bn", 0, out_ch, out_ch))
            specs.append(LayerSpec(f"relu{tag}", "relu", 0, out_ch, out_ch))
            in_ch = out_ch
    return specs


def make_layers(config: NetShape) -> tuple[nn.Sequential, dict[str, int]]:
    """The conv stack and a map from paper names (``conv3_1``, ``relu3_1``, ``pool3``,
    ``norm1``) to indices in it."""
    layers: list[nn.Module] = []
    for s in layer_specs(config):
        if s.kind == "conv":
            layers.append(nn.Conv2d(s.in_ch, s.out_ch, kernel_size=s.kernel,
                                    padding=s.kernel // 2))
        elif s.kind == "bn":
            layers.append(nn.BatchNorm2d(s.out_ch))
        elif s.kind == "relu":
            layers.append(nn.ReLU(inplace=True))
        elif s.kind == "pool":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers.append(LocalResponseNorm())
    names = {s.name: i for i, s in enumerate(layer_specs(config))}
    return nn.Sequential(*layers), names


def last_channels(config: NetShape) -> int:
    """Channels of the last conv (pool5's output)."""
    return [s for s in layer_specs(config) if s.kind == "conv"][-1].out_ch


# Indices in ``classifier`` and their paper-style names (Caffe's fc6/fc7/fc8).
HEAD_NAMES = {"fc6": 0, "relu6": 1, "fc7": 3, "relu7": 4, "fc8": 6}


def _check_names(model: _VGGBase, layers: Iterable[str]) -> list[str]:
    layers = list(layers)
    known = list(model.layer_names) + list(HEAD_NAMES)
    bad = [n for n in layers if n not in known]
    if bad:
        raise KeyError(f"unknown layer name(s) {bad} for {model.config.name}; known: {known}")
    return layers


class _VGGBase(nn.Module):
    config: VGGConfig
    features: nn.Sequential
    layer_names: dict[str, int]
    head: nn.Sequential
    classes: list[str] | None
    preprocess: Preprocess
    _memory_format: torch.memory_format = DEFAULT_MEMORY_FORMAT

    @property
    def memory_format(self) -> torch.memory_format:
        """Layout of conv weights and activations (channels-last by default). Setting it
        converts the weights and makes ``forward`` convert its input."""
        return self._memory_format

    @memory_format.setter
    def memory_format(self, fmt: torch.memory_format) -> None:
        self._memory_format = fmt
        self.to(memory_format=fmt)

    def _init_common(self, config: VGGConfig, classes: Sequence[str] | None,
                     preprocess: Preprocess | None,
                     class_names: Sequence[str] | None = None) -> None:
        if classes is not None and len(classes) != config.num_classes:
            raise ConfigError(f"{len(classes)} class names given for a net with "
                              f"{config.num_classes} classes")
        self.config = config
        self.classes = list(classes) if classes is not None else None
        self.class_names = None
        self.set_class_names(class_names)
        self.preprocess = preprocess if preprocess is not None else Preprocess.paper()

    def set_class_names(self, names: Sequence[str] | None) -> None:
        """Human-readable names aligned with ``classes`` (e.g. "tench" for the id
        "n01440764"), for predictions; ``classes`` stay the ids datasets are matched by."""
        if names is not None:
            if self.classes is None or len(names) != len(self.classes):
                raise ConfigError(f"{len(names)} display names for "
                                  f"{len(self.classes or [])} classes")
            names = [str(n) for n in names]
            if names == self.classes:
                names = None
        self.class_names = list(names) if names is not None else None

    def display_names(self) -> list[str]:
        """What to show a person for each output class."""
        if self.class_names is not None:
            return list(self.class_names)
        if self.classes is not None:
            return list(self.classes)
        return [str(i) for i in range(self.config.num_classes)]

    def _to_memory_format(self, x: torch.Tensor) -> torch.Tensor:
        # (N, 3, H, W) keeps its logical shape; only the strides change (NHWC in memory).
        if x.dim() == 4 and x.device.type in ("cpu", "cuda"):
            return x.contiguous(memory_format=self.memory_format)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised -> (N, C5, H/32, W/32) after pool5."""
        return self.features(self._to_memory_format(x))

    @torch.inference_mode()
    def predict(self, images: torch.Tensor, check_range: bool = True,
                precision: str = "fp32") -> torch.Tensor:
        """The default inference path: (N, 3, H, W) RGB in 0..255 (uint8 or float, on the
        model's device) -> soft-max posteriors, (N, num_classes) for the FC net or
        (N, num_classes, h, w) for the fully-convolutional one. Applies
        ``self.preprocess``, runs in eval mode under ``torch.inference_mode`` (no
        autograd bookkeeping) and restores the previous train/eval mode.

        ``precision``: "fp32" (default), "bf16", "fp16" or "auto" (bf16 where the hardware
        runs it natively, see ``vgg.precision``): the network runs in that precision (on a
        CPU on a cached bf16 copy of the weights; on CUDA under autocast), the soft-max in
        fp32, so the posteriors are float32 whatever the network's precision. On a CPU
        with AVX512-BF16 bf16 is about 2.1x faster; posteriors move by ~1e-3.

        Whatever the net was trained on (the paper's mean subtraction, torchvision's 0..1
        mean/std, Caffe's BGR), ``images`` are 0..255: a float batch in 0..1, or one
        normalised already, would give confident wrong answers, so it is refused with
        ``InputRangeError`` saying what is expected (``vgg.preprocess.check_input_range``;
        ``check_range=False`` skips the check)."""
        from .precision import resolve_precision

        if check_range:
            check_input_range(images, f"{self.config.name}.predict")
        if not self.config.is_classifier:
            raise ConfigError(f"this is a localisation net ({self.config.head.upper()} head: "
                              f"its outputs are boxes, not class scores); use "
                              f"vgg.localize to predict boxes")
        prec = resolve_precision(precision, next(self.parameters()).device)
        was_training = self.training
        self.eval()
        try:
            with prec.running(self) as net:
                out = net(net.preprocess(images, dtype=next(net.parameters()).dtype))
                if out.dtype in (torch.bfloat16, torch.float16):
                    out = out.float()
                return torch.softmax(out, dim=1)
        finally:
            self.train(was_training)

    def extract(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Named intermediate activations, e.g. ``["relu1_2", "relu3_3", "relu5_3"]`` for a
        perceptual loss, or ``["relu7"]`` for the 4096-D penultimate feature. Stops after
        the deepest layer asked for. ReLU outputs are returned as computed (the ReLUs are
        in-place, so each activation is cloned before the next layer can overwrite it)."""
        wanted = _check_names(self, layers)
        x = self._to_memory_format(x)
        conv_idx = {self.layer_names[n]: n for n in wanted if n in self.layer_names}
        head_idx = {HEAD_NAMES[n]: n for n in wanted if n in HEAD_NAMES}
        out: dict[str, torch.Tensor] = {}
        last = max(conv_idx) if conv_idx else -1
        steps = self._feature_steps()
        for i, layer in enumerate(steps):
            if i > last and not head_idx:
                break
            x = layer(x)
            if i in conv_idx:
                out[conv_idx[i]] = x.clone() if i + 1 < len(steps) else x
        if head_idx:
            x = self._head_input(x)
            for i, layer in enumerate(self.head):
                if i > max(head_idx):
                    break
                x = layer(x)
                if i in head_idx:
                    out[head_idx[i]] = x.clone()
        return {n: out[n] for n in wanted}

    def _head_input(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _feature_steps(self) -> Sequence[Callable[[torch.Tensor], torch.Tensor]]:
        """The conv stack's layers as ``extract`` runs them, one per entry of ``features``."""
        return self.features

