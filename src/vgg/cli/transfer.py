"""``vgg features`` and ``vgg transfer``: very deep features on other datasets (Appendix B)
— dense multi-scale descriptors of fixed nets, linear SVMs, VOC mAP and Caltech mean
class recall (Table 11), VOC-2012 action classification (Table 12), object boxes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from . import (MAX_PER_CLASS, MAX_SPLITS, add_dense_stride_flag, add_inference_flags,
               add_overwrite_flag, add_progress_flag, check_outputs, int_in, jobs_count, seed)

if TYPE_CHECKING:
    from ..transfer.features import ExtractOptions

LAYER_HELP = ("the map to pool: auto (default): relu7, the paper's penultimate layer (FC7 "
              "after its ReLU), for nets with the paper's FC width (4096), and pool5 for "
              "narrower, scaled-down nets, where it measured better (docs/transfer.md); or "
              "a name: relu7, relu6, fc7, pool5, relu5_3, ...")


def _add_extract_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scales", default=None, metavar="Q,Q,...",
                   help="test scales (smaller image side); default Appendix B's, scaled by "
                        "crop/224: 256,384,512,640,768 to average (VOC), 256,384,512 to "
                        "stack (Caltech)")
    p.add_argument("--layer", default="auto", metavar="NAME", help=LAYER_HELP)
    p.add_argument("--no-flip", dest="flip", action="store_false",
                   help="do not average with the mirror image's descriptor")
    add_dense_stride_flag(p)
    add_inference_flags(p, "auto")
    p.add_argument("--restart", action="store_true",
                   help="discard the shards of an interrupted extraction instead of "
                        "continuing it")
    add_progress_flag(p)


def register(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser(
        "features", help="Appendix B image descriptors (dense, multi-scale) to a .npz",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="One descriptor per image: the net without its last FC layer applied "
                    "densely\nto the image rescaled to each Q, the penultimate map "
                    "global-average-pooled,\naveraged with the mirror image's; the scales "
                    "averaged or stacked; L2-normalised.\nTwo nets: their descriptors "
                    "stacked. Shards are written to OUT.parts/ as it goes:\nrerun the same "
                    "command after an interruption to continue.",
        epilog="examples:\n"
               "  vgg features D.pt --data 101_ObjectCategories --combine stack --out c101.npz\n"
               "  vgg features D.pt E.pt --data VOCdevkit/VOC2007 --split trainval "
               "--out voc-trainval.npz\n"
               "  vgg transfer voc-trainval.npz --test voc-test.npz   # SVMs, no net rerun")
    f.add_argument("checkpoints", nargs="+", metavar="CKPT",
                   help="checkpoint(s): any head (the last FC layer is not used)")
    f.add_argument("--data", required=True, metavar="DIR",
                   help="class folders (DIR/<class>/...), or a dataset with splits (then give "
                        "--split), e.g. a VOC year folder")
    f.add_argument("--split", default=None, metavar="NAME",
                   help="split of DIR: a folder DIR/NAME, a VOC ImageSets/Main/NAME.txt, a "
                        "list file (default: DIR itself holds the class folders)")
    f.add_argument("--combine", choices=("average", "stack"), default="average",
                   help="combine the scales by averaging (default; VOC) or stacking (Caltech)")
    f.add_argument("--boxes", action="store_true",
                   help="describe every annotated object box (its region of the image) "
                        "instead of whole images (the boxes protocol's box descriptors)")
    f.add_argument("--out", required=True, metavar="OUT.npz",
                   help="features file to write (an existing one needs --overwrite; an "
                        "interrupted run's OUT.parts/ is continued without it)")
    add_overwrite_flag(f)
    _add_extract_flags(f)
    f.set_defaults(func=run_features)

    t = sub.add_parser(
        "transfer", help="linear SVMs on very deep features: VOC mAP, Caltech mean class "
                         "recall (Table 11), VOC-2012 actions (Table 12)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Appendix B end to end: descriptors of fixed nets (as `vgg features`), "
                    "one-vs-rest\nlinear SVMs (--solver) with C chosen on 20% of the "
                    "training images held out,\nthen the dataset's metric, beside the same "
                    "pipeline on randomly initialised nets\nof the same architectures (what "
                    "the trained features add).\n\n"
                    "protocols:\n"
                    "  voc      VOC year folder: train on trainval, test on test (train/val "
                    "when the\n           test images have no annotations); per-class AP, "
                    "mAP 11-point and area\n"
                    "  caltech  class folders (Caltech-101/256): --splits random splits of "
                    "30 (60 for\n           256 classes) training and up to 50 test images "
                    "per class; mean class\n           recall, mean and std over splits\n"
                    "  classes  the same on any class-folder tree (give --train-per-class);"
                    "\n           a tree with train/ and val/ (or test/): trained on train/, "
                    "tested\n           on val/ (random draws of --train-per-class when "
                    "given)\n"
                    "  actions  VOC-2012 action classification (Table 12): every person of "
                    "ImageSets/\n           Action a sample with 10 action flags; its "
                    "image's descriptor, its box's,\n           and both stacked; an SVM "
                    "per action; AP per action and mAP (area);\n           train -> val "
                    "(trainval -> test when the test persons are labelled)\n"
                    "  boxes    every annotated object box a sample, classified into the "
                    "object\n           classes: whole-image descriptor alone, and stacked "
                    "with the box's; mAP\n"
                    "Given .npz features (from `vgg features`) instead of checkpoints, the "
                    "SVMs run on\nthem: --test FILE, or random splits of one file.",
        epilog="examples:\n"
               "  vgg transfer D.pt E.pt --data VOCdevkit/VOC2007 --json voc.json\n"
               "  vgg transfer D.pt --data 101_ObjectCategories --protocol caltech "
               "--splits 3\n"
               "  vgg transfer D.pt E.pt --data VOCdevkit/VOC2012 --protocol actions\n"
               "  vgg transfer train.npz --test test.npz --json out.json")
    t.add_argument("sources", nargs="+", metavar="CKPT|FEATS.npz",
                   help="checkpoint(s), or one features file")
    t.add_argument("--data", default=None, metavar="DIR", help="the dataset (with checkpoints)")
    t.add_argument("--protocol", choices=("voc", "caltech", "classes", "boxes", "actions"),
                   default=None,
                   help="default: voc for a VOC year folder (actions for one with only "
                        "ImageSets/Action), else caltech")
    t.add_argument("--test", default=None, metavar="FEATS.npz",
                   help="test features (with a training features file)")
    t.add_argument("--train-per-class", type=int_in(1, MAX_PER_CLASS), default=None, metavar="N",
                   help="training images per class per split (caltech: 30, or 60 for "
                        "Caltech-256)")
    t.add_argument("--test-per-class", type=int_in(1, MAX_PER_CLASS), default=50, metavar="N",
                   help="at most N test images per class (default 50)")
    t.add_argument("--splits", type=int_in(1, MAX_SPLITS), default=3,
                   help=f"random splits (default 3, at most {MAX_SPLITS})")
    t.add_argument("--seed", type=seed, default=0, help="seed of the splits, the held-out "
                                                        "20%% and the random nets")
    t.add_argument("--combine", choices=("average", "stack"), default=None,
                   help="default: average for voc, actions and boxes, stack for "
                        "caltech/classes")
    t.add_argument("--C", dest="C", default=None, metavar="C,C,...",
                   help="SVM regularisation values to choose from on the held-out 20%% "
                        "(default 0.01,0.1,1,10,100,1000)")
    t.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="skip the random-init baseline (halves the extraction time)")
    t.add_argument("--features-dir", default=None, metavar="DIR",
                   help="keep the descriptors here (resumable; reused by a rerun)")
    t.add_argument("--solver", choices=("torch", "liblinear"), default="torch",
                   help="SVM solver, one problem (LinearSVC's): torch (default; all classes "
                        "at once, Newton's method, on the GPU when there is one) or "
                        "liblinear (scikit-learn's LinearSVC per class, slower)")
    t.add_argument("--jobs", type=jobs_count, default=None,
                   help="CPU threads fitting SVMs (default: all cores)")
    t.add_argument("--json", default=None, metavar="OUT.json", help="write the results as JSON")
    t.add_argument("--plot", default=None, metavar="OUT.png",
                   help="precision-recall curves per class (AP protocols; default: beside "
                        "--json)")
    add_overwrite_flag(t)
    _add_extract_flags(t)
    t.set_defaults(func=run_transfer)


def _scales(text: str | None) -> list[int] | None:
    from ..eval import parse_scales

    return parse_scales(text) if text is not None else None


def _c_grid(text: str | None) -> list[float]:
    from ..errors import ConfigError
    from ..transfer.svm import C_GRID

    if text is None:
        return list(C_GRID)
    try:
        grid = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--C takes numbers separated by commas, got {text!r}") from None
    if not grid or any(not (0 < c < 1e9) for c in grid):
        raise ConfigError(f"--C values must be positive and finite, got {text!r}")
    return grid


def _index(data: str, split: str | None, boxes: bool):  # noqa: ANN202
    from ..data.folders import index_folder, index_split, load_boxes
    from ..errors import DataError

    root = Path(data)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    if split is None:
        if (root / "ImageSets" / "Main").is_dir():
            raise DataError(f"{root} is a VOC year folder: give --split (trainval, test, ...)")
        index = index_folder(root)
    else:
        index = index_split(root, split)
    if boxes and index.boxes is None:
        load_boxes(index, split=split)
    return index


def _voc_year(data: Path) -> Path:
    """VOCdevkit/ holding one year folder -> that folder (said once)."""
    if (data / "ImageSets").is_dir() or not data.is_dir():
        return data
    years = [d for d in sorted(data.iterdir())
             if (d / "ImageSets" / "Main").is_dir() or (d / "ImageSets" / "Action").is_dir()]
    if len(years) == 1:
        import logging

        logging.getLogger(__name__).info("using the VOC year folder %s", years[0])
        return years[0]
    if len(years) > 1:
        from ..errors import DataError

        raise DataError(f"{data} holds several VOC years ({', '.join(d.name for d in years)}): "
                        f"give one, e.g. --data {years[0]}")
    return data


def _extract_options(args: argparse.Namespace, combine: str,
                     cache: Path | None = None) -> ExtractOptions:
    """The extraction settings of :func:`_add_extract_flags`' flags."""
    from ..transfer.features import ExtractOptions

    return ExtractOptions(scales=_scales(args.scales), combine=combine, layer=args.layer,
                          flip=args.flip, batch_size=args.batch, device=args.device,
                          workers=args.workers, precision=args.precision,
                          progress=args.progress, cache=cache, restart=args.restart,
                          dense_stride=args.dense_stride)


def run_features(args: argparse.Namespace) -> int:
    from ..transfer.features import as_feature_net, extract_with
    from ..transfer.protocols import box_index

    check_outputs((args.out, "--out"), inputs=args.checkpoints, overwrite=args.overwrite)
    nets = [as_feature_net(c, i) for i, c in enumerate(args.checkpoints)]
    index = _index(args.data, args.split, args.boxes)
    ids = None
    if args.boxes:
        index, ids, _ = box_index(index)
    feats = extract_with(nets, index, _extract_options(args, args.combine), out=args.out,
                         ids=ids, desc="boxes" if args.boxes else "features")
    skipped = f", {len(feats.skipped)} unreadable left out" if feats.skipped else ""
    print(f"{len(feats)} descriptors of {feats.dim} dimensions ({feats.meta['layer']}, Q "
          f"{','.join(map(str, feats.meta['scales']))}, stride "
          f"{feats.meta['dense_stride']}, {args.combine}, {feats.meta['precision']})"
          f"{skipped}: {args.out}")
    return 0


def run_transfer(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..transfer import protocols as P
    from ..transfer.features import Features, as_feature_net

    plot = args.plot or (str(Path(args.json).with_suffix("")) + "-pr.png" if args.json
                         else None)
    check_outputs((args.json, "--json"), (plot, "--plot" if args.plot else
                                          "--plot (default: beside --json)"),
                  inputs=[*args.sources, args.test], overwrite=args.overwrite)
    grid = _c_grid(args.C)
    given_features = args.sources[0].endswith(".npz")
    if given_features:
        if len(args.sources) > 1:
            raise ConfigError("give one training features file (and --test FILE)")
        if args.data is not None:
            raise ConfigError("--data is for checkpoints; features files carry their images")
        train = Features.load(args.sources[0])
        test = Features.load(args.test) if args.test else None
        report = P.run_saved(train, test, train_per_class=args.train_per_class,
                             test_per_class=args.test_per_class, splits=args.splits,
                             seed=args.seed, C_grid=grid, jobs=args.jobs,
                             train_name=args.sources[0], test_name=args.test or "",
                             solver=args.solver)
    else:
        if args.test is not None:
            raise ConfigError("--test takes a features file; with checkpoints give --data")
        if args.data is None:
            raise ConfigError("give --data DIR (the dataset to transfer to)")
        data = _voc_year(Path(args.data))
        voc = (data / "ImageSets" / "Main").is_dir()
        protocol = args.protocol or ("voc" if voc else "actions"
                                     if (data / "ImageSets" / "Action").is_dir()
                                     else "caltech")
        if protocol in ("caltech", "classes") and (voc or (data / "ImageSets").is_dir()):
            raise ConfigError(f"{data} is a VOC year folder: use --protocol voc (or actions, "
                              f"boxes)")
        nets = [as_feature_net(c, i) for i, c in enumerate(args.sources)]
        opts = _extract_options(
            args, args.combine or ("stack" if protocol in ("caltech", "classes")
                                   else "average"),
            cache=Path(args.features_dir) if args.features_dir else None)
        common = {"baseline": args.baseline, "seed": args.seed, "C_grid": grid,
                  "jobs": args.jobs, "solver": args.solver}
        if protocol == "voc":
            report = P.run_voc(nets, data, opts, **common)
        elif protocol == "boxes":
            report = P.run_boxes(nets, data, opts, **common)
        elif protocol == "actions":
            from ..transfer.actions import run_actions

            report = run_actions(nets, data, opts, **common)
        else:
            split_tree = (data / "train").is_dir() and any(
                (data / t).is_dir() for t in ("val", "test"))
            if protocol == "classes" and args.train_per_class is None and not split_tree:
                raise ConfigError("--protocol classes needs --train-per-class (or a dataset "
                                  "that comes split: DIR/train/ and DIR/val/)")
            report = P.run_splits(nets, data, opts, train_per_class=args.train_per_class,
                                  test_per_class=args.test_per_class, splits=args.splits,
                                  protocol=protocol, **common)
    print(report.table())
    if args.json:
        from .evaluate import _write_json

        _write_json(args.json, report.to_json())
        print(f"results: {args.json}")
    if plot and report.plot(plot):
        print(f"precision-recall curves: {plot}")
    return 0
