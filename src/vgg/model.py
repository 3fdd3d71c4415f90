"""The VGG networks of Table 1: one module, one builder, the fully-convolutional form
(Sect. 3.2), the paper's initialisation schemes and pre-initialisation from net A (Sect. 3.1).

State-dict keys follow torchvision (``features.N.*``, ``classifier.{0,3,6}.*``) so its
published weights load without renaming.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .archs import ARCHS, parse_token, resolve_arch
from .errors import ConfigError
from .preprocess import Preprocess, check_input_range
from .settings import MAX_SIDE, check_bool, check_choice, check_float, check_int, label

# Sect. 2.1 / Krizhevsky et al. 2012: n=5, alpha=1e-4, beta=0.75, k=2 in
# b = a / (k + alpha * sum a^2)^beta. torch's LocalResponseNorm divides alpha by n.
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0

INIT_SCHEMES = ("gaussian", "gaussian-scaled", "glorot", "kaiming")

# Default memory format of weights and activations. Channels-last (NHWC) lets oneDNN (CPU)
# and cuDNN (GPU) run the 3x3 convs without layout reorders: on a 2-core CPU VGG-16
# inference is about 1.4x faster than with NCHW (docs/benchmarks.md). Set
# ``model.memory_format = torch.contiguous_format`` to turn it off for one model.
DEFAULT_MEMORY_FORMAT = torch.channels_last
PAPER_INIT_STD = 0.01  # "10^-2 variance" read as std 0.01 (MatConvNet's reading)
LITERAL_INIT_STD = 0.1  # the literal reading: variance 1e-2 -> std 0.1
MAX_WIDTH = 16.0         # conv channels up to 16 x 512
MAX_FC_WIDTH = 65_536
MAX_CLASSES = 1_000_000


HEADS = ("classes", "scr", "pcr")

# Five 2x2 pools: the fully-convolutional net's positions are 32 pixels apart. Dense
# application at a finer output stride s = 32 / 2^m removes the stride of the last m pools
# (SPEC 6b); s must divide 32.
NET_STRIDE = 32
DENSE_STRIDES = (1, 2, 4, 8, 16, 32)
# SPEC 6b: at crop 224 a window holds about 7 output positions per side (224 / 32).
POSITIONS_PER_WINDOW = 7


def check_dense_stride(stride: Any) -> int:
    """``stride`` if it is a divisor of 32 (1, 2, 4, 8, 16 or 32), else ``ConfigError``."""
    if isinstance(stride, bool) or not isinstance(stride, int) or stride not in DENSE_STRIDES:
        raise ConfigError(f"{label('dense_stride')} must be a divisor of {NET_STRIDE} "
                          f"({', '.join(map(str, DENSE_STRIDES))}), got {stride!r}")
    return stride


def default_dense_stride(crop: int) -> int:
    """SPEC 6b: the output stride that keeps the paper's geometry at ``crop``, about
    7 positions per window side: the largest divisor of 32 at most ``crop / 7`` (224 -> 32,
    192 -> 16, 128 -> 16, 96 -> 8, 64 -> 8, 32 -> 4).

    Above 224 it stays 32: the net has five pools, so a coarser stride would have to skip
    positions; crop 256 at stride 32 has 8 positions per window side, a little denser than
    the paper's 7."""
    crop = check_int("crop", crop, NET_STRIDE, MAX_SIDE)
    return max(s for s in DENSE_STRIDES if s * POSITIONS_PER_WINDOW <= crop)


def resolve_dense_stride(stride: int | str | None, crop: int) -> int:
    """The output stride at which a net trained at ``crop`` is applied densely: ``None`` or
    ``"auto"`` give :func:`default_dense_stride` (the paper's geometry), anything else must
    be a divisor of 32 (:func:`check_dense_stride`)."""
    if stride is None or stride == "auto":
        return default_dense_stride(crop)
    return check_dense_stride(stride)


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


def _check_names(model: VGG | VGGFullyConv, layers: Iterable[str]) -> list[str]:
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


class LinearAsConv(nn.Module):
    """Layer ``index`` of a classifier (a ``Linear``) applied as a ``kernel`` x ``kernel``
    convolution: the weight (out, C * k * k) is viewed as (out, C, k, k), in the same
    (C, H, W) order as the FC net's flatten. Looks the layer up at every call."""

    def __init__(self, classifier: nn.Sequential, index: int, kernel: int,
                 dilation: int = 1) -> None:
        super().__init__()
        self.classifier = classifier
        self.index = index
        self.kernel = kernel
        self.dilation = dilation

    @property
    def linear(self) -> nn.Linear:
        return self.classifier[self.index]

    @property
    def weight(self) -> torch.Tensor:
        w, k = self.linear.weight, self.kernel
        return w.view(w.shape[0], w.shape[1] // (k * k), k, k)

    @property
    def bias(self) -> torch.Tensor | None:
        return self.linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dilation == 1:
            return nn.functional.conv2d(x, self.weight, self.bias)
        return nn.functional.conv2d(x, self.weight, self.bias, dilation=self.dilation)

    def extra_repr(self) -> str:
        lin = self.linear
        dil = f", dilation {self.dilation}" if self.dilation != 1 else ""
        return f"classifier[{self.index}] {lin.in_features}->{lin.out_features} as " \
               f"{self.kernel}x{self.kernel} conv{dil}"


class AtrousFeatures(nn.Module):
    """The conv stack ``features`` applied at output stride ``stride`` = 32 / 2^m (Sect. 3.2
    dense application at a finer stride, SPEC 6b): the last m max-pools run with stride 1,
    each dilated by the factor accumulated before it (1, 2, 4, ...), and every layer after
    the first of them that has a kernel (3x3, 1x1, 5x5 convs) is dilated by the factor
    accumulated so far, its zero padding scaled alike; BN, ReLU and LRN act per position and
    are unchanged. One pass over the image, the same weights (looked up at every call), no
    copy. The map after layer ``i`` has stride ``min(2^(pools up to i), stride)`` pixels.

    With layer ``i`` of stride 2^p <= ``stride`` the output equals the plain stack's
    exactly (same modules, same calls); the values of a coarser layer that lie on its
    plain grid (every ``2^p / stride``-th position) equal the plain stack's up to float
    round-off, the positions between them are those of the image shifted by multiples of
    ``stride`` pixels."""

    def __init__(self, features: nn.Sequential, stride: int) -> None:
        super().__init__()
        self.features = features
        self.stride = check_dense_stride(stride)
        pools = [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
        m = (NET_STRIDE // self.stride).bit_length() - 1
        self.stride1_pools = frozenset(pools[len(pools) - m:] if m else ())
        dilations, d = [], 1
        for i in range(len(features)):
            dilations.append(d)  # the factor this layer runs with
            if i in self.stride1_pools:
                d *= 2
        self.dilations = tuple(dilations)
        self.out_dilation = d   # FC1 (and any later kernel) runs with this dilation

    def run(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Layer ``i`` of the stack at this stride."""
        layer, d = self.features[i], self.dilations[i]
        if i in self.stride1_pools:
            pool: nn.MaxPool2d = layer  # type: ignore[assignment]
            return nn.functional.max_pool2d(x, pool.kernel_size, stride=1,
                                            padding=pool.padding, dilation=d,
                                            ceil_mode=pool.ceil_mode)
        if d > 1 and isinstance(layer, nn.Conv2d):
            return nn.functional.conv2d(x, layer.weight, layer.bias, layer.stride,
                                        tuple(p * d for p in layer.padding),  # type: ignore
                                        tuple(v * d for v in layer.dilation), layer.groups)
        return layer(x)

    def steps(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        return [functools.partial(self.run, i) for i in range(len(self.features))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(len(self.features)):
            x = self.run(i, x)
        return x

    def extra_repr(self) -> str:
        return f"stride={self.stride}, stride-1 pools at {sorted(self.stride1_pools)}"


class VGGFullyConv(_VGGBase):
    """Fully-convolutional form of a :class:`VGG` (Sect. 3.2, dense evaluation) at output
    stride ``s`` (``stride``, 32 by default): any image with both sides at least ``crop``
    gives a (N, K, H//s - crop/s + 1, W//s - crop/s + 1) score map (K =
    ``config.out_features``: class scores, or box numbers for a localisation net; at
    s = 32 that is H//32 - k + 1). Position (i, j) is the crop x crop window at
    (s j, s i) (:meth:`window`). Made by :meth:`VGG.to_fully_conv`; shares every parameter
    with that net."""

    def __init__(self, net: VGG, stride: int = NET_STRIDE) -> None:
        super().__init__()
        self.net = net
        self.stride = check_dense_stride(stride)
        # stride 32 is the plain stack (net.features itself); finer strides run it a trous
        self.atrous = AtrousFeatures(net.features, stride) if stride != NET_STRIDE else None
        dil = NET_STRIDE // self.stride
        k = net.config.fc_kernel
        cls = net.classifier
        self.head = nn.Sequential(LinearAsConv(cls, 0, k, dil), cls[1], cls[2],
                                  LinearAsConv(cls, 3, 1), cls[4], cls[5],
                                  LinearAsConv(cls, 6, 1))

    # The facts of the FC net, always current.
    @property
    def config(self) -> VGGConfig:  # type: ignore[override]
        return self.net.config

    @property
    def features(self) -> nn.Sequential:  # type: ignore[override]
        return self.net.features

    @property
    def layer_names(self) -> dict[str, int]:  # type: ignore[override]
        return self.net.layer_names

    @property
    def classes(self) -> list[str] | None:  # type: ignore[override]
        return self.net.classes

    @property
    def class_names(self) -> list[str] | None:  # type: ignore[override]
        return self.net.class_names

    @property
    def preprocess(self) -> Preprocess:  # type: ignore[override]
        return self.net.preprocess

    @property
    def memory_format(self) -> torch.memory_format:
        return self.net.memory_format

    @memory_format.setter
    def memory_format(self, fmt: torch.memory_format) -> None:
        self.net.memory_format = fmt

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised -> (N, C5, h5, w5), pool5's map at this net's stride:
        (H//32, W//32) at stride 32, (H//s - 32/s + 1, W//s - 32/s + 1) at a finer s."""
        if self.atrous is None:
            return super().forward_features(x)
        return self.atrous(self._to_memory_format(x))

    def _feature_steps(self) -> Sequence[Callable[[torch.Tensor], torch.Tensor]]:
        return self.features if self.atrous is None else self.atrous.steps()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(N, C5, h5, w5) from :meth:`forward_features` -> (N, K, h, w) (FC1 as a k x k
        conv, dilated by 32 / stride), or the FC7 map when ``pre_logits``."""
        return self.head[:-1](x) if pre_logits else self.head(x)

    def layer_stride(self, name: str) -> int:
        """Pixels between neighbouring positions of layer ``name``'s map (``extract``):
        2^p after p pools, at most this net's stride (its last pools run with stride 1);
        ``stride`` for fc6 ... fc8."""
        _check_names(self, [name])
        if name in HEAD_NAMES:
            return self.stride
        pools = sum(1 for m in self.features[:self.layer_names[name] + 1]
                    if isinstance(m, nn.MaxPool2d))
        return min(2 ** pools, self.stride)

    def map_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the score map of an H x W input (both >= crop)."""
        s, c = self.stride, self.config.crop
        return height // s - c // s + 1, width // s - c // s + 1

    def window(self, i: int, j: int) -> tuple[int, int, int]:
        """The input window ``(x0, y0, side)`` that position (i, j) of the score map
        classifies: the crop x crop square at (stride * j, stride * i) (box decoding,
        Appendix A)."""
        return self.stride * j, self.stride * i, self.config.crop

    def windows(self, h: int, w: int) -> torch.Tensor:
        """(h * w, 3) float64 windows ``(x0, y0, side)`` of every position of an h x w map,
        row-major (the order of ``map.flatten(2)``)."""
        ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        return torch.stack([self.stride * jj.flatten(), self.stride * ii.flatten(),
                            torch.full((h * w,), self.config.crop)], dim=1).to(torch.float64)

    def extra_repr(self) -> str:
        return f"stride={self.stride}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised, H, W >= crop -> (N, K, h, w) score map."""
        if x.dim() != 4 or x.shape[1] != 3 or min(x.shape[-2:]) < self.config.crop:
            raise ValueError(f"{self.config.name} (fully-convolutional) takes (N, 3, H, W) "
                             f"with H, W >= {self.config.crop}, got {tuple(x.shape)}")
        return self.forward_head(self.forward_features(x))


def shift_and_stitch(model: VGG, x: torch.Tensor, stride: int) -> torch.Tensor:
    """The score map of ``model.to_fully_conv(stride)`` computed OverFeat's way (Sermanet et
    al. 2014, offset max-pooling, applied at each of the last m pools, s = 32 / 2^m): each
    of those pools runs with stride 2 at the 2 x 2 offsets of its input, the later layers
    run plain on every offset map, and the (32/s)^2 stride-32 maps are interleaved.

    It gives the a trous map exactly (up to float round-off, border positions included):
    a cross-check and the baseline of ``benchmarks/bench_dense.py``, not the method used.
    Offset maps of the same size go through the later layers as one batch."""
    stride = check_dense_stride(stride)
    fcn = model.to_fully_conv()
    feats = model.features
    m = (NET_STRIDE // stride).bit_length() - 1
    pools = [i for i, layer in enumerate(feats) if isinstance(layer, nn.MaxPool2d)]
    last = pools[len(pools) - m:]
    n, height, width = x.shape[0], x.shape[-2], x.shape[-1]
    x = fcn._to_memory_format(x)
    y = feats[:last[0]](x) if m else fcn.forward_features(x)
    # groups of offset maps: the (oy, ox) of each block of n rows, in units of ``stride``
    groups: list[tuple[list[tuple[int, int]], torch.Tensor]] = [([(0, 0)], y)]
    for level, p in enumerate(last):
        end = last[level + 1] if level + 1 < m else len(feats)
        by_shape: dict[tuple[int, int], tuple[list[tuple[int, int]], list[torch.Tensor]]] = {}
        for offsets, t in groups:
            for dy in (0, 1):
                for dx in (0, 1):
                    if min(t.shape[-2] - dy, t.shape[-1] - dx) < 2:
                        continue  # no position of the map has this offset
                    z = feats[p](t[..., dy:, dx:])
                    offs, ts = by_shape.setdefault((z.shape[-2], z.shape[-1]), ([], []))
                    offs.extend((oy + (dy << level), ox + (dx << level)) for oy, ox in offsets)
                    ts.append(z)
        groups = [(offs, feats[p + 1:end](torch.cat(ts))) for offs, ts in by_shape.values()]
    r = NET_STRIDE // stride
    h, w = model.to_fully_conv(stride).map_size(height, width)
    out: torch.Tensor | None = None
    k = model.config.fc_kernel
    for offsets, t in groups:
        if min(t.shape[-2:]) < k:
            continue  # an offset map too small for one crop x crop window
        scores = fcn.forward_head(t)  # (len(offsets) * n, K, h', w')
        if out is None:
            out = scores.new_zeros(n, scores.shape[1], h, w)
        for b, (oy, ox) in enumerate(offsets):
            out[:, :, oy::r, ox::r] = scores[b * n:(b + 1) * n]
    assert out is not None
    return out


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
    if not isinstance(model, VGG):
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


def init_from(model: VGG, source: VGG, n_conv: int = 4) -> list[str]:
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
