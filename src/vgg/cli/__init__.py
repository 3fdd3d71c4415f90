"""The ``vgg`` command. Each sub-command lives in its own module of this package and
exposes ``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.
The functions parse flags into a frozen config and call one library function.

User errors (``VggError``: a wrong path, a bad checkpoint, a flag out of range) print one
``error: ...`` line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from ..errors import VggError

T = TypeVar("T", int, float)

# Sub-command modules, in the order `vgg --help` lists them.
COMMANDS: tuple[str, ...] = ("demo", "models", "data", "train", "evaluate", "fuse", "predict",
                             "export")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="vgg",
        description="The VGG paper's system (Simonyan & Zisserman 2015): the six nets of "
                    "Table 1, the training recipe with scale jittering, dense / multi-crop / "
                    "multi-scale testing and net fusion.",
        epilog="Run `vgg COMMAND --help` for the flags of one command. "
               "Start with `vgg demo`.")
    parser.add_argument("--version", action="version", version=f"vgg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except VggError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `vgg models | head`
        return 0


def _bounded(cast: Callable[[str], T], ok: Callable[[T], bool], rule: str, kind: str,
             name: str) -> Callable[[str], T]:
    """An argparse type: ``cast(text)`` that must satisfy ``ok`` (``rule`` says how)."""
    def parse(text: str) -> T:
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {v}")
        return v
    parse.__name__ = parse.__qualname__ = name
    return parse


positive_int = _bounded(int, lambda v: v >= 1, ">= 1", "an integer", "positive_int")
nonneg_int = _bounded(int, lambda v: v >= 0, ">= 0", "an integer", "nonneg_int")
positive_float = _bounded(float, lambda v: v > 0, "> 0", "a number", "positive_float")
nonneg_float = _bounded(float, lambda v: v >= 0, ">= 0", "a number", "nonneg_float")
unit_float = _bounded(float, lambda v: 0 <= v < 1, "in [0, 1)", "a number", "unit_float")


def crop_size(text: str) -> int:
    """argparse type: a positive multiple of 32 (five 2x2 max-pools)."""
    v = positive_int(text)
    if v % 32:
        raise argparse.ArgumentTypeError(f"must be a multiple of 32, got {v}")
    return v


def add_model_flags(p: argparse.ArgumentParser, arch_default: str | None = "D") -> None:
    """The flags that fix a net's shape, shared by models, train and demo."""
    p.add_argument("--arch", default=arch_default,
                   help="A, A-LRN, B, C, D, E, B-5x5 or an alias (vgg16, vgg16_bn, ...); "
                        f"default {arch_default}")
    p.add_argument("--bn", action="store_true", help="batch normalisation after every conv")
    p.add_argument("--width", type=positive_float, default=1.0,
                   help="conv channel multiplier (1.0 = the paper's 64..512)")
    p.add_argument("--fc-width", type=positive_int, default=4096,
                   help="width of FC1/FC2 (paper: 4096)")
    p.add_argument("--crop", type=crop_size, default=224,
                   help="training crop side, a multiple of 32 (paper: 224)")
