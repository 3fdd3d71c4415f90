"""``vgg fuse``: average saved posteriors of several evaluations (scales, methods or nets,
Sect. 3.2 / 4.4) and report top-1/top-5 error, without rerunning any network."""

from __future__ import annotations

import argparse

from . import add_overwrite_flag, check_outputs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fuse", help="fuse saved posteriors (.npz from `vgg evaluate --save-posteriors`)",
        description="Average the soft-max posteriors saved by `vgg evaluate "
                    "--save-posteriors` (same images and class list), and print the top-1 / "
                    "top-5 error of every input and of their fusion.")
    p.add_argument("posteriors", nargs="+", metavar="POSTERIORS.npz")
    p.add_argument("--json", default=None, metavar="OUT.json", help="write the fused metrics")
    p.add_argument("--save", default=None, metavar="OUT.npz", help="write the fused posteriors")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    add_overwrite_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..eval import Posteriors, fuse, result_from_posteriors
    from ..report import paper_table
    from .evaluate import _write_json

    check_outputs((args.save, "--save"), (args.json, "--json"), inputs=args.posteriors,
                  overwrite=args.overwrite)
    parts = [Posteriors.load(p) for p in args.posteriors]
    fused = fuse(parts)
    rows = [result_from_posteriors(p) for p in parts] if len(parts) > 1 else []
    result = result_from_posteriors(fused)
    print(paper_table(rows + [result], fmt="markdown" if args.markdown else "text"))
    print(f"{result.n_images} images, {len(parts)} input(s)")
    if args.save:
        print(f"posteriors: {fused.save(args.save)}")
    if args.json:
        _write_json(args.json, result.to_json() | {"inputs": [str(p) for p in args.posteriors]})
        print(f"metrics: {args.json}")
    return 0
