"""The project on one CUDA device, in one run of under 8 minutes, printed as one table:

- VGG-16 training step (batch 64, crop 224, bf16 autocast, channels-last): ``vgg train``'s
  own step against the same step around ``torchvision.models.vgg16``, each eager and
  under ``torch.compile`` (its compile time apart); images/s, TFLOP/s (3 x 2 x 15.47 GFLOP
  an image), MFU against the GPU's dense bf16 peak (a table of known GPUs, or
  ``--peak-tflops``) and against a measured bf16 ``torch.mm`` 8192^3;
- VGG-16 bf16 inference: ``model.predict(uint8 batch, precision="bf16")`` and
  torchvision's vgg16 under the same autocast, channels-last;
- the data pipeline: images/s of the training loader on 500x375-ish JPEGs (S in
  [256, 512], crop 224) with one worker process, and with the default worker count;
- ``vgg demo --quick`` end to end (dataset, training, every test protocol,
  localisation): wall time and its errors.

Without CUDA (or with ``--tiny``) it runs every row at tiny sizes (an 11-layer net of
width 1/16, crop 32, a dozen images, a 3-class demo) in seconds: the test suite runs it
that way; its numbers are no measurement.

    python benchmarks/gpu_check.py                  # first CUDA device, full sizes
    python benchmarks/gpu_check.py --tiny           # any device, seconds
    python benchmarks/gpu_check.py --json out.json  # the rows as JSON too
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import NETS, measure_step, torchvision_net  # noqa: E402

# dense bf16 tensor-core peaks in TFLOP/s (no sparsity), by a part of the device name;
# the first match wins, so the more specific names come first
PEAK_BF16_TFLOPS = [
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0),
    ("GH200", 989.0), ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("L40", 181.0),
    ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("RTX 4090", 165.0),
    ("RTX 3090", 71.0), ("V100", 0.0),  # V100: no bf16 tensor cores
]

TINY_NET = dict(arch="A", batch_norm=False, width=1 / 16, fc_width=32, crop=32, classes=10)


@dataclass
class Sizes:
    """What each row runs: full sizes on a GPU, tiny ones as a CPU test."""

    net: dict[str, Any]
    batch: int
    warmup: int
    steps: int
    chunks: int
    infer_batch: int
    images: int
    image_sides: tuple[int, int]
    crop: int
    scale: tuple[int, int]
    compile: bool
    demo_plan: Any = None
    notes: list[str] = field(default_factory=list)


def sizes(tiny: bool, compile_: bool | None) -> Sizes:
    if not tiny:
        return Sizes(net=NETS["vgg16"], batch=64, warmup=3, steps=10, chunks=3,
                     infer_batch=64, images=256, image_sides=(375, 500), crop=224,
                     scale=(256, 512), compile=True if compile_ is None else compile_)
    from vgg.demo import make_plan

    import dataclasses

    plan = dataclasses.replace(
        make_plan(True, torch.device("cpu")), classes=2, train_per_class=6, val_per_class=1,
        width=1 / 16, fc_width=32, epochs=1, loc_epochs=1, batch=8)
    return Sizes(net=TINY_NET, batch=4, warmup=1, steps=2, chunks=1, infer_batch=4,
                 images=12, image_sides=(40, 64), crop=32, scale=(36, 48),
                 compile=bool(compile_), demo_plan=plan)


def peak_tflops(device: torch.device, given: float | None) -> tuple[float | None, str]:
    if given:
        return given, "--peak-tflops"
    if device.type != "cuda":
        return None, "no known peak"
    name = torch.cuda.get_device_name(device)
    for part, tf in PEAK_BF16_TFLOPS:
        if part in name:
            return (tf or None), f"{name}: {tf:g} TFLOP/s dense bf16"
    return None, f"{name}: unknown peak (give --peak-tflops)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device, n: int) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    torch.mm(a, b)
    sync(device)
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(5):
            torch.mm(a, b)
        sync(device)
        best = max(best, 2 * n**3 * 5 / 1e12 / (time.perf_counter() - t))
    return best


def forward_gflop(net: dict[str, Any]) -> float:
    from vgg.model import VGGConfig
    from vgg.summary import total_macs

    cfg = VGGConfig(arch=net["arch"], batch_norm=net["batch_norm"], width=net["width"],
                    fc_width=net["fc_width"], crop=net["crop"], num_classes=net["classes"])
    return 2 * total_macs(cfg) / 1e9


def inference_rate(impl: str, s: Sizes, device: torch.device) -> float:
    """Images/s of bf16 inference on uint8 batches, best of 3 chunks of 5 batches."""
    from vgg.model import build

    net = s.net
    x = torch.randint(0, 256, (s.infer_batch, 3, net["crop"], net["crop"]),
                      dtype=torch.uint8, device=device)
    if impl == "vgg":
        model = build(**{k: net[k] for k in ("arch", "batch_norm", "width", "fc_width",
                                             "crop")}, num_classes=net["classes"])
        model.to(device).eval()

        def run() -> None:
            model.predict(x, precision="bf16")
    else:
        tv = torchvision_net(net).to(device).eval().to(memory_format=torch.channels_last)
        mean = torch.tensor([123.68, 116.78, 103.94], device=device).view(1, 3, 1, 1)

        def run() -> None:
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
                xf = (x.float() - mean).contiguous(memory_format=torch.channels_last)
                tv(xf).float().softmax(1)
    for _ in range(2):
        run()
    sync(device)
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(5):
            run()
        sync(device)
        best = max(best, 5 * s.infer_batch / (time.perf_counter() - t))
    return best


def loader_rate(root: Path, s: Sizes, workers: int) -> float:
    """Images/s of the training loader (decode, rescale to S, crop, flip, colour
    alphas) over every image of ``root``'s train split, after its first batch."""
    from vgg.data.folders import index_split
    from vgg.data.loaders import ImageDataset, make_loader
    from vgg.data.transforms import TrainTransform

    index = index_split(root, "train")
    ds = ImageDataset(index, TrainTransform(s.crop, s.scale), seed=0)
    batch = max(1, min(32, len(ds) // 4))
    loader = make_loader(ds, batch, shuffle=True, seed=0, workers=workers,
                         persistent_workers=False)
    it = iter(loader)
    next(it)
    t = time.perf_counter()
    n = sum(len(b["labels"]) for b in it)
    return n / max(time.perf_counter() - t, 1e-9)


def run_demo_row(out: Path, s: Sizes, device: torch.device) -> dict[str, Any]:
    """``vgg demo --quick`` (with the tiny plan: a 2-class demo, in this process)."""
    from vgg.demo import DemoConfig, run_demo

    t = time.perf_counter()
    r = run_demo(DemoConfig(out=out, quick=True, device=device.type, progress=False,
                            plan=s.demo_plan, workers=0 if s.demo_plan else None))
    wall = time.perf_counter() - t
    data = json.loads((out / "results.json").read_text())
    hist = data["history"]
    return {"wall_s": wall, "training_s": r.timings.get("training", 0.0),
            "dense3_top1_err": r.error("dense 3 scales"),
            "loc_simple_err": r.loc_rows[0]["top1_err"] if r.loc_rows else None,
            "train_img_per_s": max(h["img_per_s"] for h in hist),
            "amp": hist[-1].get("amp", "none")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--tiny", action="store_true",
                   help="tiny sizes (the default without CUDA): a test, not a measurement")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="also the torch.compile rows (default: on with full sizes)")
    p.add_argument("--no-demo", dest="demo", action="store_false",
                   help="skip the `vgg demo --quick` row")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's dense bf16 peak, when the table does not know it")
    p.add_argument("--out", type=Path, default=None,
                   help="working folder (default: a temporary one, removed)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    a = p.parse_args(argv)
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tiny = a.tiny or device.type != "cuda"
    s = sizes(tiny, a.compile)
    t0 = time.perf_counter()
    peak, peak_note = peak_tflops(device, a.peak_tflops)
    mm = matmul_tflops(device, 8192 if not tiny else 256)
    rows: list[dict[str, Any]] = []
    train_flop = 3 * forward_gflop(s.net) / 1e3  # TFLOP an image: forward + 2x backward
    infer_flop = forward_gflop(s.net) / 1e3

    def add(check: str, setting: str, rate: float | None, tflop: float | None = None,
            vs: str = "-", note: str = "") -> None:
        tf = rate * tflop if rate is not None and tflop else None
        rows.append({"check": check, "setting": setting, "img_per_s": rate,
                     "tflops": tf, "mfu": tf / peak if tf and peak else None,
                     "of_matmul": tf / mm if tf and mm else None, "vs": vs, "note": note})

    net_name = "VGG-16" if not tiny else "tiny A (width 1/16, crop 32)"
    tv_name = "torchvision vgg16" if not tiny else "torchvision VGG, same layers"
    train: dict[tuple[str, bool], dict[str, float]] = {}
    for compiled in ([False, True] if s.compile else [False]):
        for impl in ("vgg", "torchvision"):
            train[(impl, compiled)] = measure_step(
                s.net, impl, "bf16", compiled, s.batch, s.steps, s.warmup, s.chunks, device)
    for (impl, compiled), res in train.items():
        tv = train[("torchvision", compiled)]["img_per_s"]
        add(f"{net_name} train step, batch {s.batch}",
            f"{'vgg TrainStep' if impl == 'vgg' else tv_name}, bf16 autocast, "
            f"channels-last{', torch.compile' if compiled else ''}",
            res["img_per_s"], train_flop,
            f"{res['img_per_s'] / tv:.2f}x" if impl == "vgg" else "-",
            f"warm-up {res['warmup_s']:.1f} s" + (" (incl. compile)" if compiled else ""))
    if not s.compile:
        add(f"{net_name} train step", "torch.compile", None,
            note="skipped (--tiny; --compile to run it)")
    infer = {impl: inference_rate(impl, s, device) for impl in ("vgg", "torchvision")}
    add(f"{net_name} inference, batch {s.infer_batch}", "vgg predict, bf16", infer["vgg"],
        infer_flop, f"{infer['vgg'] / infer['torchvision']:.2f}x")
    add(f"{net_name} inference, batch {s.infer_batch}",
        f"{tv_name}, bf16 autocast, channels-last", infer["torchvision"], infer_flop)

    with tempfile.TemporaryDirectory() as tmp:
        work = a.out or Path(tmp)
        from vgg.data.synthetic import make_shapes_dataset
        from vgg.data.loaders import default_workers

        jpegs = make_shapes_dataset(work / "jpegs", classes=2, train_per_class=s.images // 2,
                                    val_per_class=1, min_side=s.image_sides[0],
                                    max_side=s.image_sides[1], workers=0)
        one = loader_rate(jpegs, s, 1)
        n_workers = default_workers() if not tiny else min(2, default_workers())
        many = loader_rate(jpegs, s, n_workers) if n_workers > 1 else one
        add("data pipeline (decode, rescale, crop)",
            f"1 worker, {s.image_sides[0]}-{s.image_sides[1]} px JPEGs, crop {s.crop}", one,
            note="images/s per worker")
        add("data pipeline (decode, rescale, crop)", f"{n_workers} workers", many,
            note=f"{many / n_workers:.0f} images/s per worker")
        if a.demo:
            d = run_demo_row(work / "demo", s, device)
            add("vgg demo --quick" + (" (tiny plan)" if tiny else ""), "end to end", None,
                note=f"{d['wall_s']:.0f} s (training {d['training_s']:.0f} s, "
                     f"{d['train_img_per_s']:.0f} img/s, amp {d['amp']}); dense 3 scales "
                     f"top-1 err {100 * d['dense3_top1_err']:.1f}%, localisation simple "
                     f"err {100 * (d['loc_simple_err'] or 0):.1f}%")
            rows[-1]["demo"] = d
    elapsed = time.perf_counter() - t0
    print(table(rows, device, tiny, peak_note, mm, elapsed))
    if a.json:
        a.json.write_text(json.dumps({"device": str(device), "tiny": tiny, "rows": rows,
                                      "matmul_tflops": mm, "elapsed_s": elapsed},
                                     indent=2, default=str))
    return 0


def table(rows: list[dict[str, Any]], device: torch.device, tiny: bool, peak_note: str,
          mm: float, elapsed: float) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    head = (f"gpu_check on {device} ({name}), torch {torch.__version__}"
            f"{', TINY sizes: a test, not a measurement' if tiny else ''}; bf16 peak: "
            f"{peak_note}; bf16 torch.mm: {mm:.3g} TFLOP/s; {elapsed:.0f} s in all, "
            f"{os.cpu_count()} CPU cores")

    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.0f}%"

    lines = [head, "",
             "| check | setting | images/s | TFLOP/s | MFU | % of bf16 mm | vs torchvision "
             "| note |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['check']} | {r['setting']} | {f(r['img_per_s'], '.1f')} | "
                     f"{f(r['tflops'], '.3g')} | {pct(r['mfu'])} | {pct(r['of_matmul'])} | "
                     f"{r['vs']} | {r['note']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
