"""``vgg predict``: the top-k classes of images with their probabilities (dense evaluation at
one test scale by default). A bad image gets an error line naming it; the others are
still predicted, and the exit status is 1 when any failed."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from . import (MAX_TOP, add_dense_stride_flag, add_device_flag, add_precision_flag,
               add_progress_flag, int_in, side)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="top-k classes of images or folders of images",
        description="Predict the classes of images with a checkpoint: dense evaluation "
                    "(Sect. 3.2) at one test scale (S, or the middle of the training range) "
                    "unless --scale / --method say otherwise.")
    p.add_argument("checkpoint", metavar="CKPT",
                   help="a vgg checkpoint, or torchvision/timm/Caffe/Keras weights (converted "
                        "on the fly)")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--top", type=int_in(1, MAX_TOP), default=5, help="classes per image (default 5)")
    p.add_argument("--scale", type=side, default=None, metavar="Q",
                   help="test scale (smaller image side), >= the net's crop")
    p.add_argument("--method", choices=("dense", "center"), default="dense")
    p.add_argument("--no-flip", dest="flip", action="store_false",
                   help="dense: do not average with the mirror image")
    add_dense_stride_flag(p)
    add_device_flag(p)
    add_precision_flag(p, "auto")
    p.add_argument("--json", action="store_true", help="print JSON (one list) instead of text")
    add_progress_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..eval import predict

    preds = predict(args.checkpoint, args.inputs, top=args.top, scale=args.scale,
                    method=args.method, flip=args.flip, device=args.device,
                    progress=args.progress, precision=args.precision,
                    dense_stride=args.dense_stride)
    return report_predictions(
        preds, args.inputs, args.json,
        # 3 significant digits: a 1000-class net's 0.00123 stays readable
        lambda p: f"{p.path}: " + ", ".join(f"{c} ({v:.3g})" for c, v in p.top or []))


def report_predictions(preds: list[Any], inputs: list[str], as_json: bool,
                       line: Callable[[Any], str]) -> int:
    """Print predictions (``vgg predict`` and ``vgg localize predict``): JSON, or one
    ``line(p)`` per image on stdout and one ``error:`` line per failed file on stderr.
    Exit status 1 when any failed; no image at all is an error."""
    from ..errors import DataError

    if not preds:
        raise DataError(f"no image files in {', '.join(inputs)}")
    if as_json:
        print(json.dumps([p.to_json() for p in preds], indent=2))
    else:
        for p in preds:
            if p.error is not None:
                print(f"error: {p.error}", file=sys.stderr)
            else:
                print(line(p))
    failed = sum(p.error is not None for p in preds)
    if failed:
        print(f"{failed} of {len(preds)} image(s) could not be predicted", file=sys.stderr)
    return 1 if failed else 0
