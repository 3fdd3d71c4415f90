"""Cost of dense evaluation (Sect. 3.2, image + mirror) at a finer output stride (SPEC 6b):
images/s and multiply-adds of ``model.to_fully_conv(stride)`` against stride 32 (today's
map, the baseline) in one run, and of OverFeat's shift-and-stitch
(``vgg.model.shift_and_stitch``: the same map from (32/s)^2 offset passes) beside the a
trous form the package uses.

Three settings (random weights: speed does not depend on them):

- the demo's net (A-BN, width 0.25, fc_width 1024, crop 32, 10 classes) at Q = 36, 42, 48
  (default stride 4);
- the same net at crop 64, Q = 64, 80, 96 (default stride 8);
- full-size VGG-16 (1000 classes) at Q = 256, stride 32 vs 16 (``--full-images`` images;
  ``--no-full`` skips it).

Images are Q x 4Q/3 (landscape; the smallest side is Q), a batch of one size as the
evaluator batches them. Every contender runs once per round, interleaved; the best round
counts (least disturbed on a shared machine). Multiply-adds: ``vgg.summary.total_macs`` at
the stride, times 2 for the mirror.

    python benchmarks/bench_dense.py [--batch 16] [--rounds 5] [--record]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_eval import record  # noqa: E402
from vgg.eval.dense import dense_posteriors, score_posteriors  # noqa: E402
from vgg.model import VGG, build, default_dense_stride, shift_and_stitch  # noqa: E402
from vgg.summary import total_macs  # noqa: E402


def contenders(model: VGG, x: torch.Tensor, strides: list[int], stitch: bool
               ) -> dict[tuple[str, int], Callable[[], torch.Tensor]]:
    """(method, stride) -> one dense evaluation of the batch ``x`` (image + mirror)."""
    out: dict[tuple[str, int], Callable[[], torch.Tensor]] = {}
    for s in strides:
        fcn = model.to_fully_conv(s)
        out[("a trous", s)] = lambda fcn=fcn: dense_posteriors(fcn, x, flip=True)
        if stitch and s < 32:
            def f(s: int = s) -> torch.Tensor:
                return 0.5 * (score_posteriors(shift_and_stitch(model, x, s))
                              + score_posteriors(shift_and_stitch(model, x.flip(3), s)))
            out[("shift-and-stitch", s)] = f
    return out


def measure(fns: dict[tuple[str, int], Callable[[], torch.Tensor]], rounds: int
            ) -> dict[tuple[str, int], float]:
    """Best wall time (s) of each function over interleaved rounds, after a warm-up."""
    with torch.inference_mode():
        ref = {k: fn() for k, fn in fns.items()}  # warm-up and sanity: methods agree
        for (meth, s), p in ref.items():
            if meth != "a trous":
                torch.testing.assert_close(p, ref[("a trous", s)], rtol=1e-4, atol=1e-6)
        best = {k: float("inf") for k in fns}
        for _ in range(rounds):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                best[k] = min(best[k], time.perf_counter() - t0)
    return best


def setting(label: str, model: VGG, qs: list[int], strides: list[int], batch: int,
            rounds: int, stitch: bool) -> list[str]:
    rows = []
    crop = model.config.crop
    for q in qs:
        h, w = q, round(q * 4 / 3)
        x = model.preprocess(torch.randint(0, 256, (batch, 3, h, w), dtype=torch.uint8))
        x = x.contiguous(memory_format=torch.channels_last)
        best = measure(contenders(model, x, strides, stitch), rounds)
        base = best[("a trous", 32)]
        for (meth, s), t in best.items():
            macs = 2 * total_macs(model.config, (h, w), True, dense_stride=s)
            macs32 = 2 * total_macs(model.config, (h, w), True)
            hh, ww = model.to_fully_conv(s).map_size(h, w)
            name = "stride 32 (today)" if s == 32 else f"{meth}, stride {s}"
            if s == default_dense_stride(crop) and meth == "a trous":
                name += " (default)"
            rows.append(f"| {label} | {q} ({h}x{w}) | {name} | {hh}x{ww} | "
                        f"{macs / 1e9:.3f} G | {macs / macs32:.2f}x | {batch / t:.1f} | "
                        f"{t / base:.2f}x |")
            print(rows[-1], flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16, help="images per batch (small nets)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--full-images", type=int, default=2,
                        help="images per batch for full-size VGG-16")
    parser.add_argument("--full-rounds", type=int, default=2)
    parser.add_argument("--no-full", action="store_true", help="skip full-size VGG-16")
    parser.add_argument("--record", action="store_true",
                        help="write the table into docs/benchmarks.md")
    args = parser.parse_args()
    torch.manual_seed(0)
    load0 = os.getloadavg()[0]
    t_start = time.perf_counter()
    rows: list[str] = []
    demo = dict(arch="A", batch_norm=True, width=0.25, fc_width=1024, num_classes=10,
                init="kaiming")
    rows += setting("demo net, crop 32", build(crop=32, **demo).eval(), [36, 42, 48],
                    [32, 16, 8, 4], args.batch, args.rounds, stitch=True)
    rows += setting("crop 64", build(crop=64, **demo).eval(), [64, 80, 96],
                    [32, 16, 8], args.batch, args.rounds, stitch=True)
    if not args.no_full:
        rows += setting("VGG-16 (full size)", build("D", init="kaiming").eval(), [256],
                        [32, 16], args.full_images, args.full_rounds, stitch=True)
    wall = time.perf_counter() - t_start
    cmd = "python benchmarks/bench_dense.py" + " ".join(
        [""] + [a for a in sys.argv[1:] if a != "--record"])
    text = "\n".join([
        f"Command: `flock /tmp/vgg-cpu.lock {cmd}` ({platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}).",
        "",
        f"Dense evaluation of one batch (image + mirror, soft-max of the spatially averaged "
        f"score map, averaged) at output stride s against stride 32 in the same run; "
        f"batch {args.batch} (VGG-16: {args.full_images}), best of {args.rounds} interleaved "
        f"rounds (VGG-16: {args.full_rounds}). Mult-adds per image include the mirror; the "
        f"time ratio is to stride 32 at the same Q.",
        "",
        "| net | Q (image) | method | score map | mult-adds / image | vs stride 32 "
        "| images/s | time vs stride 32 |",
        "|---|---|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Timed section {wall:.0f} s; 1-minute load average {load0:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after (on {os.cpu_count()} cores).",
    ])
    print(text)
    if args.record:
        record(text, "dense-stride", "## Dense evaluation at a finer output stride")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
