"""Cost and error of the test protocols of Sect. 3.2 for one checkpoint, in one run:
centre crop, dense at 1 and 3 scales, 150-crop multi-crop (5x5 grid + mirrors at 3 scales)
and multi-crop & dense.

The paper's argument: dense evaluation over three scales costs a small fraction of 150
crops per image (the crops recompute overlapping regions; the fully-convolutional net
shares them), for a similar error. This script measures images/s end to end (decode,
rescale, network) and counts multiply-adds per image from the net's shape and the actual
rescaled image sizes (``vgg.summary.total_macs``).

By default it makes its own scaled-down setting: the dataset and net of
``vgg demo --quick`` (jittered S, so the default test scales are {s_min, mid, s_max}). ``--checkpoint`` and ``--data`` measure an existing
net instead. ``--record`` writes the table into docs/benchmarks.md between
``<!-- eval:begin -->`` and ``<!-- eval:end -->``.

``--precisions fp32,bf16`` measures instead the two expensive protocols (dense over 3 scales,
150-crop multi-crop) of a full-size VGG-16 (random init, 1000 classes, trained-scale range
[256; 512] so Q = 256, 384, 512) per network precision on ``--images`` generated photo-sized
JPEGs: images/s, speed-up over fp32, the largest posterior difference from fp32 and the
top-1 agreement (``<!-- eval-precision:begin -->`` section).

    python benchmarks/bench_eval.py --record
    python benchmarks/bench_eval.py --precisions fp32,bf16 --images 4 --record
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from vgg.checkpoint import load_checkpoint  # noqa: E402
from vgg.data.decode import image_size  # noqa: E402
from vgg.data.transforms import rescale_size  # noqa: E402
from vgg.eval import EvalNet, as_net, default_scales, evaluate, fuse_results  # noqa: E402
from vgg.eval.multicrop import GRID  # noqa: E402
from vgg.summary import total_macs  # noqa: E402


NOTE = ('Reading it: the mult-adds column is the hardware-independent comparison. images/s '
        'comes from a 2-core CPU at a tiny scale, where dense evaluation pays a fixed '
        'per-forward overhead: images keep their aspect ratio, so a batch holds one rescaled '
        'size and most batches here hold one or two images. The default net is the quick '
        "demo's (about 45% top-1 error, chance 90%); `--checkpoint`/`--data` measure a "
        'better-trained one, e.g. the full `vgg demo` run.')


def make_setting(work: Path, epochs: int | None, seed: int) -> tuple[Path, Path]:
    """The shapes dataset and net of ``vgg demo --quick`` (A-BN, crop 32, S in [36, 48]),
    trained with scale jittering so the default test scales are {s_min, mid, s_max}."""
    from vgg.demo import make_plan, shapes_dataset, train_config
    from vgg.train import train

    cpu = torch.device("cpu")
    plan = make_plan(True, cpu)
    data, _ = shapes_dataset(plan, work / "data", seed)
    cfg = train_config(plan, data, work / "run", cpu, epochs=epochs or plan.epochs,
                       seed=seed, tensorboard=False, plot=False, progress=False)
    result = train(cfg, progress=False)
    return Path(result.best_path), data


def macs_per_image(net: EvalNet, sizes: list[tuple[int, int]], method: str,
                   scales: list[int], flip: bool = True) -> float:
    """Mean multiply-adds per image of a protocol over the dataset's image sizes."""
    cfg = net.model.config
    crop_macs = total_macs(cfg)
    per_image = []
    for w, h in sizes:
        total = 0
        for q in scales:
            if method in ("dense", "both"):
                nw, nh = rescale_size(w, h, q)
                total += (1 + flip) * total_macs(cfg, (nh, nw), fully_conv=True)
            if method in ("multicrop", "both"):
                total += (1 + flip) * GRID * GRID * crop_macs
            if method == "center":
                total += crop_macs
        per_image.append(total)
    return float(np.mean(per_image))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None, help="evaluate this net instead of training one")
    ap.add_argument("--data", default=None, help="dataset root (with val/) for --checkpoint")
    ap.add_argument("--epochs", type=int, default=None,
                    help="training epochs of the default net (default: the quick demo's 12)")
    ap.add_argument("--limit", type=int, default=60,
                    help="evaluate the first N val images of each class in turn (0 = all)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--record", action="store_true", help="write docs/benchmarks.md section")
    ap.add_argument("--precisions", default=None, metavar="P,P",
                    help="compare network precisions (e.g. fp32,bf16) on a full-size VGG-16")
    ap.add_argument("--images", type=int, default=4,
                    help="--precisions: generated 500x375 images (default 4)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(args.seed)
    if args.precisions:
        return compare_precisions(args)

    tmp = tempfile.TemporaryDirectory(prefix="bench_eval_")
    t0 = time.perf_counter()
    if args.checkpoint:
        if not args.data:
            ap.error("--checkpoint needs --data")
        ckpt, data = Path(args.checkpoint), Path(args.data)
        setting = f"checkpoint `{ckpt}` on `{data}`"
    else:
        ckpt, data = make_setting(Path(tmp.name), args.epochs, args.seed)
        from vgg.demo import make_plan

        p = make_plan(True, torch.device("cpu"))
        setting = (f"the quick demo's net {p.arch}{'-BN' if p.batch_norm else ''} (width "
                   f"{p.width:g}, fc_width {p.fc_width}, crop {p.crop}, {p.classes} classes) "
                   f"trained {args.epochs or p.epochs} epochs with S jittered in "
                   f"[{p.scale[0]}, {p.scale[1]}] on the generated shapes dataset")
    t_setup = time.perf_counter() - t0
    from vgg.cli.evaluate import load_index

    net = as_net(load_checkpoint(ckpt))
    index = load_index(argparse.Namespace(data=str(data), split=None), net.model.classes)
    if args.limit and args.limit < len(index):  # round-robin over classes: balanced subset
        by_class: dict[int, list[int]] = {}
        for i, (_, y) in enumerate(index.samples):
            by_class.setdefault(y, []).append(i)
        order = [i for k in range(len(index)) for ids in by_class.values()
                 if k < len(ids) for i in [ids[k]]]
        index = index.subset(sorted(order[:args.limit]))
    sizes = [image_size(p) for p, _ in index.samples]  # after --limit
    multi = default_scales(net.train_scale, net.crop)
    single = default_scales(net.train_scale, net.crop, multi_scale=False)
    protocols = [("center", "centre crop", single, "1 crop"),
                 ("dense", "dense", single, "image + mirror"),
                 ("dense", "dense", multi, "3 scales x (image + mirror)"),
                 ("multicrop", "multi-crop", multi, "3 x 50 = 150 crops")]
    kw = dict(batch_size=args.batch, device=args.device, workers=args.workers,
              progress=False)
    evaluate(net, index.subset(list(range(min(8, len(index))))), method="both",
             scales=multi, **kw)  # warm-up (thread pools, allocator, oneDNN kernels)
    rows, results = [], []
    for method, name, scales, what in protocols:
        t = time.perf_counter()
        r = evaluate(net, index, method=method, scales=scales, **kw)
        dt = time.perf_counter() - t
        results.append(r)
        rows.append(dict(name=name, scales=",".join(map(str, scales)), what=what,
                         macs=macs_per_image(net, sizes, method, scales), ips=r.n_images / dt,
                         secs=dt, top1=r.top1_err, top5=r.top5_err))
    # multi-crop & dense: the average of the two runs' posteriors (no rerun); its cost is
    # the sum of theirs
    ref, mc = rows[2], rows[3]
    both = fuse_results(results[2:4])
    rows.append(dict(name="multi-crop & dense", scales=ref["scales"],
                     what="150 crops + 3 dense (fused)", macs=ref["macs"] + mc["macs"],
                     ips=1.0 / (1.0 / ref["ips"] + 1.0 / mc["ips"]),
                     secs=ref["secs"] + mc["secs"], top1=both.top1_err, top5=both.top5_err))
    lines = [
        "| protocol | test Q | network passes per image | mult-adds / image | "
        "images/s | time vs dense 3 scales | top-1 err (%) | top-5 err (%) |",
        "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['scales']} | {r['what']} | {r['macs'] / 1e9:.3f} G | "
                     f"{r['ips']:.1f} | {r['secs'] / ref['secs']:.2f}x | {100 * r['top1']:.1f} | "
                     f"{100 * r['top5']:.1f} |")
    summary = (f"Dense over 3 scales needs {ref['macs'] / mc['macs']:.0%} of the mult-adds of "
               f"150 crops and ran {mc['secs'] / ref['secs']:.1f}x faster.")
    machine = (f"{platform.machine()}, {torch.get_num_threads()} threads, torch "
               f"{torch.__version__}, device {args.device or ('cuda' if torch.cuda.is_available() else 'cpu')}")
    cmd = command()
    text = "\n".join([
        f"Command: `{cmd}` ({machine}; setup {t_setup:.0f} s).",
        "",
        f"Setting: {setting}; {len(index)} images of varying size and aspect ratio. "
        f"Multiply-adds count the weight layers for the actual rescaled sizes; images/s is "
        f"end to end (decode, rescale, network, batch {args.batch}, {args.workers} loader "
        f"workers).",
        "",
        *lines,
        "",
        summary,
        "",
        NOTE,
    ])
    print(text)
    if args.record:
        record(text)
    tmp.cleanup()
    return 0


def compare_precisions(args: argparse.Namespace) -> int:
    """Dense 3-scale and 150-crop images/s per precision on a full-size VGG-16."""
    from bench_transfer import make_images

    from vgg.data.folders import index_split
    from vgg.model import build
    from vgg.precision import cpu_native_bf16

    precs = [p.strip() for p in args.precisions.split(",") if p.strip()]
    tmp = tempfile.TemporaryDirectory(prefix="bench_eval_prec_")
    root = make_images(Path(tmp.name) / "val", args.images, args.seed)
    index = index_split(root.parent, "val")
    model = build("D", init="kaiming", classes=[f"c{i}" for i in range(999)] + ["x"]).eval()
    net = EvalNet(model, "VGG-16 (random init)", [256, 512])
    sizes = [image_size(p) for p, _ in index.samples]
    kw = dict(batch_size=args.batch, device=args.device, workers=args.workers, progress=False)
    rows = []
    for method, name, what in (("dense", "dense", "3 scales x (image + mirror)"),
                               ("multicrop", "multi-crop", "3 x 50 = 150 crops")):
        res: dict[str, Any] = {}
        for prec in precs:
            evaluate(net, index.subset([0]), method=method, scales=[256], precision=prec,
                     **kw)  # warm-up
            t = time.perf_counter()
            r = evaluate(net, index, method=method, precision=prec, **kw)
            res[prec] = (r, time.perf_counter() - t)
        ref, t_ref = res[precs[0]]
        for prec in precs:
            r, dt = res[prec]
            diff = float(np.abs(r.posteriors - ref.posteriors).max())
            agree = float(np.mean(r.posteriors.argmax(1) == ref.posteriors.argmax(1)))
            rows.append(f"| {name} | 256,384,512 | {what} | "
                        f"{macs_per_image(net, sizes, method, [256, 384, 512]) / 1e9:.0f} G | "
                        f"{r.precision} | {r.n_images / dt:.3f} | {t_ref / dt:.2f}x | "
                        f"{diff:.1e} | {100 * agree:.0f}% |")
    machine = (f"{platform.machine()}, {torch.get_num_threads()} threads, torch "
               f"{torch.__version__}, native bf16: {'yes' if cpu_native_bf16() else 'no'}")
    cmd = command()
    text = "\n".join([
        f"Command: `{cmd}` ({machine}).",
        "",
        f"VGG-16 at full size (random init, 1000 classes, S in [256; 512] so the test scales "
        f"are Q = 256, 384, 512), {len(index)} generated 500x375 / 375x500 JPEGs, batch "
        f"{args.batch}, {args.workers} loader workers; images/s end to end. Posterior "
        f"difference and top-1 agreement are against the {precs[0]} run on the same images.",
        "",
        "| protocol | test Q | network passes per image | mult-adds / image | precision | "
        f"images/s | speed-up vs {precs[0]} | max posterior diff | top-1 agreement |",
        "|---|---|---|---:|---|---:|---:|---:|---:|",
        *rows,
    ])
    print(text)
    if args.record:
        record(text, "eval-precision", "## Test protocols per precision")
    tmp.cleanup()
    return 0


def record(text: str, key: str = "eval", title: str = "## Test protocols",
           path: Path = REPO / "docs" / "benchmarks.md") -> None:
    """Replace the ``<!-- KEY:begin -->`` .. ``<!-- KEY:end -->`` section of ``path`` with
    ``text``, or append it under the heading ``title``."""
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin in doc and end in doc:
        head, rest = doc.split(begin, 1)
        doc = head + begin + "\n" + text + "\n" + end + rest.split(end, 1)[1]
    else:
        doc = doc.rstrip() + f"\n\n{title}\n\n{begin}\n{text}\n{end}\n"
    path.write_text(doc)


def command() -> str:
    """This run's command line, without --record."""
    return "python benchmarks/bench_eval.py" + " ".join(
        [""] + [a for a in sys.argv[1:] if a != "--record"])


if __name__ == "__main__":
    raise SystemExit(main())
