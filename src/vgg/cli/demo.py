"""`vgg demo`: data -> training -> every test protocol -> report, on the embedded dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import add_device_flag, add_progress_flag, seed, workers_count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="the whole system on the embedded shapes dataset, in minutes",
        description="Generate the embedded shapes dataset (if absent), train a scaled-down "
                    "VGG with the paper's recipe (scale jittering, PCA colour shift, SGD "
                    "with momentum, plateau schedule), evaluate it "
                    "with centre crop, dense at one and three scales, multi-crop and "
                    "multi-crop & dense, train a PCR localisation net from it and evaluate "
                    "it with the simple and the full protocol (Appendix A), and write a "
                    "report (report.md, results.json, plots) to --out. Under 10 minutes on "
                    "a 2-core CPU (under 2 with --quick); uses a GPU when there is one.")
    p.add_argument("--out", type=Path, default=Path("vgg-demo"),
                   help="report folder (default vgg-demo); the dataset goes to OUT/data and "
                        "the training run to OUT/run. The folder is the demo's own: a rerun "
                        "reuses OUT/data and replaces the runs, report and plots (no "
                        "--overwrite needed)")
    p.add_argument("--quick", action="store_true",
                   help="a smaller dataset and fewer epochs: under 2 minutes on a 2-core CPU")
    add_device_flag(p)
    p.add_argument("--seed", type=seed, default=0, help="dataset and training seed")
    p.add_argument("--workers", type=workers_count, default=None,
                   help="data-loading processes (default: the usable cores)")
    p.add_argument("--amp", choices=("auto", "bf16", "fp16", "none"), default="auto",
                   help="mixed precision of the two training runs, as `vgg train --amp`: "
                        "auto (default: bf16 where the hardware runs it natively and it "
                        "measured faster at the demo's net size), bf16, fp16 (CUDA) or none "
                        "(fp32)")
    add_progress_flag(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..demo import DemoConfig, run_demo

    run_demo(DemoConfig(out=args.out, quick=args.quick, device=args.device, seed=args.seed,
                        workers=args.workers, progress=args.progress, amp=args.amp))
    return 0
