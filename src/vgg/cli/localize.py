"""``vgg localize``: Appendix A. ``train`` a box-regression net from a classification
checkpoint, ``evaluate`` it with the simple or the full protocol (ILSVRC localisation
error, fusion of several nets), ``predict`` boxes for images (and draw them), ``fuse``
saved boxes without rerunning a net."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from . import (MAX_TOP, add_dense_stride_flag, add_inference_flags, add_overwrite_flag,
               add_progress_flag, check_outputs, int_in)

log = logging.getLogger(__name__)

CLASS_CHOICES = ("per-scale", "image")  # vgg.localize.evaluate.CLASS_CHOICES (torch-free here)

_TRAIN_EPILOG = """\
The localisation net has the classification net's layers (arch, width, FC width, crop,
batch norm) and classes; every layer is copied from --from but the last, which predicts
a box (centre x, centre y, width, height, in units of the crop side) for all classes
(--head scr) or per class (--head pcr) and starts random. Defaults are Appendix A's:
Euclidean loss, initial lr 1e-3, the classification recipe otherwise (momentum 0.9,
weight decay 5e-4, plateau schedule on the validation localisation error of the simple
protocol), a single training scale S (default: the classification net's S, or the
middle of its jitter range).

examples:
  vgg localize train --data DIR --from runs/cls/best.pt --head pcr --out runs/loc
  vgg localize train --data DIR --from runs/cls/best.pt --head scr --tune fc --out runs/scr
  vgg localize train --resume runs/loc --epochs 40"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("localize", help="localisation (Appendix A): train, evaluate, "
                                        "predict and fuse box-regression nets",
                       description="Localisation as in Appendix A of the paper: a "
                                   "classification net whose last layer predicts boxes, "
                                   "the simple and the full testing protocol, greedy "
                                   "merging and the ILSVRC localisation error.")
    sub2 = p.add_subparsers(dest="localize_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 1)[1])
    _register_train(sub2)
    _register_evaluate(sub2)
    _register_predict(sub2)
    _register_fuse(sub2)


def _register_train(sub: argparse._SubParsersAction) -> None:
    from .train import add_machinery_flags, add_recipe_flags, add_run_flags

    t = sub.add_parser("train", help="train an SCR/PCR net from a classification checkpoint",
                       description="Train a localisation net (Appendix A.1) through the "
                                   "same trainer as classification: checkpoints every "
                                   "epoch, exact resume, DDP (torchrun), metrics.jsonl, "
                                   "curves.png.",
                       epilog=_TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                       argument_default=argparse.SUPPRESS)
    add_run_flags(t)
    loc = t.add_argument_group("localisation (Appendix A)")
    loc.add_argument("--from", dest="source", metavar="CKPT",
                     help="the classification checkpoint to start from (required for a new "
                          "run)")
    loc.add_argument("--head", choices=("pcr", "scr"),
                     help="per-class regression (pcr, default) or single-class (scr)")
    loc.add_argument("--tune", choices=("all", "fc"),
                     help="fine-tune all layers (default) or only FC1, FC2 and the new "
                          "last layer (fc)")
    loc.add_argument("--boxes", metavar="SRC",
                     help="box annotations (VOC/ILSVRC XML folder or LOC / detection CSV); "
                          "default: found next to the data (see `vgg data boxes`)")
    rec = t.add_argument_group("recipe")
    add_recipe_flags(rec)
    add_machinery_flags(t, classification=False)
    t.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from ..train import train
    from .train import given_settings

    from ..localize.task import localisation_config

    cfg = localisation_config(given_settings(args), getattr(args, "config", None))
    result = train(cfg)
    if result.interrupted:
        log.warning("interrupted: resume with `vgg localize train --resume %s`",
                    result.run_dir)
        return 130
    best = (f"best validation localisation error {result.best_err:.4f} -> "
            f"{result.best_path}" if result.best_err is not None else "no epoch finished")
    log.info("done (%s): %s; last state %s", result.stopped, best, result.last_path)
    return 0


def _common_eval_flags(p: argparse.ArgumentParser, precision: str) -> None:
    p.add_argument("--scales", default=None, metavar="Q,Q,...",
                   help="test scales (smaller image side); default Q = S of each net "
                        "(Table 9 also uses S-32,S)")
    full = p.add_argument_group("full protocol (dense boxes, greedy merging)")
    full.add_argument("--threshold", type=float, default=None, metavar="T",
                      help="greedy-merging threshold on the match score (default 0.7; see "
                           "docs/localisation.md)")
    add_dense_stride_flag(full)
    full.add_argument("--classes", choices=CLASS_CHOICES, default=None,
                      help="which classes get boxes: per-scale (default, OverFeat): at each "
                           "scale the 5 classes with the highest classifier score at any "
                           "position; image: the classifier's image-level top-5 at every "
                           "scale")
    full.add_argument("--classifier-scales", default=None, metavar="Q,Q,...",
                      help="test scales of the classifier's image-level posterior, which "
                           "rates the guesses; default its own multi-scale Q (Sect. 3.2: "
                           "S-32,S,S+32, or Smin,(Smin+Smax)/2,Smax)")
    add_inference_flags(p, precision)
    add_progress_flag(p)


def _register_evaluate(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("evaluate", help="localisation error: simple or full protocol",
                       description="Evaluate localisation nets on a dataset with boxes. "
                                   "--protocol simple: one central crop at Q = S and the "
                                   "box of the ground-truth class (Table 8). --protocol "
                                   "full: dense boxes at every position (--dense-stride "
                                   "apart), scale and mirror for each scale's top-5 "
                                   "classes of --classifier, greedy merging, five (class, "
                                   "box) guesses rated by the classifier; several nets are "
                                   "fused (the union of their boxes, Table 10). Each line "
                                   "also shows two baselines on the same images.")
    e.add_argument("checkpoints", nargs="+", metavar="LOC_CKPT")
    e.add_argument("--classifier", metavar="CKPT",
                   help="the classification net (needed by --protocol full)")
    e.add_argument("--data", required=True, metavar="DIR", help="dataset with boxes")
    e.add_argument("--split", default="val", metavar="NAME", help="split to evaluate (val)")
    e.add_argument("--boxes", default=None, metavar="SRC",
                   help="box annotations of the split (default: found next to the data)")
    e.add_argument("--protocol", choices=("simple", "full"), default="full")
    e.add_argument("--json", default=None, metavar="OUT.json", help="write the errors")
    e.add_argument("--save-boxes", default=None, metavar="OUT.npz",
                   help="write per-image boxes (for `vgg localize fuse` / re-scoring)")
    e.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    add_overwrite_flag(e)
    _common_eval_flags(e, "fp32")
    e.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..eval import parse_scales
    from ..localize.data import box_index
    from ..localize.evaluate import as_loc_net, full_protocol, simple_protocol
    from ..localize.fusion import fuse_results
    from ..localize.merge import DEFAULT_MERGE_THRESHOLD
    from ..report import loc_table
    from .evaluate import _write_json

    scales = parse_scales(args.scales) if args.scales is not None else None
    check_outputs((args.json, "--json"), (args.save_boxes, "--save-boxes"),
                  inputs=[*args.checkpoints, args.classifier, args.boxes],
                  overwrite=args.overwrite)
    if args.protocol == "full" and not args.classifier:
        raise ConfigError("--protocol full needs --classifier CKPT (the classification net "
                          "that names the top-5 classes)")
    nets = [as_loc_net(c, i) for i, c in enumerate(args.checkpoints)]
    classes = nets[0].model.classes
    index, _ = box_index(args.data, args.split, classes, args.boxes, what=nets[0].name)
    common = dict(batch_size=args.batch, device=args.device, workers=args.workers,
                  precision=args.precision, progress=args.progress)
    if args.protocol == "simple":
        for flag, given in (("--threshold", args.threshold is not None),
                            ("--dense-stride", args.dense_stride is not None),
                            ("--classes", args.classes is not None),
                            ("--classifier-scales", args.classifier_scales is not None)):
            if given:
                raise ConfigError(f"{flag} applies to --protocol full (the simple protocol "
                                  f"runs one central crop)")
        if scales and len(scales) > 1:
            raise ConfigError("the simple protocol uses one test scale: give one --scales")
        results = [simple_protocol(n, index, scales[0] if scales else None, **common)
                   for n in nets]
    else:
        thr = DEFAULT_MERGE_THRESHOLD if args.threshold is None else args.threshold
        results = [full_protocol(n, args.classifier, index, scales, threshold=thr,
                                 **_full_settings(args), **common)
                   for n in nets]
        if len(nets) > 1:  # Table 10: the union of the nets' boxes, merged (no net rerun)
            results.append(fuse_results(results, [n.name for n in nets], thr))
    final = results[-1]
    print(loc_table(results, fmt="markdown" if args.markdown else "text"))
    if final.protocol == "full":
        print(full_settings_line(final))
    extra = ""
    if "cls_top1_err" in final.errors:
        extra = (f"; classification top-1/top-5 error {100 * final.errors['cls_top1_err']:.1f}"
                 f" / {100 * final.errors['cls_top5_err']:.1f}%")
    print(f"{final.n_images} images" + (f", {len(final.skipped)} unreadable skipped"
                                         if final.skipped else "")
          + f"; mean IoU of the first guess {final.mean_iou():.3f}{extra}")
    if args.save_boxes:
        print(f"boxes: {final.save(args.save_boxes)}")
    if args.json:
        _write_json(args.json, final.to_json() | {"parts": [r.to_json() for r in results[:-1]]})
        print(f"metrics: {args.json}")
    return 0


def _full_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The full protocol's keywords from --dense-stride, --classes, --classifier-scales."""
    from ..eval import parse_scales
    from ..localize.evaluate import DEFAULT_CLASSES

    return {"dense_stride": args.dense_stride, "class_choice": args.classes or DEFAULT_CLASSES,
            "classifier_scales": (parse_scales(args.classifier_scales)
                                  if args.classifier_scales is not None else None)}


def full_settings_line(r: Any) -> str:
    """The settings of a full-protocol result that the table does not show."""
    cq = ",".join(map(str, r.classifier_scales or [])) or "?"
    which = {"per-scale": "each scale's top-5 classes",
             "image": "the image-level top-5 classes"}.get(r.class_choice, r.class_choice)
    return (f"full protocol: boxes at dense stride "
            f"{' & '.join(dict.fromkeys(map(str, r.dense_stride)))} for {which}, rated by "
            f"the classifier {r.classifier} at Q = {cq} (stride {r.classifier_stride or '?'}); "
            f"merge threshold {r.threshold:g}")


def _register_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="boxes and classes for images (and pictures of them)",
                       description="The full protocol on images without labels: the "
                                   "--top (class, score, box) guesses of each image. "
                                   "--draw writes each image with its guesses drawn and, "
                                   "when a VOC XML file sits beside the image, its "
                                   "ground-truth boxes in green.")
    p.add_argument("checkpoint", metavar="LOC_CKPT")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--classifier", required=True, metavar="CKPT")
    p.add_argument("--top", type=int_in(1, MAX_TOP), default=5, help="guesses per image (5)")
    p.add_argument("--draw", default=None, metavar="OUT_DIR",
                   help="write <OUT_DIR>/<image>.png with the guesses drawn (a folder that "
                        "already holds .png files needs --overwrite; pictures of the same "
                        "names are replaced)")
    add_overwrite_flag(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    _common_eval_flags(p, "auto")
    p.set_defaults(func=_predict)


def _predict(args: argparse.Namespace) -> int:
    from ..eval import parse_scales
    from ..localize.merge import DEFAULT_MERGE_THRESHOLD
    from ..localize.predict import draw_guesses, predict_boxes
    from .predict import report_predictions

    scales = parse_scales(args.scales) if args.scales is not None else None
    thr = DEFAULT_MERGE_THRESHOLD if args.threshold is None else args.threshold
    if args.draw:
        check_draw_folder(Path(args.draw), args.inputs, args.overwrite)
    preds = predict_boxes(args.checkpoint, args.classifier, args.inputs, top=args.top,
                          scales=scales, threshold=thr, batch_size=args.batch,
                          device=args.device, workers=args.workers,
                          precision=args.precision, progress=args.progress,
                          **_full_settings(args))
    rc = report_predictions(preds, args.inputs, args.json, lambda p: f"{p.path}: " + "; ".join(
        f"{c} ({s:.3g}) [{', '.join(f'{v:.0f}' for v in b)}]" for c, s, b in p.guesses))
    if args.draw:
        for path in draw_guesses(preds, args.draw):
            log.info("drew %s", path)
    return rc


def check_draw_folder(folder: Path, inputs: list[str], overwrite: bool) -> None:
    """The output rule for `--draw DIR` (a folder of pictures): never a folder that holds
    (or is) an input; a folder that already holds .png files only with --overwrite."""
    from ..errors import ConfigError

    for i in inputs:
        p = Path(i).resolve()
        if p == folder.resolve() or folder.resolve() in p.parents:
            raise ConfigError(f"--draw {folder} holds the input {i}; draw into another folder")
    if folder.is_file():
        raise ConfigError(f"--draw {folder} is a file; give a folder")
    if not overwrite and folder.is_dir() and any(folder.glob("*.png")):
        raise ConfigError(f"--draw {folder} already holds pictures; pass --overwrite to "
                          f"replace those of the same names")


def _register_fuse(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser("fuse", help="fuse or re-score saved boxes (no net is run)",
                       description="Merge the union of the boxes saved by `vgg localize "
                                   "evaluate --protocol full --save-boxes` for several "
                                   "nets (Table 10's fusion), or re-score one file with "
                                   "another --threshold.")
    f.add_argument("boxes", nargs="+", metavar="BOXES.npz")
    f.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="greedy-merging threshold (default: the files')")
    f.add_argument("--json", default=None, metavar="OUT.json")
    f.add_argument("--save", default=None, metavar="OUT.npz")
    f.add_argument("--markdown", action="store_true")
    add_overwrite_flag(f)
    f.set_defaults(func=_fuse)


def _fuse(args: argparse.Namespace) -> int:
    from ..localize.fusion import fuse_results
    from ..localize.result import load_saved
    from ..report import loc_table
    from .evaluate import _write_json

    check_outputs((args.json, "--json"), (args.save, "--save"), inputs=args.boxes,
                  overwrite=args.overwrite)
    parts = [load_saved(p) for p in args.boxes]
    fused = fuse_results(parts, args.boxes, args.threshold)
    rows = parts + [fused] if len(parts) > 1 else [fused]
    print(loc_table(rows, fmt="markdown" if args.markdown else "text"))
    print(full_settings_line(fused))
    print(f"{fused.n_images} images, {len(parts)} input(s), merge threshold "
          f"{fused.threshold:g}")
    if args.save:
        print(f"boxes: {fused.save(args.save)}")
    if args.json:
        _write_json(args.json, fused.to_json() | {"inputs": [str(p) for p in args.boxes]})
        print(f"metrics: {args.json}")
    return 0
