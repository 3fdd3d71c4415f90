"""VGG-16 CPU inference throughput in fp32 and bf16: vgg's default inference path against
torchvision's ``vgg16``, each as a fraction of the machine's matrix-multiply rate in the same
precision.

Measured in one run, interleaved (one batch of each contender per round, then the matmul
measurements), reporting the best round of each (least disturbed by other processes on a
shared machine; medians are printed too):

- matmul: ``torch.mm`` of two 2048 x 2048 matrices in float32 and in bfloat16,
  GFLOP/s = 2 n^3 / t: the limits.
- vgg fp32 / bf16: ``model.predict(uint8 batch, precision=...)``, the package's inference
  path (preprocessing, channels-last weights and activations, ``torch.inference_mode``,
  soft-max in fp32; bf16 runs on a cached bf16 copy of the weights).
- torchvision: ``vgg16(weights=None).eval()`` under ``torch.no_grad()`` on a float batch,
  as documented (NCHW); the same net converted to channels-last (weights and input); and
  that net cast to bfloat16 (weights and input, channels-last).

Each path's efficiency is images/s x 2 x 15.5 GFLOP (the paper's 15.5G multiply-adds per
224 x 224 image) / the matmul GFLOP/s of its precision. The bf16 paths' largest soft-max
difference from fp32 on the same weights is printed beside them.

Run: python benchmarks/bench_inference.py [--batch 8] [--rounds 5] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

import vgg
from vgg.model import build
from vgg.precision import cpu_native_bf16

MACS_PER_IMAGE = 15.5e9  # Table 2 / SPEC.md: VGG-16 at 224 x 224
BEGIN, END = "<!-- inference:begin -->", "<!-- inference:end -->"


def matmul_gflops(dtype: torch.dtype = torch.float32, n: int = 2048, reps: int = 5) -> float:
    """GFLOP/s of wall time of ``torch.mm`` on two n x n matrices of ``dtype``."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * n**3 * reps / 1e9 / (time.perf_counter() - t0)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5, help="timed batches per contender")
    parser.add_argument("--write", type=Path, default=None,
                        help="replace the inference section of this markdown file")
    args = parser.parse_args()
    torch.manual_seed(0)
    n, s = args.batch, args.size

    ours = build("D", init="kaiming").eval()  # channels-last weights by default
    tv = torchvision.models.vgg16(weights=None).eval()
    ours.load_state_dict(tv.state_dict())  # the same weights everywhere
    tv_cl = torchvision.models.vgg16(weights=None).eval().to(memory_format=torch.channels_last)
    tv_cl.load_state_dict(tv.state_dict())
    tv_bf = torchvision.models.vgg16(weights=None).eval().to(memory_format=torch.channels_last)
    tv_bf.load_state_dict(tv.state_dict())
    tv_bf = tv_bf.to(torch.bfloat16)
    images = torch.randint(0, 256, (n, 3, s, s), dtype=torch.uint8)
    x = ours.preprocess(images)  # torchvision gets the same normalised floats
    x_cl = x.contiguous(memory_format=torch.channels_last)
    x_bf = x_cl.to(torch.bfloat16)

    def run_tv(net: torch.nn.Module, inp: torch.Tensor) -> Callable[[], torch.Tensor]:
        def f() -> torch.Tensor:
            with torch.no_grad():
                return torch.softmax(net(inp).float(), 1)
        return f

    # name -> (function, precision)
    contenders: dict[str, tuple[Callable[[], torch.Tensor], str]] = {
        "vgg predict, fp32 (default)": (lambda: ours.predict(images), "fp32"),
        "vgg predict, bf16 (`precision=\"bf16\"`)":
            (lambda: ours.predict(images, precision="bf16"), "bf16"),
        "torchvision vgg16, fp32 (default, NCHW)": (run_tv(tv, x), "fp32"),
        "torchvision vgg16, fp32 channels-last": (run_tv(tv_cl, x_cl), "fp32"),
        "torchvision vgg16, bf16 channels-last (model cast)": (run_tv(tv_bf, x_bf), "bf16"),
    }
    # Same weights -> the same answer (sanity check, not timed); bf16's largest deviation
    p_ref = run_tv(tv, x)()
    torch.testing.assert_close(ours.predict(images), p_ref, rtol=1e-3, atol=1e-5)
    max_diff = {name: float((fn() - p_ref).abs().max()) for name, (fn, prec) in
                contenders.items() if prec == "bf16"}

    for fn, _ in contenders.values():  # warm-up (oneDNN primitive creation, allocator)
        fn()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    mm: dict[str, list[float]] = {"fp32": [], "bf16": []}
    load0 = os.getloadavg()[0]
    t_start = time.perf_counter()
    for _ in range(args.rounds):
        for prec, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            mm[prec].append(matmul_gflops(dt))
        for name, (fn, _) in contenders.items():
            times[name].append(timed(fn))
    for prec, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        mm[prec].append(matmul_gflops(dt))
    wall = time.perf_counter() - t_start

    best_mm = {k: max(v) for k, v in mm.items()}
    med_mm = {k: statistics.median(v) for k, v in mm.items()}
    rate = {k: n / min(ts) for k, ts in times.items()}
    med = {k: n / statistics.median(ts) for k, ts in times.items()}
    tv_fp32 = [k for k, (_, prec) in contenders.items()
               if prec == "fp32" and k.startswith("torchvision")]
    tv_best = max(tv_fp32, key=lambda k: rate[k])
    tv_best_med = max(med[k] for k in tv_fp32)
    rows = []
    for name, (_, prec) in contenders.items():
        eff = rate[name] * 2 * MACS_PER_IMAGE / 1e9 / best_mm[prec]
        eff_med = med[name] * 2 * MACS_PER_IMAGE / 1e9 / med_mm[prec]
        diff = f"{max_diff[name]:.1e}" if name in max_diff else "-"
        rows.append(f"| {name} | {prec} | {rate[name]:.2f} | {eff * 100:.0f}% | "
                    f"{rate[name] / rate[tv_best]:.2f}x | {eff_med * 100:.0f}% | "
                    f"{med[name] / tv_best_med:.2f}x | {diff} |")
    for prec in ("fp32", "bf16"):
        rows.append(f"| `torch.mm` 2048^3 ({prec}): the limit | {prec} | "
                    f"{best_mm[prec]:.0f} GFLOP/s | 100% | - | {med_mm[prec]:.0f} GFLOP/s | - "
                    f"| - |")
    cmd = "python " + " ".join([sys.argv[0], *sys.argv[1:]])
    lines = [
        f"Command: `{cmd}` (torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"vgg {vgg.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.machine()}, native bf16: {'yes' if cpu_native_bf16() else 'no'}).",
        "",
        f"VGG-16, CPU, batch {n} at {s}x{s}, best of {args.rounds} interleaved batches per "
        f"path. Efficiency = images/s x 2 x 15.5 GFLOP / the `torch.mm` rate of the path's "
        f"precision (best of {len(mm['fp32'])}). Ratios are to torchvision's faster fp32 "
        f"path ({tv_best}). Median columns: median images/s over the median matmul rate. "
        f"Max soft-max diff: the largest difference of a bf16 path's posteriors from fp32 "
        f"on the same weights and images (random init, 1000 classes).",
        "",
        "| path | precision | images/s | % of matmul rate | vs torchvision fp32 (best) "
        "| median: % of matmul | median: vs torchvision | max soft-max diff vs fp32 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "vgg's inference path is `model.predict(uint8_images, precision=...)`: the stored "
        "preprocessing (in fp32), channels-last (NHWC) weights and activations, "
        "`torch.inference_mode`, soft-max in fp32; bf16 runs on a bf16 copy of the weights "
        "made once and cached while the weights do not change. torchvision's default is "
        "`vgg16().eval()` under `torch.no_grad()` on an NCHW float batch. "
        f"Timed section: {wall:.0f} s; 1-minute load average {load0:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after (on {os.cpu_count()} cores; above the core count "
        f"other processes shared the CPU and the wall-time rates are low and noisy).",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write is not None:
        doc = args.write.read_text() if args.write.exists() else "# Benchmarks\n"
        section = f"{BEGIN}\n{text}\n{END}"
        if BEGIN in doc and END in doc:
            doc = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: section, doc,
                         flags=re.S)
        else:
            doc = doc.rstrip("\n") + "\n\n## Inference (VGG-16, CPU)\n\n" + section + "\n"
        args.write.write_text(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
