"""Appendix B descriptor extraction speed, against the obvious torchvision route, in one
run; and the linear-SVM fit time.

vgg: ``vgg.transfer.extract_features`` — the whole image rescaled to smallest side Q, the
fully-convolutional net up to relu7 densely, global average pooling, mirror image
averaged — at each Q of {256, 384, 512} separately (images/s of one Q).
torchvision: the same weights as ``torchvision.models.vgg16`` through
``torchvision.models.feature_extraction.create_feature_extractor`` (``classifier.4``,
FC7 after ReLU) on 256-resized 224 centre crops, one scale, no mirror — what a user
writes by hand. Both decode the same JPEG files, single process, same batch size.

The ratio reads: how many times slower (or faster) the paper's descriptor is than one
crop per image. The paper's descriptor sees the whole image at several scales and its
mirror, so it does several times the arithmetic per image; the table gives the
multiply-adds per image too.

The SVM stage (``--part svm``): ``vgg.transfer.svm.train_svms`` — one-vs-rest SVMs, C
chosen among 0.01 .. 1000 on 20% held out, refit on all — as a Caltech-101 protocol run
does it: 102 classes, 30 training and 50 test images per class, 3 random splits, on
synthetic descriptors of the stacked kind (3 scales, each relu(class mean + nuisance
shared by the classes + noise), L2-normalised), D = 3 x 1024 (a scaled-down net,
fc_width 1024) and 3 x 4096 (full size). Both solvers of the same problem, same cores: ``torch`` (all classes at
once, Newton's method) against ``liblinear`` (scikit-learn's LinearSVC per class, joblib
threads). Per solver: seconds per protocol run, the chosen C of each split, and, for
every fit (the 6 held-out fits and the refit of every split), the objective value per
class (LinearSVC's primal, float64) and the test recall per class.

    python benchmarks/bench_transfer.py --images 8 --record
    python benchmarks/bench_transfer.py --part svm --lib-splits 3,1 --record
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from vgg.data.folders import index_folder  # noqa: E402
from vgg.transfer.features import extract_features  # noqa: E402
from vgg.transfer import svm as svm_mod  # noqa: E402


def make_images(root: Path, n: int, seed: int = 0) -> Path:
    """n photo-sized JPEGs (500 x 375 and 375 x 500, like Caltech's and VOC's)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "x").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        w, h = (500, 375) if i % 2 == 0 else (375, 500)
        small = rng.integers(0, 256, (h // 25, w // 25, 3), dtype=np.uint8)
        Image.fromarray(small).resize((w, h), Image.BILINEAR).save(root / "x" / f"{i}.jpg")
    return root


def torchvision_route(tv_model: torch.nn.Module, paths: list[Path], batch: int) -> float:
    from PIL import Image
    from torchvision import transforms
    from torchvision.models.feature_extraction import create_feature_extractor

    extractor = create_feature_extractor(tv_model.eval(), {"classifier.4": "feat"})
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224),
                             transforms.ToTensor(),
                             transforms.Normalize([0.485, 0.456, 0.406],
                                                  [0.229, 0.224, 0.225])])
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(paths), batch):
            x = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths[i:i + batch]])
            extractor(x)["feat"]
    return len(paths) / (time.perf_counter() - t0)


def macs_per_image(q: int, sizes: list[tuple[int, int]], flip: bool) -> float:
    """Multiply-adds of VGG-16 on the images rescaled to Q (mean per image; FC8, which the
    descriptor skips, is under 0.3% of it)."""
    from vgg.data.transforms import rescale_size
    from vgg.model import VGGConfig
    from vgg.summary import total_macs

    cfg = VGGConfig("D")
    tot = []
    for w, h in sizes:
        nw, nh = rescale_size(w, h, q) if q else (224, 224)
        tot.append(total_macs(cfg, (nh, nw), fully_conv=bool(q)) * (2 if flip else 1))
    return float(np.mean(tot))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("features", "svm"), default="features",
                    help="descriptor extraction (default) or the SVM stage")
    ap.add_argument("--data", type=Path, default=None,
                    help="a folder of class folders (default: generated photo-sized JPEGs)")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--scales", default="256,384,512")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--svm-dims", default="3072,12288", metavar="D,D",
                    help="descriptor sizes of the SVM stage (3 stacked scales)")
    ap.add_argument("--svm-classes", type=int, default=102)
    ap.add_argument("--svm-train", type=int, default=30, help="training images per class")
    ap.add_argument("--svm-test", type=int, default=50, help="test images per class")
    ap.add_argument("--svm-splits", type=int, default=3)
    ap.add_argument("--svm-noise", type=float, default=3.0,
                    help="noise / class-mean scale of the synthetic descriptors")
    ap.add_argument("--lib-splits", default=None, metavar="N,N",
                    help="splits liblinear runs, per D (default: all; it is slow)")
    ap.add_argument("--solvers", default="torch,liblinear")
    ap.add_argument("--record", action="store_true",
                    help="write the tables into docs/benchmarks.md")
    args = ap.parse_args()
    if args.part == "features":
        features_part(args)
    else:
        svm_part(args)


def features_part(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    import torchvision

    from vgg.weights import from_torchvision

    tv = torchvision.models.vgg16().eval()
    ours = from_torchvision(tv.state_dict(), "D")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or make_images(Path(tmp), args.images)
        index = index_folder(root)
        index = index.subset(list(range(min(args.images, len(index)))))
        paths = [p for p, _ in index.samples]
        from vgg.data.decode import image_size
        sizes = [image_size(p) for p in paths]
        rows = []
        tv_ips = torchvision_route(tv, paths, args.batch)
        tv_macs = macs_per_image(0, sizes, False)
        rows.append(("torchvision create_feature_extractor, 224 centre crop", tv_ips,
                     tv_macs, 1.0))
        for q in (int(v) for v in args.scales.split(",")):
            t0 = time.perf_counter()
            extract_features(ours, index, [q], batch_size=args.batch, workers=0,
                             progress=False, device="cpu")
            ips = len(paths) / (time.perf_counter() - t0)
            rows.append((f"vgg dense Q={q} + mirror", ips, macs_per_image(q, sizes, True),
                         ips / tv_ips))
    lines = [f"Images: {len(paths)} {'from ' + str(args.data) if args.data else 'generated 500x375 JPEGs'}; "
             f"batch {args.batch}; torch {torch.__version__}, {platform.processor() or platform.machine()}, "
             f"{torch.get_num_threads()} threads.", "",
             "| route | images/s | GMACs / image | GMACs/s | images/s vs torchvision |",
             "|---|---:|---:|---:|---:|"]
    for name, ips, macs, ratio in rows:
        lines.append(f"| {name} | {ips:.2f} | {macs / 1e9:.1f} | {ips * macs / 1e9:.0f} | "
                     f"{ratio:.2f}x |")
    lines += ["", "Reading it: the paper's descriptor does 3.5x (Q=256) to 16x (Q=512) the "
              "arithmetic of one centre crop (the whole image, and its mirror); per "
              "multiply-add it runs at 0.8x to 1.1x the torchvision route's rate (GMACs/s; "
              "small batches of one rescaled size cost most at Q=256), so the images/s "
              "ratio is mostly the price of the protocol, not overhead."]
    text = "\n".join(lines)
    print(text)
    if args.record:
        doc = REPO / "docs" / "benchmarks.md"
        s = doc.read_text()
        block = (f"<!-- transfer:begin -->\n`python benchmarks/bench_transfer.py "
                 f"--images {args.images} --record`\n\n{text}\n<!-- transfer:end -->")
        if "<!-- transfer:begin -->" in s:
            a, rest = s.split("<!-- transfer:begin -->", 1)
            s = a + block + rest.split("<!-- transfer:end -->", 1)[1]
        else:
            s += "\n## Appendix B: descriptor extraction and SVMs\n\n" + block + "\n"
        doc.write_text(s)



# ---------------------------------------------------------------------- the SVM stage

def caltech_like(k: int, per_class: int, dim: int, noise: float, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(X (k * per_class, dim) float32, labels): descriptors of 3 stacked scales, each
    block relu(class mean + the scale's shift of it + nuisance + noise), L2-normalised,
    then the whole row L2-normalised — the shape of Appendix B's stacked Caltech
    descriptor. The nuisance (background, pose, light: 32 directions shared by all
    classes, ``noise`` times stronger than the isotropic noise) is what a fitted SVM
    learns to ignore and a class mean does not."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), per_class)
    n, w = len(labels), dim // 3
    centres = rng.normal(size=(k, w))
    nuisance = rng.normal(size=(32, w)) / np.sqrt(32)
    blocks = []
    for _ in range(3):
        shift = 0.5 * rng.normal(size=(k, w))
        b = centres[labels] + shift[labels] + noise * (
            noise * rng.normal(size=(n, 32)) @ nuisance + rng.normal(size=(n, w)))
        b = np.maximum(0.0, b)
        blocks.append(b / np.linalg.norm(b, axis=1, keepdims=True))
    X = np.concatenate(blocks, 1)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), labels


def objectives(X: np.ndarray, targets: np.ndarray, W: np.ndarray, b: np.ndarray, C: float
               ) -> np.ndarray:
    """LinearSVC's primal per class, float64: 0.5 (|w|^2 + b^2) + C sum slack^2."""
    Xt = torch.as_tensor(X, dtype=torch.float64)
    Wt, bt = torch.as_tensor(W, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    Y = torch.where(torch.as_tensor(targets) > 0, 1.0, -1.0).double()
    slack = (1 - Y * (Xt @ Wt.T + bt)).clamp_min(0)
    return (0.5 * ((Wt ** 2).sum(1) + bt ** 2) + C * (slack ** 2).sum(0)).numpy()


class FitLog:
    """Every fit train_svms makes on ``n`` training rows, whichever the solver:
    (held-out fit?, C, W, b)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.fits: list[tuple[bool, float, np.ndarray, np.ndarray]] = []
        self._lib, self._torch = svm_mod._fit_liblinear, svm_mod.TorchSVMs.fit

    def __enter__(self) -> FitLog:
        log_, lib, tfit = self, self._lib, self._torch

        def lib_fit(X, targets, ignore, C, seed, jobs):  # noqa: ANN001, ANN202
            out = lib(X, targets, ignore, C, seed, jobs)
            log_.fits.append((len(X) < log_.n, C, out.W, out.b))
            return out

        def torch_fit(engine, rows, C):  # noqa: ANN001, ANN202
            out = tfit(engine, rows, C)
            log_.fits.append((rows is not None, C, out.W, out.b))
            return out
        svm_mod._fit_liblinear, svm_mod.TorchSVMs.fit = lib_fit, torch_fit
        return self

    def __exit__(self, *exc: object) -> None:
        svm_mod._fit_liblinear, svm_mod.TorchSVMs.fit = self._lib, self._torch


def run_solver(X: np.ndarray, labels: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]],
               k: int, solver: str) -> dict:
    """A protocol run's SVM stage: per split, train_svms then test recalls per class;
    then the objective of every fit it made (untimed)."""
    from vgg.eval import metrics

    T = np.eye(k, dtype=np.uint8)[labels]
    out: dict[str, list] = {"seconds": [], "basis": [], "C": [], "recall": [], "fits": []}
    for s, (tr, te) in enumerate(splits):
        with FitLog(len(tr)) as fl:
            t0 = time.perf_counter()
            svm = svm_mod.train_svms(X[tr], T[tr], seed=s, solver=solver)
            r = metrics.class_recalls(svm.scores(X[te]), labels[te])
            out["seconds"].append(time.perf_counter() - t0)
        out["C"].append(svm.C)
        out["basis"].append(svm.basis_seconds)
        out["recall"].append(r)
        hold, _ = svm_mod.holdout_rows(T[tr], seed=s)  # the held-out fits' rows
        out["fits"].append([(C, held, objectives(X[tr][hold] if held else X[tr],
                                                 T[tr][hold] if held else T[tr], W, b, C))
                            for held, C, W, b in fl.fits])
        print(f"  {solver} split {s + 1}: {out['seconds'][-1]:.1f} s, C={svm.C:g}, "
              f"mean recall {r.mean():.4f}", flush=True)
    return out


def svm_part(args: argparse.Namespace) -> None:
    dims = [int(v) for v in args.svm_dims.split(",")]
    lib_splits = [int(v) for v in args.lib_splits.split(",")] if args.lib_splits else \
        [args.svm_splits] * len(dims)
    solvers = args.solvers.split(",")
    k, ntr, nte = args.svm_classes, args.svm_train, args.svm_test
    lines = [f"Caltech-101 size: {k} classes, {ntr} training and {nte} test images per "
             f"class, {args.svm_splits} random splits, C grid "
             f"{','.join(f'{c:g}' for c in svm_mod.C_GRID)} chosen on 20% held out then "
             f"refit; synthetic stacked descriptors (noise {args.svm_noise:g}); torch "
             f"{torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads, "
             f"the torch solver on {svm_mod.svm_device()}; tolerance: the torch solver stops "
             f"at a certified relative objective gap of {svm_mod.TOL:g} per class, "
             f"liblinear at scikit-learn's defaults (tol 1e-4, at most "
             f"{svm_mod.MAX_ITER} iterations).", "",
             "| D | solver | splits run | s / split | of which basis | s / protocol run "
             f"({args.svm_splits} splits) | speed-up | chosen C per split | mean test recall |",
             "|---:|---|---:|---:|---:|---:|---:|---|---:|"]
    gaps = ["", "Objective values (LinearSVC's primal per class, float64) of the two "
                "solvers' weights, fit by fit (the same rows and C), as (liblinear - "
                "torch) / torch over classes and splits: positive where liblinear stopped "
                "above the optimum; and the per-class test recall difference.", "",
            "| D | fit | C | mean objective, torch | mean objective, liblinear | "
            "median gap | min gap | max gap |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    rec = ["", "| D | splits compared | same C | max per-class recall difference | "
               "mean recall torch | mean recall liblinear |", "|---:|---:|---|---:|---:|---:|"]
    for dim, n_lib in zip(dims, lib_splits):
        X, labels = caltech_like(k, ntr + nte, dim, args.svm_noise)
        rng = np.random.default_rng(0)
        splits = []
        for _ in range(args.svm_splits):
            tr, te = [], []
            for c in range(k):
                idx = rng.permutation(np.nonzero(labels == c)[0])
                tr += idx[:ntr].tolist()
                te += idx[ntr:ntr + nte].tolist()
            splits.append((np.array(sorted(tr)), np.array(sorted(te))))
        res = {}
        for solver in solvers:
            n = n_lib if solver == "liblinear" else args.svm_splits
            print(f"D={dim}: {solver}, {n} split(s)", flush=True)
            res[solver] = run_solver(X, labels, splits[:n], k, solver)
        base = np.mean(res["liblinear"]["seconds"]) if "liblinear" in res else None
        for solver in solvers:
            r = res[solver]
            per = float(np.mean(r["seconds"]))
            n = len(r["seconds"])
            run = f"{per * args.svm_splits:.1f}" + ("" if n == args.svm_splits else
                                                     f" (est. {n} split measured x "
                                                     f"{args.svm_splits})")
            speed = f"{base / per:.1f}x" if base else "-"
            basis = f"{np.mean(r['basis']):.1f}" if solver == "torch" else "-"
            lines.append(f"| {dim} | {solver} | {n} | {per:.1f} | {basis} | {run} | {speed} | "
                         f"{', '.join(f'{c:g}' for c in r['C'])} | "
                         f"{np.mean([x.mean() for x in r['recall']]):.4f} |")
        if "torch" in res and "liblinear" in res:
            a, b = res["torch"], res["liblinear"]
            n = len(b["seconds"])
            by_fit: dict[tuple[bool, float], list[np.ndarray]] = {}
            objs: dict[tuple[bool, float], list[tuple[float, float]]] = {}
            for s in range(n):
                for (ca, held, fa), (cb, _, fb) in zip(a["fits"][s], b["fits"][s]):
                    assert ca == cb
                    by_fit.setdefault((held, ca), []).append((fb - fa) / fa)
                    objs.setdefault((held, ca), []).append((fa.mean(), fb.mean()))
            for (held, C), g in sorted(by_fit.items(), key=lambda x: (not x[0][0], x[0][1])):
                g = np.concatenate(g)
                fa, fb = np.mean(objs[(held, C)], 0)
                gaps.append(f"| {dim} | {'80% (held-out choice)' if held else 'refit, all'} | "
                            f"{C:g} | {fa:.6g} | {fb:.6g} | {np.median(g):.1e} | "
                            f"{g.min():.1e} | {g.max():.1e} |")
            same = all(a["C"][s] == b["C"][s] for s in range(n))
            diff = max(float(np.nanmax(np.abs(a["recall"][s] - b["recall"][s])))
                       for s in range(n))
            rec.append(f"| {dim} | {n} | {'yes' if same else 'no'} | {diff:.4f} | "
                       f"{np.mean([x.mean() for x in a['recall'][:n]]):.4f} | "
                       f"{np.mean([x.mean() for x in b['recall'][:n]]):.4f} |")
    text = "\n".join(lines + gaps + rec)
    print(text)
    if args.record:
        sys.path.insert(0, str(REPO / "benchmarks"))
        from bench_eval import record

        cmd = "python benchmarks/bench_transfer.py" + " ".join(
            [""] + [a for a in sys.argv[1:] if a != "--record"])
        record(f"`{cmd}`\n\n{text}", "transfer-svm", "## Appendix B: the SVM stage")


if __name__ == "__main__":
    main()
