"""Training-pipeline throughput per core: vgg.data vs the equivalent torchvision v2 pipeline.

Both pipelines do Sect. 3.1's augmentation on JPEGs of ImageNet-like size (~500 x 375):
decode -> isotropic rescale to S ~ U[256, 512] -> random 224 crop -> random flip -> PCA
colour shift -> a batch. Single process, one thread (images/s per core).

- torchvision: ``decode_jpeg`` (or PIL) -> ``v2.RandomResize(256, 513)`` (smaller side, with
  antialias) -> ``v2.RandomCrop(224)`` -> ``v2.RandomHorizontalFlip`` -> float -> PCA shift
  -> ``v2.Normalize`` -> stacked float batch; everything on the CPU.
- vgg: ``TrainTransform`` (JPEG draft when S <= side / 2, resampling only the crop window,
  snapped to whole source pixels, with torch's antialiased uint8 bilinear kernel)
  -> ``collate`` -> uint8 batch + alphas; the shift and normalisation run on the device
  (``DeviceAugment``). Reported twice: the CPU part only (what the loader workers do when a
  GPU is there), and with ``DeviceAugment`` also run on the CPU (no GPU at all).

"Same distribution": per-channel mean and std of the output crops of both pipelines over the
same images, and the mean absolute difference between vgg's crop and torchvision's
Resize+crop+flip at identical parameters (S, window, flip).

Run: python benchmarks/bench_data.py [--images 160] [--repeats 3] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.io import decode_jpeg, read_file
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from vgg.data import ColourStats, DeviceAugment, TrainTransform, collate, rescale_size
from vgg.preprocess import Preprocess

CROP, S_MIN, S_MAX, BATCH = 224, 256, 512, 32
SIZES = [(500, 375), (375, 500), (500, 333), (500, 400), (333, 500), (480, 360)]


def make_jpegs(root: Path, n: int) -> list[Path]:
    """Photo-like JPEGs (smooth colour fields, edges, fine texture), quality 90."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        small = Image.fromarray(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8))
        a = np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), np.float32)
        yy, xx = np.mgrid[0:h, 0:w]
        a += 25 * np.sin(xx / rng.uniform(3, 15) + yy / rng.uniform(5, 30))[..., None]
        a += rng.normal(0, 8, (h, w, 3))
        p = root / f"{i:05d}.jpg"
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(p, quality=90)
        paths.append(p)
    return paths


class PCAShift(torch.nn.Module):
    """AlexNet colour shift on a float (3, H, W) tensor in 0..255 (torchvision has none)."""

    def __init__(self, stats: ColourStats, std: float = 0.1) -> None:
        super().__init__()
        self.m = 255.0 * torch.tensor(stats.eigval)[:, None] * torch.tensor(stats.eigvec).T
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.randn(3) * self.std
        return x + (alpha @ self.m)[:, None, None]


def torchvision_pipeline(stats: ColourStats, pre: Preprocess) -> v2.Compose:
    return v2.Compose([
        v2.RandomResize(S_MIN, S_MAX + 1, antialias=True),  # smaller side = S
        v2.RandomCrop(CROP),
        v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=False),
        PCAShift(stats),
        v2.Normalize(mean=list(pre.mean), std=list(pre.std)),
    ])


def run_torchvision(paths: list[Path], tf: v2.Compose, decoder: str) -> torch.Tensor:
    last = None
    for k in range(0, len(paths), BATCH):
        imgs = []
        for p in paths[k:k + BATCH]:
            if decoder == "decode_jpeg":
                x = decode_jpeg(read_file(str(p)))
            else:
                x = F.pil_to_tensor(Image.open(p).convert("RGB"))
            imgs.append(tf(x))
        last = torch.stack(imgs)
    return last


def run_vgg(paths: list[Path], tf: TrainTransform, aug: DeviceAugment | None,
            epoch: int = 0) -> torch.Tensor:
    last = None
    for k in range(0, len(paths), BATCH):
        samples = []
        for i in range(k, min(k + BATCH, len(paths))):
            out = tf(paths[i], np.random.default_rng([0, epoch, i]))
            out.update(label=0, index=i)
            samples.append(out)
        b = collate(samples)
        last = aug(b["images"], b["alphas"]) if aug is not None else b["images"]
    return last


def interleaved_rates(fns: dict[str, object], n: int, repeats: int) -> dict[str, float]:
    """images per CPU-second of this process (``time.process_time``: robust to other load on
    the machine; one thread, so that is images/s per core), best of ``repeats``, the
    pipelines interleaved so that they see the same conditions."""
    best = {k: float("inf") for k in fns}
    for r in range(repeats):
        for k, fn in fns.items():
            t0 = time.process_time()
            fn(r)
            best[k] = min(best[k], time.process_time() - t0)
    return {k: n / v for k, v in best.items()}


def distribution(paths: list[Path], tf_vgg: TrainTransform) -> dict[str, object]:
    """Crop statistics of both pipelines (uint8, before colour shift) on the same images."""
    tv = v2.Compose([v2.RandomResize(S_MIN, S_MAX + 1, antialias=True), v2.RandomCrop(CROP),
                     v2.RandomHorizontalFlip()])
    torch.manual_seed(0)
    ours, theirs, theirs2, diffs = [], [], [], []
    for i, p in enumerate(paths):
        o = tf_vgg(p, np.random.default_rng([1, 0, i]))["image"]
        ours.append(o.float())
        x = decode_jpeg(read_file(str(p)))
        theirs.append(tv(x).float())
        theirs2.append(tv(x).float())  # a second draw: torchvision's own sampling noise
        # identical parameters: full-image resize (torchvision, antialias) + crop + flip
        rng = np.random.default_rng([1, 0, i])
        s = int(rng.integers(S_MIN, S_MAX + 1))
        nw, nh = rescale_size(x.shape[2], x.shape[1], s)
        x0, y0 = int(rng.integers(0, nw - CROP + 1)), int(rng.integers(0, nh - CROP + 1))
        flip = rng.random() < 0.5
        ref = F.resize(x, [nh, nw], antialias=True)[:, y0:y0 + CROP, x0:x0 + CROP]
        if flip:
            ref = ref.flip(-1)
        diffs.append((o.float() - ref.float()).abs().mean().item())
    a, b, b2 = torch.stack(ours), torch.stack(theirs), torch.stack(theirs2)
    return {"tv2_mean": b2.mean((0, 2, 3)).tolist(), "tv2_std": b2.std((0, 2, 3)).tolist(),
            "vgg_mean": a.mean((0, 2, 3)).tolist(), "vgg_std": a.std((0, 2, 3)).tolist(),
            "tv_mean": b.mean((0, 2, 3)).tolist(), "tv_std": b.std((0, 2, 3)).tolist(),
            "mad_same_params": float(np.mean(diffs)), "mad_max": float(np.max(diffs))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=160)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--write", type=Path, default=None, help="update this markdown file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    stats, pre = ColourStats.imagenet(), Preprocess.paper()
    with tempfile.TemporaryDirectory() as d:
        paths = make_jpegs(Path(d), args.images)
        n = len(paths)
        tf = TrainTransform(CROP, (S_MIN, S_MAX))
        aug = DeviceAugment(pre, stats)
        tv_tf = torchvision_pipeline(stats, pre)
        run_vgg(paths[:8], tf, None)
        run_torchvision(paths[:8], tv_tf, "decode_jpeg")  # warm-up
        rates = interleaved_rates({
            "torchvision v2, decode_jpeg": lambda r: run_torchvision(paths, tv_tf, "decode_jpeg"),
            "torchvision v2, PIL decode": lambda r: run_torchvision(paths, tv_tf, "pil"),
            "vgg.data, uint8 batch + alphas (shift on device)":
                lambda r: run_vgg(paths, tf, None, r),
            "vgg.data + DeviceAugment on the CPU": lambda r: run_vgg(paths, tf, aug, r),
        }, n, args.repeats)
        dist = distribution(paths[: min(n, 96)], tf)
    base = max(rates["torchvision v2, decode_jpeg"], rates["torchvision v2, PIL decode"])
    cmd = "python benchmarks/bench_data.py " + " ".join(sys.argv[1:])
    lines = [
        f"`{cmd.strip()}` ({n} JPEGs of 500x375 and similar, quality 90; S ~ U[{S_MIN}, "
        f"{S_MAX}], crop {CROP}, batch {BATCH}; one process, one thread; CPU time, best of "
        f"{args.repeats} interleaved; {platform.machine()}, torch {torch.__version__}, torchvision "
        f"{torchvision.__version__}, Pillow {Image.__version__})",
        "",
        "| pipeline | images/s per core | vs torchvision (faster of the two) |",
        "|---|---:|---:|",
    ]
    for k, v in rates.items():
        lines.append(f"| {k} | {v:.0f} | {v / base:.2f}x |")
    f3 = lambda xs: ", ".join(f"{v:.1f}" for v in xs)  # noqa: E731
    lines += [
        "",
        "Same distribution (96 images, uint8 crops before the colour shift): per-channel "
        f"mean / std of the output pixels: vgg ({f3(dist['vgg_mean'])}) / "
        f"({f3(dist['vgg_std'])}), torchvision ({f3(dist['tv_mean'])}) / "
        f"({f3(dist['tv_std'])}), torchvision's second draw ({f3(dist['tv2_mean'])}) / "
        f"({f3(dist['tv2_std'])}) (so differences of this size are sampling noise). "
        "At identical S, window and flip, vgg's crop differs from "
        "torchvision's full antialiased resize + crop by a mean absolute "
        f"{dist['mad_same_params']:.2f} grey levels (worst image {dist['mad_max']:.2f}; "
        "vgg snaps the crop window to whole source pixels: a sub-pixel shift).",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write is not None:
        md = args.write.read_text() if args.write.exists() else "# Benchmarks\n"
        block = f"<!-- data:begin -->\n{text}\n<!-- data:end -->"
        if "<!-- data:begin -->" in md:
            md = re.sub(r"<!-- data:begin -->.*?<!-- data:end -->", lambda m: block, md,
                        flags=re.S)
        else:
            md += f"\n## Training data pipeline\n\n{block}\n"
        args.write.write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
