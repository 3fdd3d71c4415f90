"""Per-layer summary of a net (Table 1 / Table 2 numbers): output shapes, parameters and
multiply-adds, computed from the config alone (no net is built, so the full-size E costs
nothing to describe).

Multiply-adds count the weight layers only (conv: ``H_out * W_out * C_out * C_in * k * k``;
FC: ``in * out``); ReLU, pooling, LRN and batch norm are listed with 0. The paper gives
no multiply-add figures: these are our arithmetic (at 224: A 7.6G, B 11.3G, C 11.8G,
D 15.5G, E 19.6G; FLOPs are twice that).
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import NET_STRIDE, VGGConfig, check_dense_stride, last_channels, layer_specs


@dataclass(frozen=True)
class LayerRow:
    """One layer: paper name (``conv3_1``, ``pool3``, ``fc6``), type, output shape
    (C, H, W) for one image ((C,) for the FC layers of the FC form), parameter count and
    multiply-adds per image."""

    name: str
    kind: str
    out_shape: tuple[int, ...]
    params: int
    macs: int


def summarize(config: VGGConfig, input_size: tuple[int, int] | int | None = None,
              fully_conv: bool = False, dense_stride: int = NET_STRIDE) -> list[LayerRow]:
    """Rows for every layer of ``config`` on one (3, H, W) input.

    ``input_size`` defaults to the config's crop. The FC form only takes the crop; with
    ``fully_conv=True`` any size >= crop gives the dense form's score-map shapes (FC1 as a
    k x k conv, FC2/FC3 as 1x1 convs; the same parameters), at output stride
    ``dense_stride`` (``model.to_fully_conv(stride)``: its last pools keep the map's size
    but for d rows and columns, so the layers after them cost about (32/s)^2 as much).
    """
    if input_size is None:
        input_size = config.crop
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    if not fully_conv and (h, w) != (config.crop, config.crop):
        raise ValueError(f"the FC net takes {config.crop}x{config.crop} inputs; use "
                         f"fully_conv=True for {h}x{w}")
    if min(h, w) < config.crop:
        raise ValueError(f"input {h}x{w} is smaller than the crop {config.crop}")
    dense_stride = check_dense_stride(dense_stride)
    if not fully_conv and dense_stride != NET_STRIDE:
        raise ValueError("a dense stride other than 32 needs fully_conv=True")
    rows: list[LayerRow] = []
    kinds = {"conv": "Conv {0}x{0}", "bn": "BatchNorm", "relu": "ReLU",
             "pool": "MaxPool 2x2/2", "lrn": "LRN n={0}"}
    stride, dil = 1, 1  # the map's stride so far; the dilation of stride-1 pools and convs
    for s in layer_specs(config):
        kind = kinds[s.kind].format(s.kernel)
        if s.kind == "pool" and stride < dense_stride:
            h, w = h // 2, w // 2
            stride *= 2
        elif s.kind == "pool":  # stride 1, dilated: loses d rows and columns
            kind = f"MaxPool 2x2/1 dil {dil}"
            h, w = h - dil, w - dil
            dil *= 2
        elif s.kind == "conv" and dil > 1 and s.kernel > 1:
            kind += f" dil {dil}"
        params = macs = 0
        if s.kind == "conv":
            params = s.out_ch * s.in_ch * s.kernel ** 2 + s.out_ch
            macs = h * w * s.out_ch * s.in_ch * s.kernel ** 2
        elif s.kind == "bn":
            params = 2 * s.out_ch
        rows.append(LayerRow(s.name, kind, (s.out_ch, h, w), params, macs))
    c = last_channels(config)
    k, fc, classes = config.fc_kernel, config.fc_width, config.out_features
    oh, ow = h - dil * (k - 1), w - dil * (k - 1)

    def shape(n: int) -> tuple[int, ...]:
        return (n, oh, ow) if fully_conv else (n,)

    fc1 = "Conv {0}x{0} (FC{1})".format(k, f" dil {dil}" if dil > 1 and k > 1 else "") \
        if fully_conv else "Linear"
    fc23 = "Conv 1x1 (FC)" if fully_conv else "Linear"
    spatial = oh * ow
    rows += [
        LayerRow("fc6", fc1, shape(fc), fc * c * k * k + fc, spatial * fc * c * k * k),
        LayerRow("relu6", "ReLU", shape(fc), 0, 0),
        LayerRow("drop6", "Dropout", shape(fc), 0, 0),
        LayerRow("fc7", fc23, shape(fc), fc * fc + fc, spatial * fc * fc),
        LayerRow("relu7", "ReLU", shape(fc), 0, 0),
        LayerRow("drop7", "Dropout", shape(fc), 0, 0),
        LayerRow("fc8", fc23, shape(classes), classes * fc + classes,
                 spatial * classes * fc),
    ]
    return rows


def total_params(config: VGGConfig) -> int:
    """Learnable parameters (BN running statistics excluded), as ``count_params``."""
    return sum(r.params for r in summarize(config))


def total_macs(config: VGGConfig, input_size: tuple[int, int] | int | None = None,
               fully_conv: bool = False, dense_stride: int = NET_STRIDE) -> int:
    """Multiply-adds of one forward pass on one image (FLOPs are twice this)."""
    return sum(r.macs for r in summarize(config, input_size, fully_conv, dense_stride))


def human(n: float, unit: str = "") -> str:
    """``15_470_264_320`` -> ``"15.47G"``."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n:g}{unit}"


def format_table(rows: list[LayerRow]) -> str:
    """A plain-text table of ``rows`` with a totals line."""
    header = ("layer", "type", "output", "params", "mult-adds")
    body = [(r.name, r.kind, "x".join(str(v) for v in r.out_shape),
             f"{r.params:,}" if r.params else "-", human(r.macs) if r.macs else "-")
            for r in rows]
    total = ("total", "", "", f"{sum(r.params for r in rows):,}",
             human(sum(r.macs for r in rows)))
    widths = [max(len(line[i]) for line in [header, *body, total]) for i in range(5)]
    right = (False, False, True, True, True)

    def fmt(line: tuple[str, ...]) -> str:
        return "  ".join(s.rjust(wd) if r else s.ljust(wd)
                         for s, wd, r in zip(line, widths, right)).rstrip()

    rule = "  ".join("-" * wd for wd in widths)
    return "\n".join([fmt(header), rule, *map(fmt, body), rule, fmt(total)])
