"""``vgg data``: dataset utilities (colour statistics, the embedded shapes dataset, a
train/val split of a folder of classes, a check of box annotations)."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from . import (MAX_PER_CLASS, _bounded, add_overwrite_flag, add_progress_flag, check_outputs,
               int_in, seed, side, workers_count)

fraction = _bounded(float, lambda v: 0 < v < 1, "in (0, 1)", "a number", "fraction")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="dataset tools: colour stats, synthetic set, "
                                           "split, box check",
                              description="Dataset tools.")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 1)[1])

    s = sub.add_parser("stats", help="mean RGB and RGB covariance eigen-decomposition",
                       description="Mean RGB (0..255) and the eigenvalues/eigenvectors of the "
                                   "RGB covariance (pixels in [0, 1]) over the training "
                                   "images of DIR (its train split when it has one: "
                                   "DIR/train/, train.csv, train_labels.csv, ...; else "
                                   "DIR/<class>/...), for the paper's mean subtraction and "
                                   "PCA colour shift.")
    s.add_argument("dir", type=Path, help="dataset folder (DIR/train/<class>/... or "
                                          "DIR/<class>/...)")
    s.add_argument("--out", type=Path, required=True, help="JSON file to write")
    s.add_argument("--limit", type=int_in(1, 10**9), default=None,
                   help="use a seeded random subset of N images")
    s.add_argument("--seed", type=seed, default=0, help="seed of the --limit subset")
    add_overwrite_flag(s)
    add_progress_flag(s)
    s.set_defaults(func=_stats)

    y = sub.add_parser("synth", help="write the embedded shapes dataset",
                       description="Write a deterministic dataset of shapes on cluttered "
                                   "backgrounds: OUT/train/<class>/*.jpg, OUT/val/<class>/"
                                   "*.jpg and one PASCAL VOC XML per image under "
                                   "OUT/annotations/.")
    y.add_argument("out", type=Path, help="output folder: new or empty, or (with "
                                          "--overwrite) an earlier shapes dataset, which is "
                                          "replaced as a whole")
    y.add_argument("--classes", type=int_in(2, 14), default=10,
                   help="shape classes (2..14); with --layout voc-action: actions (2..10)")
    y.add_argument("--train-per-class", type=int_in(0, MAX_PER_CLASS), default=260)
    y.add_argument("--val-per-class", type=int_in(0, MAX_PER_CLASS), default=50)
    y.add_argument("--seed", type=seed, default=0)
    y.add_argument("--multi", action="store_true",
                   help="2-4 objects of different classes per image (multi-label)")
    y.add_argument("--min-side", type=side, default=64, help="smallest image side")
    y.add_argument("--max-side", type=side, default=160, help="largest image side")
    y.add_argument("--min-object", type=float, default=0.1,
                   help="smallest object extent / smaller image side (default 0.1)")
    y.add_argument("--max-object", type=float, default=0.9,
                   help="largest object extent / smaller image side (default 0.9)")
    y.add_argument("--layout", choices=("folders", "voc", "voc-action"), default="folders",
                   help="folders (default): OUT/train|val/<class>/; voc: a PASCAL VOC devkit "
                        "year folder (JPEGImages/, Annotations/, ImageSets/Main/ with "
                        "trainval/train/val/test lists; small objects marked difficult) for "
                        "vgg transfer --protocol voc; voc-action: VOC-2012's action task "
                        "(1-3 persons an image, each holding its action's shape; "
                        "ImageSets/Action/ lists, <actions> per person; --train-per-class / "
                        "--val-per-class images per action) for vgg transfer --protocol "
                        "actions")
    y.add_argument("--workers", type=workers_count, default=None,
                   help="processes (default: the available cores)")
    add_overwrite_flag(y)
    add_progress_flag(y)
    y.set_defaults(func=_synth)

    sp = sub.add_parser(
        "split", help="split a folder of class folders into train/ and val/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Split SRC/<class>/**/<image> (a dataset without a split) into\n"
                    "OUT/train/<class>/ and OUT/val/<class>/, class by class (stratified),\n"
                    "the same way for the same --seed. A class with at least two images\n"
                    "gets at least one val and one train image. By default the files are\n"
                    "symbolic links to the absolute source paths (nothing is copied);\n"
                    "OUT/split.json records the parameters and the counts. OUT must not\n"
                    "exist or must be empty.",
        epilog="example:\n"
               "  vgg data split caltech101_subset10 data/caltech10 --val-fraction 0.2\n"
               "  vgg train --data data/caltech10 ...   # reads its train/ and val/")
    sp.add_argument("src", type=Path, help="folder of class folders (SRC/<class>/<image>)")
    sp.add_argument("out", type=Path, help="new folder for train/, val/ and split.json")
    how = sp.add_mutually_exclusive_group()
    how.add_argument("--val-fraction", type=fraction, default=None, metavar="F",
                     help="fraction of each class's images for val, rounded (default 0.2)")
    how.add_argument("--val-per-class", type=int_in(1, 10**9), default=None, metavar="N",
                     help="N val images per class (at most all but one)")
    sp.add_argument("--seed", type=seed, default=0,
                    help="seed of the per-class draw (default 0)")
    files = sp.add_mutually_exclusive_group()
    files.add_argument("--copy", action="store_const", const="copy", dest="mode",
                       help="copy the files instead of linking them")
    files.add_argument("--link", choices=("symlink", "hardlink"), dest="mode",
                       help="symlink (default: absolute symbolic links) or hardlink (same "
                            "file system only)")
    add_progress_flag(sp)
    sp.set_defaults(func=_split, mode="symlink")

    b = sub.add_parser(
        "boxes", help="check the box annotations of a dataset (localisation)",
        description="Load the boxes of split SPLIT of DIR as the localisation trainer will "
                    "and print what was found: images with boxes, missing and malformed "
                    "annotations, boxes clipped to the image, boxes without area or of "
                    "unknown classes (dropped), images left without a usable box. "
                    "Sources: PASCAL VOC / ILSVRC XML (beside the images, "
                    "DIR/annotations/<split>/, DIR/Annotations/, ILSVRC2012_bbox_* folders), "
                    "ImageNet's LOC_<split>_solution.csv, a detection CSV "
                    "(filename,width,height,class,xmin,ymin,xmax,ymax). See docs/data.md.")
    b.add_argument("dir", type=Path, help="dataset folder")
    b.add_argument("--split", default="train", help="split name (default train)")
    b.add_argument("--source", type=Path, default=None,
                   help="annotation folder or CSV (default: found next to the data)")
    b.add_argument("--strict-classes", action="store_true",
                   help="a box of a class not in the dataset's class list is an error")
    b.add_argument("--json", type=Path, default=None, metavar="OUT.json",
                   help="write the report as JSON")
    add_overwrite_flag(b)
    b.set_defaults(func=_boxes)


def _stats(args: argparse.Namespace) -> int:
    from ..data.stats import compute_stats

    check_outputs((args.out, "--out"), inputs=[args.dir], overwrite=args.overwrite)
    stats = compute_stats(args.dir, limit=args.limit, seed=args.seed, progress=args.progress)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    stats.save(args.out)
    print(json.dumps({"mean_rgb": [round(v, 3) for v in stats.mean_rgb],
                      "eigval": [round(v, 6) for v in stats.eigval],
                      "n_images": stats.n_images, "out": str(args.out)}))
    return 0


def _synth(args: argparse.Namespace) -> int:
    from ..data.synthetic import make_shapes_dataset

    _clear_synth_folder(args.out, args.overwrite)
    if args.layout == "voc-action":
        from ..data.synthetic_actions import make_action_dataset

        if args.multi:
            from ..errors import ConfigError

            raise ConfigError("--multi is for the shapes layouts; voc-action images hold "
                              "1-3 persons already")
        make_action_dataset(args.out, actions=args.classes,
                            train_per_action=args.train_per_class,
                            val_per_action=args.val_per_class, seed=args.seed,
                            min_side=args.min_side, max_side=args.max_side,
                            workers=args.workers, progress=args.progress)
        return 0

    make_shapes_dataset(args.out, classes=args.classes,
                        train_per_class=args.train_per_class,
                        val_per_class=args.val_per_class, seed=args.seed,
                        multi=args.multi, min_side=args.min_side,
                        max_side=args.max_side, workers=args.workers,
                        progress=args.progress,
                        object_size=(args.min_object, args.max_object),
                        layout=args.layout)
    return 0  # make_shapes_dataset logs "wrote N images of K classes to OUT"


# what `vgg data synth` writes in its folder (either layout)
_SYNTH_PARTS = ("train", "val", "annotations", "JPEGImages", "Annotations", "ImageSets",
                "synth.json")


def _clear_synth_folder(out: Path, overwrite: bool) -> None:
    """The output rule for `vgg data synth OUT`: OUT new or empty; with --overwrite, an
    earlier shapes dataset (it has synth.json) is removed first, so that two sets never
    mix; any other folder is refused."""
    import shutil

    from ..errors import ConfigError

    if out.is_file():
        raise ConfigError(f"{out} is a file; give a folder for the dataset")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not (out / "synth.json").is_file():
        raise ConfigError(f"{out} exists and is not a shapes dataset (no synth.json); "
                          f"choose a new or empty folder")
    if not overwrite:
        raise ConfigError(f"{out} already holds a shapes dataset; pass --overwrite to "
                          f"replace it")
    for name in _SYNTH_PARTS:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def _split(args: argparse.Namespace) -> int:
    from ..data.split import split_folder

    rec = split_folder(args.src, args.out, val_fraction=args.val_fraction,
                       val_per_class=args.val_per_class, seed=args.seed, mode=args.mode,
                       progress=args.progress)
    width = max([len("class")] + [len(c) for c in rec["classes"]])
    print(f"{'class':<{width}}  train    val")
    for c, n in rec["classes"].items():
        print(f"{c:<{width}}  {n['train']:5d}  {n['val']:5d}")
    print(f"{'total':<{width}}  {rec['train']:5d}  {rec['val']:5d}")
    what = {"symlink": "symbolic links to", "hardlink": "hard links to",
            "copy": "copies of"}[args.mode]
    print(f"wrote {args.out}/train and {args.out}/val ({what} {rec['source']}); "
          f"parameters and counts in {args.out / 'split.json'}")
    return 0


def _boxes(args: argparse.Namespace) -> int:
    from ..data.annotations import load_boxes
    from ..data.folders import index_split

    check_outputs((args.json, "--json"), inputs=[args.dir, args.source],
                  overwrite=args.overwrite)
    index = index_split(args.dir, args.split)
    if args.source is not None or index.box_report is None or args.strict_classes:
        report = load_boxes(index, args.source, args.split, strict_classes=args.strict_classes,
                            quiet=True)
    else:
        report = index.box_report
    print(report.summary())
    per_class = Counter(b.name for bs in (index.boxes or {}).values() for b in bs)
    print("boxes per class: " + (", ".join(f"{c} {per_class[c]}" for c in index.classes)
                                 or "none"))
    for kind, examples in report.examples.items():
        print(f"  {kind}:")
        for e in examples:
            print(f"    {e}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return 0
