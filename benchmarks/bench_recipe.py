"""Does `vgg train` at a short budget beat a plain torchvision training script at the same
budget? Both train the same scaled-down net (A-BN by default: same layers, widths, FC
sizes, crop) with the same epochs, batch, learning rate, momentum and weight decay on the
same train/ split, and are scored on the same val/ split.

The baseline is what a user writes from the torchvision docs: ``ImageFolder``,
``RandomResizedCrop`` + flip + ImageNet mean/std, SGD with a per-epoch
``CosineAnnealingLR``, validation by ``Resize(crop * 256 / 224)`` + ``CenterCrop``.
`vgg train` runs once per ``--runs`` entry (a schedule, the paper's plateau or cosine with
a warm-up, and a training scale), each evaluated by its centre crop at its own
single-scale Q (the validation it logs), by dense evaluation and by multi-crop & dense
over three scales (``vgg evaluate --method both``).

    vgg data split photos/caltech101_subset10 data/caltech10 --val-fraction 0.2
    python benchmarks/bench_recipe.py --data data/caltech10 \\
        --runs plateau,cosine,plateau@110,cosine@110 --write docs/training.md

``--write`` replaces the text between ``<!-- recipe:begin -->`` and ``<!-- recipe:end -->``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def plain_torchvision(data: Path, a: argparse.Namespace) -> dict[str, float]:
    """The baseline: a plain torchvision training script (no vgg code)."""
    from torch import nn
    from torchvision import datasets
    from torchvision.models.vgg import VGG, cfgs, make_layers
    from torchvision.transforms import v2

    torch.manual_seed(a.seed)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    tf_train = v2.Compose([v2.RandomResizedCrop(a.crop), v2.RandomHorizontalFlip(),
                           v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                           v2.Normalize(mean, std)])
    tf_val = v2.Compose([v2.Resize(round(a.crop * 256 / 224)), v2.CenterCrop(a.crop),
                         v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                         v2.Normalize(mean, std)])
    train = datasets.ImageFolder(str(data / "train"), tf_train)
    val = datasets.ImageFolder(str(data / "val"), tf_val)
    dl = torch.utils.data.DataLoader(train, batch_size=a.batch, shuffle=True,
                                     num_workers=a.workers, drop_last=False)
    vl = torch.utils.data.DataLoader(val, batch_size=64, num_workers=a.workers)
    layers = [v if v == "M" else max(1, int(round(v * a.width))) for v in cfgs["A"]]
    k = a.crop // 32
    net = VGG(make_layers(layers, batch_norm=True), num_classes=len(train.classes))
    net.avgpool = nn.AdaptiveAvgPool2d((k, k))  # the identity at the crop
    net.classifier = nn.Sequential(
        nn.Linear(layers[-2] * k * k, a.fc_width), nn.ReLU(True), nn.Dropout(0.5),
        nn.Linear(a.fc_width, a.fc_width), nn.ReLU(True), nn.Dropout(0.5),
        nn.Linear(a.fc_width, len(train.classes)))
    for m in net.classifier:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    opt = torch.optim.SGD(net.parameters(), lr=a.lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=a.epochs)
    loss_fn = nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    for epoch in range(a.epochs):
        net.train()
        for x, y in dl:
            loss = loss_fn(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        print(f"  torchvision epoch {epoch + 1}: loss {loss.item():.3f}", flush=True)
    seconds = time.perf_counter() - t0
    net.eval()
    right = n = 0
    with torch.no_grad():
        for x, y in vl:
            right += int((net(x).argmax(1) == y).sum())
            n += len(y)
    return {"center_top1_err": 1 - right / n, "seconds": seconds, "n_val": n}


def vgg_run(data: Path, out: Path, schedule: str, scale: str | None,
            a: argparse.Namespace) -> dict[str, float]:
    from vgg.data.folders import index_split
    from vgg.eval import evaluate
    from vgg.train import TrainConfig, train

    if scale:
        s_min, s_max = (int(v) for v in (scale.split("-") * 2)[:2])
    else:  # the paper's [256, 512] scaled by crop / 224
        s_min, s_max = round(a.crop * 256 / 224), round(a.crop * 512 / 224)
    cfg = TrainConfig(data=str(data), out=str(out), arch="A", batch_norm=True, width=a.width,
                      fc_width=a.fc_width, crop=a.crop, scale=(s_min, s_max),
                      epochs=a.epochs, batch=a.batch, lr=a.lr, init="kaiming",
                      schedule=schedule, warmup=a.warmup if schedule != "plateau" else 0.0,
                      workers=a.workers, seed=a.seed, tensorboard=False, plot=False,
                      progress=False, overwrite=True, decay_biases=a.decay_biases)
    t0 = time.perf_counter()
    r = train(cfg)
    seconds = time.perf_counter() - t0
    ckpt = r.best_path if a.use_best else r.last_path
    val = index_split(data, "val")
    both = evaluate(str(ckpt), val, method="both", workers=a.workers, progress=False)
    center = evaluate(str(ckpt), val, method="center", workers=a.workers, progress=False)
    return {"center_top1_err": center.top1_err, "both_top1_err": both.top1_err,
            "dense_top1_err": both.select("dense").top1_err,
            "best_epoch_val_err": r.best_err, "seconds": seconds, "n_val": center.n_images,
            "scale": f"[{s_min};{s_max}]", "checkpoint": ckpt.name,
            "last_val_err": r.history[-1]["val_top1_err"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--data", type=Path, required=True, help="DIR with train/ and val/")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--fc-width", type=int, default=512)
    p.add_argument("--runs", default="plateau,cosine", metavar="SCHEDULE[@S|@SMIN-SMAX],...",
                   help="the vgg train runs: schedule and training scale (default scale: "
                        "the paper's [256, 512] scaled by crop / 224)")
    p.add_argument("--decay-biases", action="store_true",
                   help="vgg: weight-decay biases and BN parameters too (as torchvision)")
    p.add_argument("--use-best", action="store_true",
                   help="score vgg's best.pt (picked on val) instead of last.pt")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-torchvision", action="store_true")
    p.add_argument("--write", type=Path, default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    if not a.skip_torchvision:
        print("plain torchvision script ...", flush=True)
        tv = plain_torchvision(a.data, a)
        rows.append(("plain torchvision (RandomResizedCrop, cosine)", tv["center_top1_err"],
                     None, None, tv["seconds"]))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, run in enumerate(a.runs.split(",")):
            sched, _, scale = run.partition("@")
            print(f"vgg train --schedule {sched} --scale {scale or 'default'} ...", flush=True)
            r = vgg_run(a.data, Path(tmp) / f"run{k}", sched, scale or None, a)
            results[run] = r
            label = f"vgg train --schedule {sched}" + (
                f" --warmup {a.warmup:g}" if sched != "plateau" else "") + f", S {r['scale']}"
            rows.append((label, r["center_top1_err"], r["dense_top1_err"],
                         r["both_top1_err"], r["seconds"]))

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    lines = ["| run | centre crop top-1 err (%) | dense 3 scales (%) | multi-crop & dense (%) "
             "| train time (s) |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r[0]} | {pct(r[1])} | {pct(r[2])} | {pct(r[3])} | {r[4]:.0f} |" for r in rows]
    n_val = next(iter(results.values()))["n_val"] if results else 0
    cmd = "python benchmarks/bench_recipe.py " + " ".join(sys.argv[1:])
    text = "\n".join([
        f"Command: `{cmd}` ({platform.machine()}, {a.threads} threads, torch "
        f"{torch.__version__}). Net A-BN, width {a.width:g}, FC {a.fc_width}, crop {a.crop}; "
        f"{a.epochs} epochs, batch {a.batch}, lr {a.lr:g}, momentum 0.9, weight decay 5e-4 for "
        f"every run; {n_val} validation images. vgg scores its "
        f"{'best.pt' if a.use_best else 'last.pt'}.", "", *lines])
    print(text)
    print(json.dumps(results, indent=2, default=str))
    if a.write is not None:
        doc = a.write.read_text()
        block = f"<!-- recipe:begin -->\n{text}\n<!-- recipe:end -->"
        if "<!-- recipe:begin -->" in doc:
            doc = re.sub(r"<!-- recipe:begin -->.*?<!-- recipe:end -->", lambda m: block, doc,
                         flags=re.S)
        else:
            doc += "\n" + block + "\n"
        a.write.write_text(doc)
    return 0 if all(math.isfinite(r[1]) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
