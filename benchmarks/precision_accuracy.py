"""Accuracy of bf16 (or fp16) inference against fp32 for one net on one dataset, every
test protocol of Sect. 3.2: top-1 / top-5 error in each precision, the largest difference
of a posterior and the top-1 agreement, image by image.

Each precision runs two evaluations of the same images: "multi-crop & dense" at the net's
three default test scales (from which dense at the middle scale, dense over three scales,
multi-crop and their combination are selected without rerunning the net) and the centre
crop at the middle scale.

    python benchmarks/precision_accuracy.py vgg-demo/run/best.pt --data vgg-demo/data
    python benchmarks/precision_accuracy.py CKPT --data DIR --record "real photos"

``--record NAME`` writes the table into docs/precision.md between
``<!-- accuracy-NAME:begin -->`` and ``<!-- accuracy-NAME:end -->`` (slug of NAME).
"""

from __future__ import annotations

import argparse
import logging
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from vgg.cli.evaluate import load_index  # noqa: E402
from vgg.eval import as_net, default_scales, evaluate  # noqa: E402
from vgg.eval.metrics import top1_error, top5_error  # noqa: E402
from vgg.precision import cpu_native_bf16  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--data", required=True, help="dataset root (its val/ split is scored)")
    ap.add_argument("--split", default=None, help="split folder (default val)")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default=None)
    ap.add_argument("--record", default=None, metavar="NAME",
                    help="write the table into docs/precision.md under this name")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    precs = [p.strip() for p in args.precisions.split(",") if p.strip()]
    net = as_net(args.checkpoint)
    index = load_index(argparse.Namespace(data=args.data, split=args.split),
                       net.model.classes)
    qs = default_scales(net.train_scale, net.crop)
    mid = default_scales(net.train_scale, net.crop, multi_scale=False)
    kw = dict(batch_size=args.batch, device=args.device, workers=args.workers,
              progress=False)
    post: dict[str, dict[str, np.ndarray]] = {}
    secs: dict[str, float] = {}
    labels = None
    for prec in precs:
        t = time.perf_counter()
        both = evaluate(net, index, method="both", scales=qs, precision=prec, **kw)
        center = evaluate(net, index, method="center", scales=mid, precision=prec, **kw)
        secs[prec] = time.perf_counter() - t
        assert center.image_ids == both.image_ids
        labels = both.labels
        post[prec] = {
            f"centre crop, Q={mid[0]}": center.posteriors,
            f"dense, Q={mid[0]}": both.select(method="dense", scales=mid).posteriors,
            f"dense, Q={','.join(map(str, qs))}": both.select(method="dense").posteriors,
            f"multi-crop (150), Q={','.join(map(str, qs))}":
                both.select(method="multicrop").posteriors,
            "multi-crop & dense": both.posteriors,
        }
    ref = precs[0]
    rows = []
    for proto in post[ref]:
        p0 = post[ref][proto]
        cells = [proto, f"{100 * top1_error(p0, labels):.2f} / {100 * top5_error(p0, labels):.2f}"]
        for prec in precs[1:]:
            p = post[prec][proto]
            cells += [f"{100 * top1_error(p, labels):.2f} / {100 * top5_error(p, labels):.2f}",
                      f"{np.abs(p - p0).max():.1e}",
                      f"{100 * np.mean(p.argmax(1) == p0.argmax(1)):.2f}%"]
        rows.append("| " + " | ".join(cells) + " |")
    others = precs[1:]
    head = (["protocol", f"{ref} top-1 / top-5 err (%)"]
            + [h for p in others for h in (f"{p} top-1 / top-5 err (%)",
                                           f"max posterior diff {p} vs {ref}",
                                           f"top-1 agreement {p} vs {ref}")])
    cmd = "python benchmarks/precision_accuracy.py " + " ".join(
        a for a in sys.argv[1:] if not a.startswith("--record") and a != args.record)
    n = len(labels) if labels is not None else 0
    text = "\n".join([
        f"Command: `{cmd.strip()}` ({platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, native bf16: {'yes' if cpu_native_bf16() else 'no'}).",
        "",
        f"Net: `{args.checkpoint}` ({net.model.config.name}, crop {net.crop}, trained at S "
        f"{net.train_scale_label}); {n} images of `{args.data}` "
        f"({len(net.model.classes or [])} classes); test scales {qs}. Time per precision "
        f"(both evaluations): " + ", ".join(f"{p} {secs[p]:.0f} s" for p in precs) + ".",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
        *rows,
    ])
    print(text)
    if args.record:
        record(text, args.record)
    return 0


def record(text: str, name: str) -> None:
    """The table into docs/precision.md under ``### name`` (bench_eval's section writer)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_eval import record as write_section

    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    write_section(text, f"accuracy-{slug}", f"### {name}", REPO / "docs" / "precision.md")


if __name__ == "__main__":
    raise SystemExit(main())
