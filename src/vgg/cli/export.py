"""``vgg export CKPT --onnx OUT [--fully-conv]`` / ``--safetensors OUT``: the weights of a
checkpoint in formats other runtimes read."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from . import add_overwrite_flag, check_outputs, int_in

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a checkpoint to ONNX and/or safetensors",
        description="Write a checkpoint's net as ONNX (the FC net on the training crop with a "
                    "dynamic batch, or with --fully-conv the dense net of Sect. 3.2 with "
                    "dynamic batch, height and width) and/or as safetensors (weights plus "
                    "config, class names and preprocessing in the metadata).")
    p.add_argument("checkpoint", type=Path, metavar="CKPT",
                   help="a vgg checkpoint, or weights vgg converts on the fly (torchvision, "
                        "timm, Caffe, Keras)")
    p.add_argument("--onnx", type=Path, metavar="OUT", help="write an ONNX model here")
    p.add_argument("--fully-conv", action="store_true",
                   help="ONNX: export the fully-convolutional net (any H, W >= crop; outputs "
                        "a class score map)")
    p.add_argument("--opset", type=int_in(1, 100), default=None,
                   help="ONNX opset (default: the exporter's)")
    p.add_argument("--safetensors", type=Path, metavar="OUT",
                   help="write the weights and metadata as safetensors here")
    add_overwrite_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import CheckpointError, ConfigError
    from ..export import export_onnx, export_safetensors
    from ..weights import open_weights as load_checkpoint

    if args.onnx is None and args.safetensors is None:
        raise ConfigError("nothing to do: give --onnx OUT and/or --safetensors OUT")
    if args.fully_conv and args.onnx is None:
        raise ConfigError("--fully-conv applies to --onnx only")
    check_outputs((args.safetensors, "--safetensors"), (args.onnx, "--onnx"),
                  inputs=[args.checkpoint], overwrite=args.overwrite)
    ckpt = load_checkpoint(args.checkpoint)
    if ckpt.meta.get("features_only"):
        raise CheckpointError(f"{args.checkpoint} holds convolutional layers only (no FC "
                              f"layers): there is no classifier to export")
    model = ckpt.build_model().eval()
    if args.safetensors is not None:
        path = export_safetensors(model, args.safetensors)
        print(f"wrote {path}")
    if args.onnx is not None:
        path = export_onnx(model, args.onnx, fully_conv=args.fully_conv, opset=args.opset)
        print(f"wrote {path} ({'fully-convolutional' if args.fully_conv else 'FC'} "
              f"{model.config.name})")
    return 0
