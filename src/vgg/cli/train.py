"""``vgg train``: the paper's training recipe (Sect. 3.1) on one device or many
(``torchrun``), with YAML configs, checkpoints every epoch / N minutes and exact resume."""

from __future__ import annotations

import argparse
from typing import Any

from . import (add_dense_stride_flag, add_device_flag, add_list_flags, add_model_flags,
               nonneg_float, nonneg_int, positive_float, positive_int, side, unit_float,
               workers_count)

_EPILOG = """\
defaults are the paper's recipe (Sect. 3.1): SGD, momentum 0.9, batch 256, weight decay
5e-4 on conv/FC weights (biases and BN parameters are NOT decayed unless --decay-biases),
dropout 0.5 on FC1/FC2, lr 1e-2 divided by 10 when the validation top-1 error stops
improving (--patience epochs, --plateau-threshold), 3 decreases then stop, at most 74
epochs. For a short budget fixed in advance, --schedule cosine (with --warmup) anneals
where the plateau schedule may never fire. Precedence: built-in defaults < --config FILE
< flags given on the command line.

examples:
  vgg train --data DIR --arch A --scale 256 --out runs/A-S256
  vgg train --config configs/D-S256.yaml --data DIR --init-from runs/A-S256/best.pt
  vgg train --config configs/D-S384.yaml --data DIR --finetune-from runs/D-S256/best.pt
  vgg train --data DIR --arch A --bn --width 0.25 --fc-width 1024 --crop 32 \\
            --scale 36-48 --batch 64 --lr 0.02 --init kaiming --schedule cosine \\
            --warmup 1 --epochs 30 --device cpu
                                             # scaled down for a laptop (docs/training.md)
  vgg train --data caltech101/101_ObjectCategories --train-list caltech101/train.txt \
            --val-list caltech101/test.txt ...   # split lists: 'class/file.jpg' a line
  vgg train --data photos --val-split 0.2 ...    # class folders, no val/: 20% of each
                                                 # class validates (--split-seed 0)
  vgg train --resume runs/A-S256             # continue a stopped/killed run exactly
  vgg train --resume runs/A-S256 --epochs 90 # ... and extend it
  torchrun --nproc-per-node 4 -m vgg train --config configs/D-S256.yaml --data DIR
see docs/training.md for resume semantics and multi-node runs."""


def _scale(text: str) -> tuple[int, int]:
    from ..errors import ConfigError
    from ..train.config import parse_scale

    try:
        s = parse_scale(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if min(s) < 1:
        raise argparse.ArgumentTypeError(f"scales must be >= 1, got {text!r}")
    return s


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a net with the paper's recipe (scale jittering, plateau lr, "
                      "resumable, multi-GPU via torchrun)",
        description="Train one of the nets of Table 1 on an ImageFolder-style dataset "
                    "(DIR/train/<class>/..., DIR/val/...; or file lists of DIR, or class "
                    "folders with a held-out --val-split) with the recipe of Sect. 3.1. "
                    "Writes RUN/last.pt, RUN/best.pt (both usable by `vgg evaluate` and "
                    "`vgg predict`), RUN/config.yaml, RUN/metrics.jsonl, RUN/curves.png.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS)
    add_run_flags(p)
    add_model_flags(p)
    for action in p._actions:  # only flags the user gives may override --config
        if action.dest in ("arch", "bn", "width", "fc_width", "crop"):
            action.default = argparse.SUPPRESS
    p.add_argument("--dropout", type=unit_float, help="dropout on FC1/FC2 (paper 0.5)")
    rec = p.add_argument_group("recipe (Sect. 3.1)")
    add_recipe_flags(rec)
    ini = p.add_argument_group("initialisation")
    ini.add_argument("--init", choices=("gaussian", "gaussian-scaled", "glorot", "kaiming"),
                     help="random init scheme (gaussian = N(0, --init-std); gaussian-scaled "
                          "= the same with each layer's std times sqrt(full-size fan-in / "
                          "fan-in), the paper's per-layer gain in a scaled-down net)")
    ini.add_argument("--init-std", type=positive_float, help="gaussian std (0.01)")
    ini.add_argument("--init-from", metavar="CKPT", help="copy the first 4 convs and the 3 FC "
                     "layers of a trained net A (the paper's pre-initialisation)")
    ini.add_argument("--finetune-from", metavar="CKPT", help="start from all weights of CKPT "
                     "(S=256 -> S=384 -> jittered S)")
    ini.add_argument("--stats", metavar="JSON", help="colour statistics (vgg data stats); "
                     "default: computed over --stats-limit training images")
    ini.add_argument("--stats-limit", type=positive_int, help="images for the statistics (2000)")
    add_machinery_flags(p)
    p.set_defaults(func=run)


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """--data, --out, --config, --resume, --overwrite (shared with `vgg localize train`)."""
    io = p.add_argument_group("data and run")
    io.add_argument("--data", metavar="DIR", help="dataset folder: with train/ and val/ "
                    "(any layout of docs/data.md), or the folder the paths of --train-list "
                    "/ --val-list are relative to, or class folders split by --val-split")
    add_list_flags(io)
    io.add_argument("--out", metavar="RUN", help="run folder (default runs/train)")
    io.add_argument("--config", metavar="FILE", help="YAML settings (configs/*.yaml); "
                    "flags given here override them")
    io.add_argument("--resume", metavar="RUN", help="continue the run in RUN exactly where "
                    "its last checkpoint left it (its config.yaml is used; only --epochs, "
                    "--data, --train-list, --val-list (moved files, same images), --device, "
                    "--workers and saving/logging flags may change)")
    io.add_argument("--overwrite", action="store_true",
                    help="start a new run in an --out folder that already holds one "
                         "(its checkpoints and metrics are replaced)")


def add_recipe_flags(rec: Any) -> None:
    """The Sect. 3.1 recipe flags (shared with `vgg localize train`)."""
    rec.add_argument("--scale", type=_scale, metavar="S|SMIN-SMAX",
                     help="training scale: fixed S (256) or jittered per image (256-512)")
    rec.add_argument("--epochs", type=positive_int, help="maximum epochs (paper 74)")
    rec.add_argument("--batch", type=positive_int, help="global batch (paper 256)")
    rec.add_argument("--micro-batch", type=positive_int, metavar="M",
                     help="images per forward/backward; gradients are accumulated to --batch "
                          "with the same result (except batch-norm statistics)")
    rec.add_argument("--lr", type=positive_float, help="initial learning rate (paper 1e-2; "
                     "1e-3 when fine-tuning S=256 -> S=384)")
    rec.add_argument("--momentum", type=unit_float, help="SGD momentum (0.9)")
    rec.add_argument("--weight-decay", type=nonneg_float, help="L2 multiplier (5e-4)")
    rec.add_argument("--decay-biases", action=argparse.BooleanOptionalAction,
                     help="also weight-decay biases and BN parameters (default: no)")
    rec.add_argument("--schedule", choices=("plateau", "cosine", "step"),
                     help="plateau (the paper's: /10 when val error stops improving), "
                          "cosine (anneal to 0 over --epochs) or step (--lr-decreases "
                          "evenly spaced /10 steps); default plateau")
    rec.add_argument("--warmup", type=nonneg_float, metavar="EPOCHS",
                     help="linear lr warm-up over this many epochs (0)")
    rec.add_argument("--lr-factor", type=positive_float, help="lr multiplier at a plateau (0.1)")
    rec.add_argument("--patience", type=nonneg_int,
                     help="epochs without improvement before a decrease (2)")
    rec.add_argument("--plateau-threshold", type=nonneg_float,
                     help="improvement of val top-1 error that counts (0.001)")
    rec.add_argument("--lr-decreases", type=nonneg_int,
                     help="decreases before the next plateau stops training (3)")
    rec.add_argument("--flip", action=argparse.BooleanOptionalAction,
                     help="random horizontal flips (default on)")
    rec.add_argument("--colour-std", type=nonneg_float,
                     help="std of the PCA colour shift alphas (0.1; 0 = off)")


def add_machinery_flags(p: argparse.ArgumentParser, classification: bool = True) -> None:
    """Validation and machinery flags (shared with `vgg localize train`, whose
    validation is always the simple protocol)."""
    val = p.add_argument_group("validation")
    if classification:
        val.add_argument("--val-method", choices=("center", "dense"),
                         help="centre crop (default) or dense fully-convolutional")
        add_dense_stride_flag(val, default=argparse.SUPPRESS)
    val.add_argument("--val-scale", type=side, metavar="Q",
                     help="test scale (default: S, or (SMIN+SMAX)/2)")
    val.add_argument("--val-batch", type=positive_int, help="validation batch")
    dev = p.add_argument_group("machinery")
    add_device_flag(dev, default=argparse.SUPPRESS)
    dev.add_argument("--amp", choices=("none", "bf16", "fp16", "auto"),
                     help="mixed precision: bf16 (CUDA, or a CPU: autocast, weights, "
                          "optimizer state, loss and checkpoints fp32), fp16 (CUDA), auto "
                          "(bf16 where the hardware runs it natively and it measured faster "
                          "for the net's size, docs/training.md) or none (fp32, default). "
                          "A resumed run keeps its own")
    dev.add_argument("--channels-last", action=argparse.BooleanOptionalAction,
                     help="train the net and its batches in the channels-last (NHWC) memory "
                          "format (default on: the faster one measured on CPUs and the "
                          "one cuDNN prefers); --no-channels-last: NCHW")
    dev.add_argument("--compile", action=argparse.BooleanOptionalAction,
                     help="torch.compile the net")
    dev.add_argument("--deterministic", action=argparse.BooleanOptionalAction,
                     help="deterministic kernels (slower on GPU)")
    dev.add_argument("--workers", type=workers_count,
                     help="loader processes (default: the usable cores, at most 8)")
    dev.add_argument("--seed", type=nonneg_int, help="(0)")
    dev.add_argument("--save-every-minutes", type=positive_float,
                     help="also checkpoint inside an epoch this often (30)")
    dev.add_argument("--save-every-steps", type=nonneg_int,
                     help="also checkpoint every N optimizer steps (0 = off)")
    dev.add_argument("--tensorboard", action=argparse.BooleanOptionalAction,
                     help="TensorBoard scalars in RUN/tb when installed (default on)")
    dev.add_argument("--plot", action=argparse.BooleanOptionalAction,
                     help="RUN/curves.png at the end (default on)")
    dev.add_argument("--progress", action=argparse.BooleanOptionalAction,
                     help="progress bars on a terminal, a line every 30 s in a log file "
                          "(default on)")


# argparse dest -> TrainConfig field, where they differ
_RENAME = {"bn": "batch_norm"}


def given_settings(args: argparse.Namespace) -> dict[str, object]:
    """The settings the user typed (argument_default=SUPPRESS leaves the others out)."""
    skip = {"func", "command", "verbose", "config", "localize_command"}
    out = {}
    for k, v in vars(args).items():
        if k in skip:
            continue
        out[_RENAME.get(k, k)] = v
    return out


def config_from_args(args: argparse.Namespace) -> object:
    """The run's TrainConfig: a new run from defaults < --config < given flags, or the
    saved run changed by exactly the flags given (``--resume``)."""
    from ..errors import ConfigError
    from ..train import load_yaml, resolve, resume_config

    given = given_settings(args)
    if given.get("resume"):
        if getattr(args, "config", None):
            raise ConfigError("--resume uses the run's own config.yaml; drop --config")
        return resume_config(given["resume"], given)
    file_values = load_yaml(args.config) if getattr(args, "config", None) else {}
    return resolve(file_values, given)


def run(args: argparse.Namespace) -> int:
    import logging

    from ..train import train

    cfg = config_from_args(args)
    result = train(cfg)  # type: ignore[arg-type]
    log = logging.getLogger("vgg.train")
    if result.interrupted:
        log.warning("interrupted: resume with `vgg train --resume %s`", result.run_dir)
        return 130
    best = (f"best validation error {result.best_err:.4f} -> {result.best_path}"
            if result.best_err is not None else "no epoch finished")
    log.info("done (%s): %s; last state %s", result.stopped, best, result.last_path)
    return 0
