"""VGG-16 fp32 CPU inference throughput: vgg's default inference path against torchvision's
``vgg16``, both as a fraction of the machine's float32 matrix-multiply rate.

Measured in one run, interleaved (one batch of each contender per round, then a matmul
measurement), reporting the best round of each (least disturbed by other processes on a
shared machine; medians are printed too):

- matmul: ``torch.mm`` of two 2048 x 2048 float32 matrices, GFLOP/s = 2 n^3 / t.
- vgg: ``model.predict(uint8 batch)``, the package's default inference path (preprocessing,
  channels-last weights and activations, ``torch.inference_mode``, soft-max).
- torchvision: ``vgg16(weights=None).eval()`` under ``torch.no_grad()`` on a float batch,
  as documented (NCHW), and the same net converted to channels-last (weights and input).

Each path's efficiency is images/s x 2 x 15.5 GFLOP (the paper's 15.5G multiply-adds per
224 x 224 image) / matmul GFLOP/s.

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

MACS_PER_IMAGE = 15.5e9  # Table 2 / SPEC.md: VGG-16 at 224 x 224
BEGIN, END = "<!-- inference:begin -->", "<!-- inference:end -->"


def matmul_gflops(n: int = 2048, reps: int = 5) -> tuple[float, float]:
    """(GFLOP/s of wall time, GFLOP per CPU-second of this process)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(reps):
        torch.mm(a, b)
    flop = 2 * n**3 * reps / 1e9
    return flop / (time.perf_counter() - t0), flop / (time.process_time() - c0)


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads)."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


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
    tv_cl = torchvision.models.vgg16(weights=None).eval().to(memory_format=torch.channels_last)
    tv_cl.load_state_dict(tv.state_dict())
    images = torch.randint(0, 256, (n, 3, s, s), dtype=torch.uint8)
    x = ours.preprocess(images)  # torchvision gets the same normalised floats
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def run_tv(net: torch.nn.Module, inp: torch.Tensor) -> Callable[[], object]:
        def f() -> object:
            with torch.no_grad():
                return net(inp)
        return f

    contenders: dict[str, Callable[[], object]] = {
        "vgg predict (default)": lambda: ours.predict(images),
        "torchvision vgg16 (default, NCHW)": run_tv(tv, x),
        "torchvision vgg16 (channels-last)": run_tv(tv_cl, x_cl),
    }
    # Same weights -> the same answer (sanity check, not timed).
    with torch.no_grad():
        ours.load_state_dict(tv.state_dict())
        p_tv = torch.softmax(tv(x[:2]), 1)
    torch.testing.assert_close(ours.predict(images[:2]), p_tv, rtol=1e-3, atol=1e-5)

    for fn in contenders.values():  # warm-up (oneDNN primitive creation, allocator)
        fn()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    cpu: dict[str, list[float]] = {k: [] for k in contenders}
    mm: list[float] = []
    mm_cpu: list[float] = []
    load0 = os.getloadavg()[0]
    t_start = time.perf_counter()
    for _ in range(args.rounds):
        for rate in (matmul_gflops(),):
            mm.append(rate[0])
            mm_cpu.append(rate[1])
        for name, fn in contenders.items():
            t_wall, t_cpu = timed(fn)
            times[name].append(t_wall)
            cpu[name].append(t_cpu)
    rate = matmul_gflops()
    mm.append(rate[0])
    mm_cpu.append(rate[1])
    wall = time.perf_counter() - t_start

    gflops, gflops_med = max(mm), statistics.median(mm)
    rows = []
    tv_rate = n / min(times["torchvision vgg16 (default, NCHW)"])
    tv_med = n / statistics.median(times["torchvision vgg16 (default, NCHW)"])
    for name, ts in times.items():
        rate, med = n / min(ts), n / statistics.median(ts)
        eff = rate * 2 * MACS_PER_IMAGE / 1e9 / gflops
        eff_med = med * 2 * MACS_PER_IMAGE / 1e9 / gflops_med
        eff_cpu = n * 2 * MACS_PER_IMAGE / 1e9 / min(cpu[name]) / max(mm_cpu)
        tv_cpu = min(cpu["torchvision vgg16 (default, NCHW)"]) / min(cpu[name])
        rows.append((name, rate, eff, rate / tv_rate, eff_med, med / tv_med, eff_cpu, tv_cpu))
    cmd = "python " + " ".join([sys.argv[0], *sys.argv[1:]])
    lines = [
        f"Command: `{cmd}` (torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"vgg {vgg.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.machine()} {platform.processor() or ''}".rstrip() + ").",
        "",
        f"VGG-16, fp32, CPU, batch {n} at {s}x{s}, best of {args.rounds} interleaved "
        f"batches per path; matmul rate {gflops:.1f} GFLOP/s (2048x2048 `torch.mm`, best of "
        f"{len(mm)}; median {gflops_med:.1f}). Efficiency = images/s x 2 x 15.5 GFLOP / "
        f"matmul rate. Medians in the last two columns (median images/s over median matmul "
        f"rate). CPU-time columns: GFLOP per CPU-second of the process (all threads) over "
        f"the matmul's GFLOP per CPU-second ({max(mm_cpu):.1f}), best round: less "
        f"sensitive to other processes taking the cores than wall time.",
        "",
        "| path | images/s | % of matmul rate | vs torchvision default | median: % of matmul "
        "| median: vs torchvision | CPU-time: % of matmul | CPU-time: vs torchvision |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *[f"| {name} | {rate:.2f} | {eff * 100:.0f}% | {ratio:.2f}x | {eff_med * 100:.0f}% "
          f"| {ratio_med:.2f}x | {eff_cpu * 100:.0f}% | {ratio_cpu:.2f}x |"
          for name, rate, eff, ratio, eff_med, ratio_med, eff_cpu, ratio_cpu in rows],
        "",
        "vgg's default path is `model.predict(uint8_images)`: the stored preprocessing, "
        "channels-last (NHWC) weights and activations (set at build/load time, input converted "
        "in `forward`), `torch.inference_mode`, soft-max. torchvision's default is "
        "`vgg16().eval()` under `torch.no_grad()` on an NCHW float batch. "
        f"Timed section: {wall:.0f} s; 1-minute load average {load0:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after (on {os.cpu_count()} cores; above the core count "
        f"other processes shared the CPU, so wall-time rates are low and noisy and the "
        f"CPU-time columns are the better comparison).",
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
            doc = doc.rstrip("\n") + "\n\n## Inference (VGG-16, fp32, CPU)\n\n" + section + "\n"
        args.write.write_text(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
