"""The initialisation finding of Sect. 3.1 at the study's scale, measured run by run:
training curves (loss, validation top-1 per epoch) of nets without batch norm from several
initialisations, on the data and sizes of `vgg study` (make_scale), through the same
``vgg.train.train`` the study uses; plus the initial signal each init gives (std of the
logits of a fresh net on real validation images, the paper's mean-subtracted 0..255
input) beside the full-size net's under N(0, 0.01).

Each run is ``NAME=ARCH:INIT`` or ``NAME=ARCH:INIT:PARENT`` (pre-initialised from the best
checkpoint of the run PARENT of the same invocation: four convs and the FC layers,
``--init-from``). ARCH ending in ``-BN`` is the net with batch norm, trained as the
study's Tables 3-6 nets (lr 0.02); the others as its nets without batch norm (``--lr``,
0.01). Finished runs are reused (``OUT/NAME/done.json``).

Run (as docs/study.md records):
  python benchmarks/study_init.py --out runs/init --epochs 16 \
      --run A-g=A:gaussian --run A-s=A:gaussian-scaled
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vgg.data.folders import index_split
from vgg.data.synthetic import ensure_shapes_dataset
from vgg.model import build
from vgg.study.plan import make_scale
from vgg.train import TrainConfig, train


def logit_std(arch: str, init: str, width: float, fc_width: int, crop: int,
              images: torch.Tensor, classes: int) -> float:
    """Std of the logits of a fresh net (mean over 3 init seeds)."""
    out = []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        net = build(arch, num_classes=classes, width=width, fc_width=fc_width, crop=crop,
                    init=init, generator=g).eval()
        with torch.no_grad():
            x = torch.nn.functional.interpolate(images, size=(crop, crop), mode="bilinear",
                                                align_corners=False)
            out.append(float(net(net.preprocess(x)).std()))
    return sum(out) / len(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--run", action="append", default=[], metavar="NAME=ARCH:INIT[:PARENT]")
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--patience", type=int, default=None,
                    help="epochs without improvement before lr / 10 (default: the study's)")
    ap.add_argument("--batch", type=int, default=None, help="default: the study's")
    ap.add_argument("--quick", action="store_true", help="the --quick study's data")
    ap.add_argument("--signal", action="store_true",
                    help="also the full-size (224) net's initial logits (a few seconds)")
    args = ap.parse_args()
    sc = make_scale(args.quick, torch.device("cpu"))
    root, _ = ensure_shapes_dataset(
        args.out / "data", sc.classes, seed=0, train_per_class=sc.train_per_class,
        val_per_class=sc.val_per_class, multi=False, min_side=sc.min_side,
        max_side=sc.max_side, object_size=sc.object_size, clutter=sc.clutter, progress=False)
    val = index_split(root, "val")

    from PIL import Image
    import numpy as np

    imgs = [np.asarray(Image.open(val.samples[i][0]).convert("RGB").resize((64, 64)))
            for i in range(0, len(val), max(1, len(val) // 32))][:32]
    batch = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float()
    print(f"input: mean-subtracted 0..255 pixels, std {float(batch.std()):.1f}")
    print("| net | init | logit std at init |\n|---|---|---:|")
    shapes = {(spec.split("=", 1)[1].split(":")[0], spec.split("=", 1)[1].split(":")[1])
              for spec in args.run if "-BN:" not in spec}
    for arch, init in sorted(shapes):
        s = logit_std(arch, init, sc.width, sc.fc_width, sc.crop, batch, sc.classes)
        print(f"| {arch} w{sc.width:g} fc{sc.fc_width} crop {sc.crop} | {init} | {s:.2e} |")
    if args.signal:
        for arch in sorted({a for a, _ in shapes}):
            s = logit_std(arch, "gaussian", 1.0, 4096, 224, batch, sc.classes)
            print(f"| {arch} full size (crop 224) | gaussian | {s:.2e} |")

    curves: dict[str, list[dict]] = {}
    for spec in args.run:
        name, rest = spec.split("=", 1)
        arch, init, *parent = rest.split(":")
        bn = arch.endswith("-BN")
        arch = arch.removesuffix("-BN")
        folder = args.out / name
        done = folder / "done.json"
        if done.is_file():
            curves[name] = json.loads(done.read_text())
            continue
        src = {"init_from": str(args.out / parent[0] / "train" / "best.pt")} if parent else {}
        cfg = TrainConfig(data=str(root), out=str(folder / "train"), arch=arch,
                          batch_norm=bn, width=sc.width, fc_width=sc.fc_width, crop=sc.crop,
                          scale=(sc.s, sc.s), epochs=args.epochs, batch=args.batch or sc.batch,
                          lr=sc.lr if bn else args.lr,
                          init=init,
                          patience=sc.patience if args.patience is None else args.patience, schedule="plateau", seed=args.seed,
                          device="cpu", progress=False, tensorboard=False, plot=False,
                          overwrite=True, **src)
        t0 = time.perf_counter()
        res = train(cfg)
        hist = [{"epoch": r["epoch"], "loss": r.get("train_loss"),
                 "val": r.get("val_top1_err"), "lr": r.get("lr")} for r in res.history]
        curves[name] = {"arch": arch, "init": init, "parent": parent[0] if parent else None,
                        "seconds": time.perf_counter() - t0, "history": hist}
        folder.mkdir(parents=True, exist_ok=True)
        done.write_text(json.dumps(curves[name], indent=1))
    names = list(curves)
    if not names:
        return
    print("\nval top-1 error % (training loss) by epoch")
    print("| epoch | " + " | ".join(names) + " |")
    print("|---:|" + "---|" * len(names))
    longest = max(len(c["history"]) for c in curves.values())
    for e in range(longest):
        cells = []
        for n in names:
            h = curves[n]["history"]
            cells.append(f"{100 * h[e]['val']:.1f} ({h[e]['loss']:.3f})" if e < len(h)
                         and h[e]["val"] is not None else "")
        print(f"| {e + 1} | " + " | ".join(cells) + " |")
    print("| s/epoch | " + " | ".join(
        f"{curves[n]['seconds'] / max(1, len(curves[n]['history'])):.1f}" for n in names)
        + " |")


if __name__ == "__main__":
    main()
