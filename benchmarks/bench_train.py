"""Training-step throughput, fp32 against bf16 mixed precision: ``vgg train``'s own step
(:class:`vgg.train.step.TrainStep`) against the same step around torchvision's VGG built to
identical shapes, for three nets, in one run.

Nets (``--nets``):

- ``demo``: the demo's net, A-BN, width 1/4, FC 1024, crop 32, 10 classes;
- ``crop64``: the Caltech-10 photo net of docs/precision.md, A-BN, width 1/4, FC 512,
  crop 64, 10 classes;
- ``vgg16``: full-size VGG-16 (D), crop 224, 1000 classes; its baseline is
  ``torchvision.models.vgg16()`` itself.

Variants: vgg and torchvision, each in fp32 and under bf16 autocast (``--amp bf16``:
weights, optimizer state, loss and BN statistics fp32); vgg's step in the trainer's
memory format (channels-last, net and batches, unless ``--no-channels-last``),
torchvision's net and input channels-last (NHWC, its faster CPU format); vgg's step
under ``torch.compile`` (``--compile``; the compile time is reported apart), and in
NCHW, net and batches (``--nchw NETS``: ``vgg train --no-channels-last``). Every
variant runs the same step: uint8 batch -> PCA colour shift and mean subtraction on the
device -> net -> cross-entropy in fp32 -> SGD with momentum. Each variant runs in its own
process (clean peak RSS), all variants alternate, ``--repeats`` times, every other round
in reverse order (a process's place in a round biases its rate); inside a
process the best of ``--chunks`` timed chunks counts, and the best process. GFLOP/s =
images/s x 3 x 2 x the net's forward multiply-adds (backward ~ twice the forward), and
"% of matmul" divides it by ``torch.mm``'s 2048^3 rate in the same precision, measured
in the same run.

    python benchmarks/bench_train.py [--nets demo,crop64,vgg16] [--batch 32]
        [--nchw crop64] [--write-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]

NETS: dict[str, dict[str, Any]] = {
    "demo": dict(arch="A", batch_norm=True, width=0.25, fc_width=1024, crop=32, classes=10,
                 steps=40, warmup=5),
    "crop64": dict(arch="A", batch_norm=True, width=0.25, fc_width=512, crop=64, classes=10,
                   steps=12, warmup=3),
    "vgg16": dict(arch="D", batch_norm=False, width=1.0, fc_width=4096, crop=224,
                  classes=1000, steps=1, warmup=1),
}
LABELS = {
    "demo": "demo net: A-BN, width 1/4, FC 1024, crop 32, 10 classes",
    "crop64": "Caltech-10 photo net: A-BN, width 1/4, FC 512, crop 64, 10 classes",
    "vgg16": "VGG-16 (D), crop 224, 1000 classes",
}


def torchvision_net(net: dict[str, Any]) -> Any:
    """torchvision's VGG with the same layers as ``vgg.model.build`` for ``net``."""
    import torchvision
    from torchvision.models.vgg import VGG, cfgs, make_layers

    if net["arch"] == "D" and net["width"] == 1.0 and net["crop"] == 224 and \
            net["fc_width"] == 4096 and not net["batch_norm"]:
        return torchvision.models.vgg16(weights=None, num_classes=net["classes"])
    layers = [v if v == "M" else max(1, int(round(v * net["width"])))
              for v in cfgs[net["arch"]]]
    tv = VGG(make_layers(layers, batch_norm=net["batch_norm"]), num_classes=net["classes"],
             init_weights=True)
    k = net["crop"] // 32
    tv.avgpool = nn.Identity()  # vgg's FC1 sees the k x k map of pool5 as it is
    fc = net["fc_width"]
    tv.classifier = nn.Sequential(
        nn.Linear(layers[-2] * k * k, fc), nn.ReLU(True), nn.Dropout(0.5),
        nn.Linear(fc, fc), nn.ReLU(True), nn.Dropout(0.5), nn.Linear(fc, net["classes"]))
    return tv


def measure_step(net: dict[str, Any], impl: str, precision: str, compiled: bool, batch: int,
                 steps: int, warmup: int, chunks: int,
                 device: torch.device | str = "cpu") -> dict[str, float]:
    """``vgg train``'s step (``impl`` "vgg") or the same step around torchvision's net
    (``impl`` "torchvision", channels-last) on ``device``, in ``precision`` fp32 or bf16
    (autocast), optionally under ``torch.compile``: images/s of the best of ``chunks``
    timed chunks of ``steps`` steps, and the time of the ``warmup`` steps before them
    (for a compiled step: the compile)."""
    from vgg.data.transforms import ColourStats
    from vgg.model import build
    from vgg.preprocess import Preprocess
    from vgg.train.build import param_groups
    from vgg.train.checkpoint import Position
    from vgg.train.config import TrainConfig
    from vgg.train.distributed import DistInfo
    import vgg.train.step as step_mod
    from vgg.train.step import TrainStep, grad_scaler
    from vgg.train.task import ClassificationTask

    device = torch.device(device)
    torch.manual_seed(0)
    nchw = impl == "vgg-nchw"  # vgg's step, net and batches NCHW (--no-channels-last)
    impl = "vgg" if nchw else impl
    shape = {k: net[k] for k in ("arch", "batch_norm", "width", "fc_width", "crop")}
    amp = "bf16" if precision == "bf16" else "none"
    cfg = TrainConfig(data="unused", **shape, batch=batch, amp=amp, compile=compiled,
                      device=device.type, channels_last=not nchw)
    model = (build(**shape, num_classes=net["classes"]) if impl == "vgg" else
             ChannelsLast(torchvision_net(net), Preprocess.paper()))
    model.to(device).train()
    if impl == "vgg":  # as the trainer does
        model.memory_format = step_mod.train_memory_format(cfg)
    opt = torch.optim.SGD(param_groups(model, 5e-4, False), lr=1e-3, momentum=0.9)
    step = TrainStep(cfg, model, ClassificationTask(cfg), opt,  # type: ignore[arg-type]
                     grad_scaler(amp), stats=ColourStats.imagenet(), dist=DistInfo(), device=device,
                     run_dir=Path("."), amp=amp)
    g = torch.Generator().manual_seed(0)
    crop = net["crop"]
    data = {"images": torch.randint(0, 256, (batch, 3, crop, crop), dtype=torch.uint8,
                                    generator=g),
            "labels": torch.randint(0, net["classes"], (batch,), generator=g),
            "alphas": torch.randn(batch, 3, generator=g) * 0.1, "n_bad": 0}
    t = time.perf_counter()
    for _ in range(warmup):  # every step ends in a host sync (its loss), so no timing gap
        step(data, Position())
    warm_s = time.perf_counter() - t
    best = 0.0
    for _ in range(chunks):
        t = time.perf_counter()
        for _ in range(steps):
            step(data, Position())
        best = max(best, batch * steps / (time.perf_counter() - t))
    return {"img_per_s": best, "warmup_s": warm_s}


def run_variant(net_name: str, impl: str, precision: str, compiled: bool, batch: int,
                steps: int, warmup: int, chunks: int, threads: int) -> dict[str, float]:
    """One variant in this process, on the CPU, with its peak RSS."""
    torch.set_num_threads(threads)
    res = measure_step(NETS[net_name], impl, precision, compiled, batch, steps, warmup,
                       chunks)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return res | {"peak_rss_mib": peak_kb / 1024}


class ChannelsLast(nn.Module):
    """torchvision's net with channels-last weights and input (vgg's CPU layout) and the
    ``preprocess`` the training step applies to uint8 batches."""

    def __init__(self, net: nn.Module, preprocess: Any) -> None:
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last)
        self.preprocess = preprocess

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=torch.channels_last))


def matmul_rate(precision: str, threads: int, n: int = 2048, reps: int = 5,
                rounds: int = 3) -> dict[str, float]:
    """GFLOP/s of ``torch.mm`` on two n x n matrices, best of ``rounds``."""
    torch.set_num_threads(threads)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = 0.0
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        best = max(best, 2 * n**3 * reps / 1e9 / (time.perf_counter() - t))
    return {"gflops": best}


def forward_macs(net_name: str) -> int:
    from vgg.model import VGGConfig
    from vgg.summary import total_macs

    net = NETS[net_name]
    return total_macs(VGGConfig(arch=net["arch"], batch_norm=net["batch_norm"],
                                width=net["width"], fc_width=net["fc_width"],
                                crop=net["crop"], num_classes=net["classes"]))


def variants(nets: list[str], compiled: list[str], nchw: list[str] = ()
             ) -> list[tuple[str, str, str, bool]]:
    out = []
    for n in nets:
        for impl in ("vgg", "torchvision"):
            for prec in ("fp32", "bf16"):
                out.append((n, impl, prec, False))
        if n in compiled:
            out += [(n, "vgg", "fp32", True), (n, "vgg", "bf16", True)]
        if n in nchw:
            out += [(n, "vgg-nchw", "fp32", False), (n, "vgg-nchw", "bf16", False)]
    return out


def label(impl: str, prec: str, compiled: bool) -> str:
    name = {"vgg": "vgg `TrainStep`", "vgg-nchw": "vgg `TrainStep`, NCHW"}.get(
        impl, "torchvision VGG, channels-last")
    amp = "fp32" if prec == "fp32" else "bf16 autocast"
    return f"{name}, {amp}" + (", `torch.compile`" if compiled else "")


def _sub(args: list[str]) -> dict[str, float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True,
                         text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", default="demo,crop64,vgg16",
                   help="comma-separated: " + ", ".join(NETS))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--compile", default="demo,crop64",
                   help="nets whose vgg step is also measured under torch.compile ('' = none)")
    p.add_argument("--nchw", default="", metavar="NETS",
                   help="nets whose vgg step is also measured in NCHW, net and batches "
                        "(--no-channels-last; '' = none)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunks", type=int, default=3, help="timed chunks per process")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--matmul", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.variant:
        n, impl, prec, comp = a.variant.split(":")
        net = NETS[n]
        print(json.dumps(run_variant(n, impl, prec, comp == "1", a.batch, net["steps"],
                                     net["warmup"], a.chunks, a.threads)))
        return 0
    if a.matmul:
        print(json.dumps(matmul_rate(a.matmul, a.threads)))
        return 0
    nets = [n for n in a.nets.split(",") if n]
    compiled = [n for n in a.compile.split(",") if n]
    nchw = [n for n in a.nchw.split(",") if n]
    bad = [n for n in nets + compiled + nchw if n not in NETS]
    if bad:
        p.error(f"unknown net(s) {bad}; known: {', '.join(NETS)}")
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    todo = variants(nets, compiled, nchw)
    results: dict[tuple[str, str, str, bool], list[dict[str, float]]] = {v: [] for v in todo}
    mm: dict[str, float] = {"fp32": 0.0, "bf16": 0.0}
    common = [f"--batch={a.batch}", f"--chunks={a.chunks}", f"--threads={a.threads}"]
    for r in range(a.repeats):
        for prec in mm:
            mm[prec] = max(mm[prec], _sub([f"--matmul={prec}", *common])["gflops"])
        # odd rounds in reverse order: a variant's place in a round biases its rate
        # (later processes measured up to 20% slower on identical code)
        for v in (todo if r % 2 == 0 else todo[::-1]):
            n, impl, prec, comp = v
            res = _sub([f"--variant={n}:{impl}:{prec}:{int(comp)}", *common])
            results[v].append(res)
            print(f"round {r + 1}: {n} {label(impl, prec, comp)}: "
                  f"{res['img_per_s']:.1f} img/s", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - t0
    load1 = os.getloadavg()[0]
    best = {v: max(x["img_per_s"] for x in rs) for v, rs in results.items()}
    text = report(a, nets, todo, results, best, mm, elapsed, load0, load1)
    print(text)
    if a.write_docs:
        write_docs(text)
    return 0


def report(a: argparse.Namespace, nets: list[str], todo: list[tuple[str, str, str, bool]],
           results: dict[tuple[str, str, str, bool], list[dict[str, float]]],
           best: dict[tuple[str, str, str, bool], float], mm: dict[str, float],
           elapsed: float, load0: float, load1: float) -> str:
    import torchvision

    from vgg.precision import cpu_native_bf16

    cmd = (f"python benchmarks/bench_train.py --nets {a.nets} --batch {a.batch} "
           f"--compile '{a.compile}' "
           + (f"--nchw '{a.nchw}' " if a.nchw else "")
           + f"--repeats {a.repeats} --chunks {a.chunks} --threads {a.threads}")
    lines = [
        f"Command: `{cmd}` ({platform.machine()}, {a.threads} threads, torch "
        f"{torch.__version__}, torchvision {torchvision.__version__}, native bf16: "
        f"{'yes' if cpu_native_bf16() else 'no'}; {elapsed / 60:.0f} min; 1-minute load "
        f"average {load0:.1f} before, {load1:.1f} after, on {os.cpu_count()} cores).",
        "",
        f"Batch {a.batch}; best of {a.repeats} alternating processes per variant (every "
        f"other round in reverse order), each the best of {a.chunks} timed chunks after "
        f"warm-up steps. `torch.mm` 2048^3: "
        f"{mm['fp32']:.0f} GFLOP/s fp32, {mm['bf16']:.0f} GFLOP/s bf16 "
        f"({mm['bf16'] / mm['fp32']:.2f}x).",
        "",
        "| net | step | images/s | GFLOP/s | % of matmul | vs vgg fp32 | vs torchvision, "
        "same precision | peak RSS (MiB) | warm-up (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in nets:
        flop = 6 * forward_macs(n) / 1e9
        base = best[(n, "vgg", "fp32", False)]
        for v in [v for v in todo if v[0] == n]:
            _, impl, prec, comp = v
            rate = best[v]
            tv = best[(n, "torchvision", prec, False)]
            vs_tv = f"{rate / tv:.2f}x" if impl == "vgg" else "-"
            mem = max(x["peak_rss_mib"] for x in results[v])
            warm = min(x["warmup_s"] for x in results[v])
            lines.append(f"| {n} | {label(impl, prec, comp)} | {rate:.1f} | "
                         f"{rate * flop:.0f} | {100 * rate * flop / mm[prec]:.0f}% | "
                         f"{rate / base:.2f}x | {vs_tv} | {mem:.0f} | {warm:.1f} |")
    lines += ["", "Nets: " + "; ".join(f"`{n}` = {LABELS[n]} "
                                        f"({2 * forward_macs(n) / 1e9:.3g} GFLOP forward "
                                        f"per image)" for n in nets) + "."]
    return "\n".join(lines)


def write_docs(table: str) -> None:
    doc = ROOT / "docs" / "benchmarks.md"
    text = doc.read_text()
    if "<!-- train:begin -->" not in text:
        text += "\n## Training step\n\n<!-- train:begin -->\n<!-- train:end -->\n"
    text = re.sub(r"<!-- train:begin -->.*?<!-- train:end -->",
                  lambda m: f"<!-- train:begin -->\n{table}\n<!-- train:end -->", text,
                  flags=re.S)
    doc.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
