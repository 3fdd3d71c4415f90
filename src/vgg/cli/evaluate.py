"""``vgg evaluate``: Sect. 3.2 testing (dense, multi-crop, both, centre crop; one or several
test scales; one net or a fusion of nets) with top-1/top-5 error in the paper's layout."""

from __future__ import annotations

import argparse
import json

from . import (add_dense_stride_flag, add_inference_flags, add_list_flags, add_overwrite_flag,
               add_progress_flag, check_outputs)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="top-1/top-5 error with dense / multi-crop / multi-scale testing",
        description="Evaluate one checkpoint, or the fusion (averaged posteriors) of several, "
                    "on a labelled dataset. Prints a table in the paper's layout (config, "
                    "train S, test Q, method, top-1, top-5).",
        epilog="--data DIR: a dataset root with DIR/val (class folders, or ImageNet's flat "
               "val with its devkit), or else a folder of class folders; --val-list FILE "
               "scores the images a list names (paths relative to DIR), --val-split F the "
               "part of DIR's training images a `vgg train --val-split F` run held out. "
               "Default test scales (Sect. 3.2): fixed S -> {S-32, S, S+32}; jittered "
               "[s_min, s_max] -> {s_min, mid, s_max}; method center -> S or mid only.")
    p.add_argument("checkpoints", nargs="+", metavar="CKPT",
                   help="checkpoint file(s); torchvision/timm/Caffe/Keras weights are "
                        "converted on the fly")
    p.add_argument("--data", required=True, metavar="DIR", help="dataset to evaluate on")
    p.add_argument("--split", default=None, metavar="NAME",
                   help="the split to evaluate: a folder DIR/NAME (class folders, or "
                        "ImageNet's flat val) or a list file of DIR (default: val when "
                        "DIR/val exists, else DIR itself holds the class folders)")
    add_list_flags(p, train=False)
    p.add_argument("--method", choices=("dense", "multicrop", "both", "center"),
                   default="dense", help="dense (default), multicrop (5x5 grid + mirrors = 50 "
                   "crops per scale), both (their average) or center (one centre crop)")
    p.add_argument("--scales", default=None, metavar="Q,Q,...",
                   help="test scales (smaller image side), e.g. 256,384,512; default from the "
                        "checkpoint's training scale")
    p.add_argument("--single-scale", action="store_true",
                   help="default to one test scale (Q = S, or the middle of [s_min, s_max])")
    p.add_argument("--no-flip", dest="flip", action="store_false",
                   help="do not average with the horizontally mirrored image")
    add_dense_stride_flag(p)
    add_inference_flags(p)
    add_progress_flag(p)
    p.add_argument("--save-posteriors", default=None, metavar="OUT.npz",
                   help="write per-image posteriors (for `vgg fuse`)")
    p.add_argument("--json", default=None, metavar="OUT.json", help="write the metrics as JSON")
    add_overwrite_flag(p)
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.set_defaults(func=run)


def load_index(args: argparse.Namespace, classes: list[str] | None,
               known: str = "the net"):  # noqa: ANN201
    """The images to score (``vgg.data.sources.eval_index``): --val-list, the held-out
    part of --val-split, DIR/<split> (default val), else DIR as class folders."""
    from ..data.sources import DataSpec, eval_index

    seed = getattr(args, "split_seed", None)
    spec = DataSpec(args.data, getattr(args, "train_list", None),
                    getattr(args, "val_list", None), getattr(args, "val_split", None),
                    0 if seed is None else seed)
    return eval_index(spec, args.split, classes, known)


def result_rows(result) -> list:  # noqa: ANN001
    """The result, preceded by its parts when it combines nets or methods."""
    rows = []
    if len(result.nets) > 1:
        rows += [result.select(nets=[i]) for i in range(len(result.nets))]
    if result.method == "both":
        rows += [result.select(method="dense"), result.select(method="multicrop")]
    return rows + [result]


def run(args: argparse.Namespace) -> int:
    from ..eval import as_net, evaluate, parse_scales
    from ..report import paper_table

    scales = parse_scales(args.scales) if args.scales is not None else None
    check_outputs((args.save_posteriors, "--save-posteriors"), (args.json, "--json"),
                  inputs=[*args.checkpoints, args.val_list, args.train_list],
                  overwrite=args.overwrite)
    nets = [as_net(c, index=i) for i, c in enumerate(args.checkpoints)]
    index = load_index(args, nets[0].model.classes, nets[0].name)
    result = evaluate(nets, index, method=args.method, scales=scales, flip=args.flip,
                      batch_size=args.batch, device=args.device, workers=args.workers,
                      precision=args.precision, multi_scale=not args.single_scale,
                      progress=args.progress, dense_stride=args.dense_stride)
    print(paper_table(result_rows(result), fmt="markdown" if args.markdown else "text"))
    print(f"{result.n_images} images" + (f", {len(result.skipped)} unreadable skipped"
                                         if result.skipped else ""))
    if args.save_posteriors:
        print(f"posteriors: {result.save_posteriors(args.save_posteriors)}")
    if args.json:
        _write_json(args.json, result.to_json())
        print(f"metrics: {args.json}")
    return 0


def _write_json(path: str, obj: dict) -> None:
    from ..checkpoint import atomic_write
    from ..errors import VggError

    try:
        atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2).encode()))
    except OSError as e:
        raise VggError(f"cannot write {path}: {e.strerror or e}") from None
