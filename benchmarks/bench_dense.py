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


# Per measured (net, Q, method, stride): mult-adds and time, each relative to stride 32.
Ratios = dict[tuple[str, int, str, int], tuple[float, float]]


def setting(label: str, model: VGG, qs: list[int], strides: list[int], batch: int,
            rounds: int, stitch: bool, ratios: Ratios) -> list[str]:
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
            ratios[(label, q, meth, s)] = (macs / macs32, t / base)
            rows.append(f"| {label} | {q} ({h}x{w}) | {name} | {hh}x{ww} | "
                        f"{macs / 1e9:.3f} G | {macs / macs32:.2f}x | {batch / t:.1f} | "
                        f"{t / base:.2f}x |")
            print(rows[-1], flush=True)
    return rows


def span(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.2f}x" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}-{hi:.2f}x"


def summary(ratios: Ratios) -> str:
    """The arithmetic of the mult-adds and what this run measured, as a paragraph."""
    def of(label: str, meth: str, s: int, i: int) -> str:
        return span([v[i] for k, v in ratios.items() if k[0] == label and k[2:] == (meth, s)])

    demo, c64, full = "demo net, crop 32", "crop 64", "VGG-16 (full size)"
    stitch = [ratios[k][1] / ratios[(k[0], k[1], "a trous", k[3])][1]
              for k in ratios if k[2] == "shift-and-stitch"]
    text = (
        "Mult-adds: at s = 32 / 2^m the last m pools run with stride 1, so the layers "
        "before them cost what they cost at stride 32 and each layer after them runs on "
        "about 4x as many positions per stride-1 pool before it (a stride-1 pool loses d rows "
        "and columns at the border instead of halving the map). At the demo's stride 4 "
        "(pools 3-5 stride 1) conv4_x runs on up to 4x, conv5_x on up to 16x and FC6-FC8 on up "
        "to 64x the positions (fewer on these small maps, where the border counts): "
        f"{of(demo, 'a trous', 4, 0)} the mult-adds of stride 32 at Q = 36-48 "
        f"(stride 8: {of(demo, 'a trous', 8, 0)}), measured {of(demo, 'a trous', 4, 1)} the "
        f"time (stride 8: {of(demo, 'a trous', 8, 1)}). The crop-64 net at its "
        f"default stride 8: {of(c64, 'a trous', 8, 0)} the mult-adds, "
        f"{of(c64, 'a trous', 8, 1)} the time at Q = 64-96.")
    if any(k[0] == full for k in ratios):
        text += (f" Full-size VGG-16 at stride 16 (pool5 stride 1) runs only FC6-FC8 on more "
                 f"positions: {of(full, 'a trous', 16, 0)} the mult-adds, "
                 f"{of(full, 'a trous', 16, 1)} the time at Q = 256.")
    if stitch:
        text += (" Shift-and-stitch (OverFeat's offset pooling at each stride-1 pool, the same "
                 "map and mult-adds, checked equal here) took "
                 f"{span(stitch)} the time of a trous: it runs the later layers on 4^m offset "
                 "maps (batched by size) and interleaves them; a trous is the method used.")
    return text


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
    ratios: Ratios = {}
    demo = dict(arch="A", batch_norm=True, width=0.25, fc_width=1024, num_classes=10,
                init="kaiming")
    rows += setting("demo net, crop 32", build(crop=32, **demo).eval(), [36, 42, 48],
                    [32, 16, 8, 4], args.batch, args.rounds, stitch=True, ratios=ratios)
    rows += setting("crop 64", build(crop=64, **demo).eval(), [64, 80, 96],
                    [32, 16, 8], args.batch, args.rounds, stitch=True, ratios=ratios)
    if not args.no_full:
        rows += setting("VGG-16 (full size)", build("D", init="kaiming").eval(), [256],
                        [32, 16], args.full_images, args.full_rounds, stitch=True,
                        ratios=ratios)
    wall = time.perf_counter() - t_start
    cmd = "python benchmarks/bench_dense.py" + " ".join(
        [""] + [a for a in sys.argv[1:] if a != "--record"])
    text = "\n".join([
        f"Command: `{cmd}` ({platform.machine()}, "
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
        summary(ratios),
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
