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
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, TypeVar

from ..errors import VggError

T = TypeVar("T", int, float)

# Sub-command modules, in the order `vgg --help` lists them.
COMMANDS: tuple[str, ...] = ("demo", "models", "data", "train", "evaluate", "fuse", "predict",
                             "localize", "transfer", "convert", "export", "study")


class Parser(argparse.ArgumentParser):
    """argparse with the one-line errors the README promises: ``vgg train: error:
    argument --lr: must be > 0, got -1.0 (see `vgg train --help`)``, exit status 2, no
    usage dump. Sub-command parsers are of this class too."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = Parser(
        prog="vgg",
        description="The VGG paper's system (Simonyan & Zisserman 2015): the six nets of "
                    "Table 1, the training recipe with scale jittering, dense / multi-crop / "
                    "multi-scale testing, net fusion, localisation (Appendix A) and very deep "
                    "features with linear SVMs (Appendix B).",
        epilog="Run `vgg COMMAND --help` for the flags of one command. "
               "Start with `vgg demo`.")
    parser.add_argument("--version", action="version", version=f"vgg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace
                    ) -> argparse.ArgumentParser:
    """The parser of the (sub-)command that ``args`` ran, for its error messages."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            name = getattr(args, action.dest, None)
            if name in action.choices:
                return _command_parser(action.choices[name], args)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # name the sub-command whose flags these are not
        _command_parser(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    from ..interrupts import CtrlC

    with CtrlC() as ctrl_c:  # a Ctrl-C lost inside a __del__ still ends with 130
        try:
            rc = int(args.func(args) or 0)
            ctrl_c.check()
            return rc
        except VggError as e:
            print(f"error: {e}", file=sys.stderr)
            return e.exit_code
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:  # `vgg models | head`
            return 0
        except Exception:
            # Ctrl-C reaches the whole process group: a DataLoader worker killed by it can
            # surface first as "worker exited unexpectedly". The user pressed Ctrl-C.
            if ctrl_c.interrupted:
                print("interrupted", file=sys.stderr)
                return 130
            raise


def _bounded(cast: Callable[[str], T], ok: Callable[[T], bool], rule: str, kind: str,
             name: str) -> Callable[[str], T]:
    """An argparse type: ``cast(text)`` that must satisfy ``ok`` (``rule`` says how).
    Floats must be finite (``nan``, ``inf`` are refused)."""
    def parse(text: str) -> T:
        try:
            v = cast(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if isinstance(v, float) and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
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
fraction = _bounded(float, lambda v: 0 < v < 1, "in (0, 1)", "a number", "fraction")


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    """argparse type: an integer in lo..hi. Every count flag has an upper bound, generous
    but finite (`--splits 1000000000` is an error at once, not a run without end)."""
    return _bounded(int, lambda v: lo <= v <= hi, f"in {lo}..{hi:_}".replace("_", ","),
                    "an integer", f"int_in_{lo}_{hi}")


def seed(text: str) -> int:
    """argparse type: a random seed, 0 .. 2**63 - 1."""
    from ..settings import MAX_SEED

    return int_in(0, MAX_SEED)(text)


# upper bounds of count flags (vgg.settings holds those shared with the library)
MAX_SPLITS = 100            # vgg transfer --splits
MAX_PER_CLASS = 1_000_000   # images per class (transfer, data synth)
MAX_TOP = 10_000            # guesses / classes printed per image
MAX_CLASSES = 1_000_000     # vgg models --num-classes


def workers_count(text: str) -> int:
    """argparse type: loader processes, 0 (in the main process) .. MAX_WORKERS."""
    from ..settings import MAX_WORKERS

    v = nonneg_int(text)
    if v > MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_WORKERS}, got {v}")
    return v


def batch_size(text: str) -> int:
    """argparse type: images per batch, 1 .. MAX_BATCH."""
    from ..settings import MAX_BATCH

    return int_in(1, MAX_BATCH)(text)


def jobs_count(text: str) -> int:
    """argparse type: CPU threads that fit SVMs (--jobs), 1 .. MAX_WORKERS."""
    from ..settings import MAX_WORKERS

    return int_in(1, MAX_WORKERS)(text)


def side(text: str) -> int:
    """argparse type: an image side in pixels (a test scale Q), 1 .. MAX_SIDE."""
    from ..settings import MAX_SIDE

    v = positive_int(text)
    if v > MAX_SIDE:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SIDE} pixels, got {v}")
    return v


def add_progress_flag(p: argparse.ArgumentParser, default: bool | None = True) -> None:
    """``--progress/--no-progress``: bars on a terminal, a plain line every 30 s when the
    output goes to a file (see vgg.progress)."""
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=default,
                   help="progress bars on a terminal, periodic lines in a log file "
                        "(default on)")


def add_device_flag(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    from ..devices import DEVICE_HELP

    p.add_argument("--device", default=default, metavar="DEV",
                   help=f"{DEVICE_HELP} (default auto)")


def add_inference_flags(p: argparse.ArgumentParser, precision: str = "fp32") -> None:
    """--batch, --workers, --device and --precision (default ``precision``) of the commands
    that run nets on rescaled images (evaluate, localize evaluate/predict, features,
    transfer)."""
    p.add_argument("--batch", type=batch_size, default=16,
                   help="images per batch (of one rescaled size; default 16)")
    p.add_argument("--workers", type=workers_count, default=None,
                   help="data loading processes (default: up to 4)")
    add_device_flag(p)
    add_precision_flag(p, precision)


def dense_stride(text: str) -> int | None:
    """argparse type of --dense-stride: ``auto`` (None: the default for the net's crop) or a
    divisor of 32."""
    from ..model import DENSE_STRIDES

    if text == "auto":
        return None
    v = positive_int(text)
    if v not in DENSE_STRIDES:
        raise argparse.ArgumentTypeError(
            f"must be auto or a divisor of 32 ({', '.join(map(str, DENSE_STRIDES))}), got {v}")
    return v


def add_dense_stride_flag(p: argparse._ActionsContainer, default: object = None) -> None:
    """``--dense-stride``: the output stride of dense application (Sect. 3.2, SPEC 6b);
    ``default`` None is auto (``argparse.SUPPRESS`` where only typed flags count)."""
    p.add_argument("--dense-stride", type=dense_stride, default=default, metavar="N",
                   help="output stride of dense application, in pixels of the rescaled "
                        "image: a divisor of 32 or auto (default): the largest divisor of 32 "
                        "at most crop/7, which keeps the paper's ~7 positions per window side "
                        "(crop 224 -> 32, 128 -> 16, 64 -> 8, 32 -> 4); finer strides cost "
                        "more multiply-adds (docs/evaluation.md)")


def add_precision_flag(p: argparse.ArgumentParser, default: str) -> None:
    from ..precision import PRECISION_HELP, PRECISIONS

    p.add_argument("--precision", choices=PRECISIONS, default=default,
                   help=f"{PRECISION_HELP} (default {default})")
    # the flag of earlier releases: bf16/fp16 on CUDA, now what --precision auto picks
    p.add_argument("--amp", action="store_const", dest="precision", const="auto",
                   help=argparse.SUPPRESS)


def add_list_flags(p: argparse._ActionsContainer, train: bool = True) -> None:
    """--train-list, --val-list, --val-split, --split-seed (vgg.data.sources): which
    images of --data train and which validate."""
    if train:
        p.add_argument("--train-list", metavar="FILE",
                       help="file list of the training images: one a line, 'class/file.jpg' "
                            "(Caltech-style train.txt: the class is the first folder) or "
                            "'path,label' (CSV); paths relative to --data")
    p.add_argument("--val-list", metavar="FILE",
                   help="file list of the validation images (same forms; its labels must be "
                        "classes of the training list)" if train else
                        "file list of the images to score: 'class/file.jpg' or 'path,label' a "
                        "line, paths relative to --data; labels must be classes of the net")
    p.add_argument("--val-split", type=fraction, metavar="FRACTION",
                   help="hold out this fraction of each class of the training images for "
                        "validation (stratified, seeded; for class folders without val/)"
                   if train else "score the held-out part a training run with this "
                   "--val-split (and --split-seed, --train-list) validated on")
    p.add_argument("--split-seed", type=seed, metavar="N",
                   help="seed of --val-split (0; not the training seed, so the split stays "
                        "put when --seed changes)")
    if not train:
        p.add_argument("--train-list", metavar="FILE",
                       help="with --val-split: the training list that run split")


def add_overwrite_flag(p: argparse._ActionsContainer) -> None:
    """``--overwrite``: the one rule of every command that writes files (see
    :func:`check_outputs`)."""
    p.add_argument("--overwrite", action="store_true",
                   help="replace output files that already exist (default: refuse them)")


def _run_files(path: Path) -> list[Path]:
    """An input folder counts by the files vgg reads from it (a run's best.pt, last.pt,
    config.yaml)."""
    return [path / n for n in ("best.pt", "last.pt", "config.yaml")] if path.is_dir() \
        else [path]


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except OSError:
        return False


def check_outputs(*pairs: tuple[object, str], inputs: Sequence[object] = (),
                  overwrite: bool | None = None) -> None:
    """The output rule of every command, checked before any work (None paths are
    skipped): an output that is one of the command's ``inputs`` (the same file, by path
    or inode; an input folder counts by its best.pt, last.pt and config.yaml) or another
    output of the same command is refused; an output that already exists is replaced only
    with ``--overwrite`` (``overwrite`` None: not checked, for callers that manage their
    own outputs); then each must be writable, so that a typo costs nothing."""
    from ..checkpoint import check_output
    from ..errors import ConfigError

    given = [(Path(str(path)), what) for path, what in pairs if path is not None and path != ""]
    ins = [f for i in inputs if i is not None and i != "" for f in _run_files(Path(str(i)))]
    for n, (path, what) in enumerate(given):
        for i in ins:
            if _same_file(path, i):
                raise ConfigError(f"{what} {path} is an input of this command ({i}); "
                                  f"writing it would destroy it: give another name")
        for other, flag in given[:n]:
            if _same_file(path, other):
                raise ConfigError(f"{flag} and {what} name the same file {path}")
        if overwrite is False and path.is_file():
            raise ConfigError(f"{what} {path} already exists; pass --overwrite to replace it")
    for path, what in given:
        check_output(path, what)


def crop_size(text: str) -> int:
    """argparse type: a positive multiple of 32 (five 2x2 max-pools)."""
    from ..settings import MAX_SIDE

    v = positive_int(text)
    if v > MAX_SIDE:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SIDE}, got {v}")
    if v % 32:
        raise argparse.ArgumentTypeError(f"must be a multiple of 32, got {v}")
    return v


def net_width(text: str) -> float:
    """argparse type of --width: a conv channel multiplier in (0, MAX_WIDTH]."""
    from ..model import MAX_WIDTH

    v = positive_float(text)
    if v > MAX_WIDTH:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_WIDTH:g}, got {v:g}")
    return v


def fc_width(text: str) -> int:
    """argparse type of --fc-width: 1 .. MAX_FC_WIDTH."""
    from ..model import MAX_FC_WIDTH

    return int_in(1, MAX_FC_WIDTH)(text)


def add_model_flags(p: argparse.ArgumentParser, arch_default: str | None = "D") -> None:
    """The flags that fix a net's shape, shared by models, train and demo."""
    p.add_argument("--arch", default=arch_default,
                   help="A, A-LRN, B, C, D, E, B-5x5 or an alias (vgg16, vgg16_bn, ...); "
                        f"default {arch_default}")
    p.add_argument("--bn", action="store_true", help="batch normalisation after every conv")
    p.add_argument("--width", type=net_width, default=1.0,
                   help="conv channel multiplier (1.0 = the paper's 64..512; at most 16)")
    p.add_argument("--fc-width", type=fc_width, default=4096,
                   help="width of FC1/FC2 (paper: 4096; at most 65536)")
    p.add_argument("--crop", type=crop_size, default=224,
                   help="training crop side, a multiple of 32 (paper: 224)")
