"""``vgg models``: the model zoo of Table 1 with exact parameter counts (Table 2) and
multiply-adds; ``vgg models --arch D`` prints one net layer by layer."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from . import MAX_CLASSES, add_model_flags, int_in, side

if TYPE_CHECKING:
    from ..model import VGGConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models", help="list the nets of Table 1 (parameters, multiply-adds) or one net's layers",
        description="Without --arch: every config of Table 1 with its exact parameter count, "
                    "millions as in Table 2, and multiply-adds of one forward pass at --crop. "
                    "With --arch: that net's layers with output shapes, parameters and "
                    "multiply-adds.")
    add_model_flags(p, arch_default=None)
    p.add_argument("--num-classes", type=int_in(1, MAX_CLASSES), default=1000,
                   help="outputs of the last layer (default 1000, ILSVRC)")
    p.add_argument("--input-size", type=side, default=None, metavar="SIDE",
                   help="with --arch: describe the fully-convolutional net (Sect. 3.2) on a "
                        "SIDE x SIDE image (>= --crop) instead of the FC net on the crop")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..archs import ARCHS, PAPER_PARAMS_M
    from ..errors import ConfigError
    from ..model import VGGConfig
    from ..summary import format_table, human, summarize, total_macs, total_params

    def config(arch: str, bn: bool) -> VGGConfig:
        return VGGConfig(arch=arch, batch_norm=bn, num_classes=args.num_classes,
                         width=args.width, fc_width=args.fc_width, crop=args.crop)

    if args.arch is not None:
        cfg = config(args.arch, args.bn)
        size = args.input_size
        if size is not None and size < cfg.crop:
            raise ConfigError(f"--input-size {size} is smaller than --crop {cfg.crop}")
        where = (f"fully-convolutional on {size}x{size}" if size is not None
                 else f"{cfg.crop}x{cfg.crop} crop")
        print(f"{cfg.name}: width {cfg.width:g}, fc_width {cfg.fc_width}, "
              f"{cfg.num_classes} classes, {where}")
        print(format_table(summarize(cfg, size, fully_conv=size is not None)))
        return 0
    if args.input_size is not None:
        raise ConfigError("--input-size needs --arch")
    header = ("config", "weight layers", "params", "params (M)", "Table 2 (M)",
              f"mult-adds @{args.crop}")
    lines = []
    for arch in ARCHS:
        for bn in (False, True) if args.bn else (False,):
            cfg = config(arch, bn)
            n_weight = sum(1 for t in ARCHS[arch] if t.startswith("c")) + 3
            params = total_params(cfg)
            paper = PAPER_PARAMS_M.get(arch)
            lines.append((cfg.name, str(n_weight), f"{params:,}", f"{params / 1e6:.0f}",
                          str(paper) if paper is not None and _is_paper_size(cfg) else "-",
                          human(total_macs(cfg))))
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                    for i, (h, w) in enumerate(zip(header, widths))))
    print("  ".join("-" * w for w in widths))
    for r in lines:
        print("  ".join(s.ljust(w) if i == 0 else s.rjust(w)
                        for i, (s, w) in enumerate(zip(r, widths))))
    return 0


def _is_paper_size(cfg: VGGConfig) -> bool:
    """Table 2 counts the full-size nets without batch norm, 1000 classes, 224 crop."""
    return (not cfg.batch_norm and cfg.width == 1.0 and cfg.fc_width == 4096
            and cfg.crop == 224 and cfg.num_classes == 1000)
