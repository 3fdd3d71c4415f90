"""`vgg study`: the paper's experiments (Tables 3-6, the initialisation finding) in kind,
with a verdict per finding (vgg.study)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from . import add_device_flag, add_progress_flag, int_in, workers_count


def _budget(text: str) -> float:
    from ..errors import ConfigError
    from ..study import parse_budget

    try:
        return parse_budget(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e).replace("--budget ", "")) from None


def _devices(text: str) -> tuple[str, ...]:
    devs = tuple(d.strip() for d in text.split(",") if d.strip())
    if not devs:
        raise argparse.ArgumentTypeError(f"expected devices like cuda:0,cuda:1, got {text!r}")
    return devs


def _tables(text: str) -> tuple[str, ...]:
    from ..errors import ConfigError
    from ..study import parse_tables

    try:
        return parse_tables(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e).replace("--only: ", "")) from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study", help="the paper's experiments (Tables 3-6, init) in kind, with verdicts",
        description="Plan, train and evaluate every net that the paper's Tables 3-6 and "
                    "its initialisation finding (Sect. 3.1) need, scaled down to the "
                    "machine (width, FC width, crop, S and Q), each through the `vgg "
                    "train` / `vgg evaluate` machinery in a run folder keyed by its "
                    "settings (finished runs are reused, interrupted ones resumed), then "
                    "write OUT/report.md: each table with the paper's numbers beside ours, "
                    "a verdict per finding (holds / does not hold / inconclusive at this "
                    "scale) from a bootstrap over seeds, then validation images (3 seeds "
                    "a net by default), and plots. `--plan` lists every run and finding "
                    "without training. "
                    "docs/study.md gives the time it takes.")
    p.add_argument("--out", type=Path, default=Path("vgg-study"),
                   help="study folder (default vgg-study): data/, runs/, report.md")
    p.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help="a class-folder dataset with train/ and val/ (default: generate "
                        "the harder shapes set in OUT/data)")
    p.add_argument("--budget", type=_budget, default=None, metavar="TIME",
                   help="fit the study to about this wall time (2h, 90m, 600s): every "
                        "epoch count is scaled by the budget over an estimate from timed "
                        "SGD steps (default: the plan's own sizes)")
    p.add_argument("--quick", action="store_true",
                   help="a smaller dataset and fewer epochs (see docs/study.md for its time)")
    add_device_flag(p)
    p.add_argument("--devices", type=_devices, default=None, metavar="LIST",
                   help="train several runs at once, one per device: cuda:0,cuda:1 (the "
                        "default when --device auto finds several GPUs), or cpu,cpu to "
                        "split a CPU's cores between two runs")
    p.add_argument("--seeds", type=int_in(1, 20), default=None, metavar="N",
                   help="train every net with N seeds (1..20; default 3, 2 with --quick); "
                        "verdicts come from a bootstrap over seeds and images and need at "
                        "least 3 seeds (with fewer every verdict is inconclusive)")
    p.add_argument("--only", type=_tables, default=None, metavar="LIST",
                   help="comma-separated subset of table3, table4, table5, table6, init "
                        "(default: all; a table's prerequisite nets are trained too)")
    p.add_argument("--report", action="store_true",
                   help="rebuild OUT/report.md from the finished runs, training nothing")
    p.add_argument("--plan", action="store_true",
                   help="print every run (name, arch, batch norm, init, seed, scale, epochs, "
                        "image passes) and every finding with the runs on each side, "
                        "training and writing nothing")
    p.add_argument("--json", action="store_true",
                   help="with --plan: print the plan as JSON ({runs: [...], findings: "
                        "[{name, sides: {a: [...], b: [...]}, ...}]})")
    p.add_argument("--workers", type=workers_count, default=None,
                   help="data-loading processes (default: the usable cores)")
    add_progress_flag(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..study import TABLES, StudyConfig, plan_text, run_study, study_plan

    if args.json and not args.plan:
        raise ConfigError("--json goes with --plan")
    if args.plan and args.report:
        raise ConfigError("give --plan or --report, not both")
    cfg = StudyConfig(
        out=args.out, data=args.data, budget=args.budget, quick=args.quick,
        device=args.device, seeds=args.seeds, only=args.only or TABLES,
        report_only=args.report, workers=args.workers, progress=args.progress,
        devices=args.devices,
        command="vgg " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        if sys.argv[1:2] == ["study"] else "vgg study")
    if args.plan:
        desc = study_plan(cfg)
        print(json.dumps(desc, indent=1) if args.json else plan_text(desc))
        return 0
    run_study(cfg)
    return 0
