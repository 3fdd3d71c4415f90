"""``vgg convert SRC [--from FORMAT] --out CKPT``: weights in the forms people have them
(torchvision / timm state dicts, the authors' Caffe ``.caffemodel``, Keras ``.h5``) as a vgg
checkpoint with the right preprocessing and class names."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from . import add_overwrite_flag, check_outputs

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    from ..weights import FORMATS

    p = sub.add_parser(
        "convert", help="convert torchvision / timm / Caffe / Keras weights to a checkpoint",
        description="Write a vgg checkpoint from weights in another format: torchvision "
                    "state dicts (vgg16-397923af.pth, vgg16_bn-6c64b313.pth), timm "
                    "checkpoints or safetensors, the authors' Caffe models "
                    "(VGG_ILSVRC_16_layers.caffemodel, read without Caffe) and Keras files "
                    "(vgg16_weights_tf_dim_ordering_tf_kernels.h5 and _notop). The "
                    "architecture is inferred from the weights' shapes; the checkpoint "
                    "carries the weights' preprocessing (torchvision/timm: mean/std on [0, 1]; "
                    "Caffe/Keras: BGR, 0..255, mean [103.939, 116.779, 123.68]) and class "
                    "names. evaluate, predict, export and train --init-from/--finetune-from "
                    "also take such files directly and convert them on the fly.",
        epilog="Example: vgg convert VGG_ILSVRC_16_layers.caffemodel --out vgg16-caffe.pt && "
               "vgg evaluate vgg16-caffe.pt --data imagenet --method both. Keras _notop files "
               "(no FC layers) give a checkpoint of conv layers only: usable for features and "
               "`vgg train --finetune-from`, refused by classification commands.")
    p.add_argument("source", type=Path, metavar="SRC", help="the weights file to convert")
    p.add_argument("--from", dest="fmt", choices=FORMATS, default=None,
                   help="the format of SRC (default: detected from its content)")
    p.add_argument("--arch", default=None,
                   help="A, A-LRN, B, C, D, E, B-5x5 or an alias (vgg16, vgg16_bn, ...); "
                        "default: inferred from the weights' shapes")
    p.add_argument("--bn", action="store_true",
                   help="require batch normalisation (torchvision's _bn weights; inferred "
                        "from the keys anyway)")
    p.add_argument("--classes", default=None, metavar="imagenet|FILE",
                   help="class names: 'imagenet' (the 1000 ILSVRC classes, wnids and names), "
                        "or a file with one name a line or a JSON list; default: imagenet "
                        "for a 1000-output net, none otherwise")
    p.add_argument("--out", type=Path, required=True, metavar="CKPT",
                   help="the checkpoint to write")
    add_overwrite_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import save_checkpoint
    from ..errors import ConfigError
    from ..weights import describe_source, read_class_names, read_weights

    check_outputs((args.out, "--out"), inputs=[args.source, None if (args.classes or "").lower() == "imagenet"
                                       else args.classes],
                  overwrite=args.overwrite)
    classes: object = "auto"
    if args.classes is not None:
        classes = ("imagenet" if args.classes.lower() == "imagenet"
                   else read_class_names(args.classes))
    try:
        ckpt = read_weights(args.source, args.fmt, arch=args.arch, batch_norm=args.bn,
                            classes=classes, allow_vgg=False)  # type: ignore[arg-type]
    except ConfigError as e:
        if isinstance(classes, list) and "class names given" in str(e):
            raise ConfigError(f"--classes {args.classes}: {e}") from None
        raise
    model = ckpt.build_model().eval()
    path = save_checkpoint(args.out, model, meta=ckpt.meta)
    print(f"wrote {path} ({describe_source(ckpt)})")
    return 0
