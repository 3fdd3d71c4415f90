"""``vgg data``: dataset utilities (colour statistics, the embedded shapes dataset)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import nonneg_int, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="dataset tools: colour stats, synthetic set",
                              description="Dataset tools.")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 1)[1])

    s = sub.add_parser("stats", help="mean RGB and RGB covariance eigen-decomposition",
                       description="Mean RGB (0..255) and the eigenvalues/eigenvectors of the "
                                   "RGB covariance (pixels in [0, 1]) over the training "
                                   "images of DIR (DIR/train when present), for the paper's "
                                   "mean subtraction and PCA colour shift.")
    s.add_argument("dir", type=Path, help="dataset folder (DIR/train/<class>/... or "
                                          "DIR/<class>/...)")
    s.add_argument("--out", type=Path, required=True, help="JSON file to write")
    s.add_argument("--limit", type=positive_int, default=None,
                   help="use a seeded random subset of N images")
    s.add_argument("--seed", type=nonneg_int, default=0, help="seed of the --limit subset")
    s.set_defaults(func=_stats)

    y = sub.add_parser("synth", help="write the embedded shapes dataset",
                       description="Write a deterministic dataset of shapes on cluttered "
                                   "backgrounds: OUT/train/<class>/*.jpg, OUT/val/<class>/"
                                   "*.jpg and one PASCAL VOC XML per image under "
                                   "OUT/annotations/.")
    y.add_argument("out", type=Path, help="output folder")
    y.add_argument("--classes", type=positive_int, default=10, help="shape classes (2..14)")
    y.add_argument("--train-per-class", type=nonneg_int, default=260)
    y.add_argument("--val-per-class", type=nonneg_int, default=50)
    y.add_argument("--seed", type=nonneg_int, default=0)
    y.add_argument("--multi", action="store_true",
                   help="2-4 objects of different classes per image (multi-label)")
    y.add_argument("--min-side", type=positive_int, default=64, help="smallest image side")
    y.add_argument("--max-side", type=positive_int, default=160, help="largest image side")
    y.add_argument("--min-object", type=float, default=0.1,
                   help="smallest object extent / smaller image side (default 0.1)")
    y.add_argument("--max-object", type=float, default=0.9,
                   help="largest object extent / smaller image side (default 0.9)")
    y.add_argument("--workers", type=nonneg_int, default=None,
                   help="processes (default: the available cores)")
    y.set_defaults(func=_synth)


def _stats(args: argparse.Namespace) -> int:
    from ..data.stats import compute_stats

    stats = compute_stats(args.dir, limit=args.limit, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    stats.save(args.out)
    print(json.dumps({"mean_rgb": [round(v, 3) for v in stats.mean_rgb],
                      "eigval": [round(v, 6) for v in stats.eigval],
                      "n_images": stats.n_images, "out": str(args.out)}))
    return 0


def _synth(args: argparse.Namespace) -> int:
    from ..data.synthetic import make_shapes_dataset

    make_shapes_dataset(args.out, classes=args.classes,
                        train_per_class=args.train_per_class,
                        val_per_class=args.val_per_class, seed=args.seed,
                        multi=args.multi, min_side=args.min_side,
                        max_side=args.max_side, workers=args.workers,
                        object_size=(args.min_object, args.max_object))
    return 0  # make_shapes_dataset logs "wrote N images of K classes to OUT"
