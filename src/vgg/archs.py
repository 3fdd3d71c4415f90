"""Table 1 of the paper as data, and nothing else.

Tokens: ``"c3-64"`` is a 3x3 conv with 64 output channels (stride 1, padding 1),
``"c1-256"`` a 1x1 conv (padding 0), ``"c5-128"`` a 5x5 conv (padding 2), ``"M"`` a 2x2
max-pool with stride 2, ``"LRN"`` local response normalisation (placed after the ReLU
of the conv before it). Every conv is followed by ReLU (and by batch norm first when a
net is built with ``batch_norm=True``).
"""

from __future__ import annotations

ARCHS: dict[str, tuple[str, ...]] = {
    # Sect. 2.3, Table 1, column A: 8 conv + 3 FC = 11 weight layers.
    "A": ("c3-64", "M", "c3-128", "M", "c3-256", "c3-256", "M",
          "c3-512", "c3-512", "M", "c3-512", "c3-512", "M"),
    # A-LRN: LRN after the first conv (after its ReLU).
    "A-LRN": ("c3-64", "LRN", "M", "c3-128", "M", "c3-256", "c3-256", "M",
              "c3-512", "c3-512", "M", "c3-512", "c3-512", "M"),
    "B": ("c3-64", "c3-64", "M", "c3-128", "c3-128", "M", "c3-256", "c3-256", "M",
          "c3-512", "c3-512", "M", "c3-512", "c3-512", "M"),
    # C: B plus a 1x1 conv as the 3rd conv of blocks 3, 4, 5.
    "C": ("c3-64", "c3-64", "M", "c3-128", "c3-128", "M",
          "c3-256", "c3-256", "c1-256", "M",
          "c3-512", "c3-512", "c1-512", "M",
          "c3-512", "c3-512", "c1-512", "M"),
    # D (VGG-16): B plus a 3x3 conv as the 3rd conv of blocks 3, 4, 5.
    "D": ("c3-64", "c3-64", "M", "c3-128", "c3-128", "M",
          "c3-256", "c3-256", "c3-256", "M",
          "c3-512", "c3-512", "c3-512", "M",
          "c3-512", "c3-512", "c3-512", "M"),
    # E (VGG-19): four 3x3 convs in blocks 3, 4, 5.
    "E": ("c3-64", "c3-64", "M", "c3-128", "c3-128", "M",
          "c3-256", "c3-256", "c3-256", "c3-256", "M",
          "c3-512", "c3-512", "c3-512", "c3-512", "M",
          "c3-512", "c3-512", "c3-512", "c3-512", "M"),
    # Sect. 4.1: B with each pair of 3x3 convs replaced by one 5x5 conv.
    "B-5x5": ("c5-64", "M", "c5-128", "M", "c5-256", "M", "c5-512", "M", "c5-512", "M"),
}

# Common names for the configs (torchvision / timm spelling).
ALIASES: dict[str, str] = {
    "vgg11": "A", "vgg11_lrn": "A-LRN", "vgg13": "B", "vgg16": "D", "vgg19": "E",
    "vgg16_c": "C", "vgg13_5x5": "B-5x5",
}

# Paper's Table 2 (parameters, millions) for the report table.
PAPER_PARAMS_M: dict[str, int] = {"A": 133, "A-LRN": 133, "B": 133, "C": 134, "D": 138,
                                  "E": 144}


def resolve_arch(name: str) -> tuple[str, bool]:
    """Map a user-given name to ``(config, batch_norm)``.

    Accepts ``"D"``, ``"d"``, ``"vgg16"``, ``"vgg16_bn"``, ``"D-BN"``, ``"A-LRN"``...
    Raises ``KeyError`` with the known names when it is not a config.
    """
    key = name.strip()
    batch_norm = False
    low = key.lower()
    for suffix in ("_bn", "-bn"):
        if low.endswith(suffix):
            batch_norm = True
            key, low = key[: -len(suffix)], low[: -len(suffix)]
    if low in ALIASES:
        return ALIASES[low], batch_norm
    for config in ARCHS:
        if config.lower() == low:
            return config, batch_norm
    known = ", ".join(list(ARCHS) + sorted(ALIASES))
    raise KeyError(f"unknown architecture {name!r}; known: {known} (add _bn for batch norm)")


def parse_token(token: str) -> tuple[str, int, int]:
    """``"c3-64"`` -> ``("conv", 3, 64)``; ``"M"`` -> ``("pool", 2, 0)``;
    ``"LRN"`` -> ``("lrn", 5, 0)``."""
    if token == "M":
        return "pool", 2, 0
    if token == "LRN":
        return "lrn", 5, 0
    kernel, channels = token[1:].split("-")
    return "conv", int(kernel), int(channels)
