"""`vgg demo`: the whole system on the embedded shapes dataset, in minutes on a laptop.

Generates the shapes dataset (if absent; it has one VOC box per image), trains a
scaled-down net with the paper's recipe (scale jittering, PCA colour shift, SGD with
momentum, plateau schedule), evaluates it with
every test protocol of Sect. 3.2 (centre crop, dense at one and three scales, multi-crop,
multi-crop & dense), then trains a PCR localisation net from it (Appendix A) and
evaluates it with the simple and the full protocol, and writes a report folder with the
paper-style tables, the settings, the timings and plots.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoPlan:
    """The sizes of one demo run; :func:`make_plan` picks them for the device and mode."""

    classes: int
    train_per_class: int
    val_per_class: int
    min_side: int
    max_side: int
    object_size: tuple[float, float]  # object extent / smaller image side
    arch: str
    batch_norm: bool
    width: float
    fc_width: int
    crop: int
    scale: tuple[int, int]  # (s_min, s_max): Sect. 3.1 scale jittering
    epochs: int
    batch: int
    lr: float
    init: str
    patience: int
    schedule: str          # the classification schedule at this budget
    warmup: float
    loc_epochs: int        # Appendix A: the PCR net fine-tuned from the classification net
    loc_lr: float
    # the full localisation protocol's output stride (None: the default for the crop,
    # default_dense_stride; the CPU plans use 8, measured better and faster at crop 32)
    loc_stride: int | None = None

    @property
    def full_loc_stride(self) -> int:
        """The stride the full localisation protocol runs at."""
        from .model import default_dense_stride

        return self.loc_stride or default_dense_stride(self.crop)


def make_plan(quick: bool, device: torch.device) -> DemoPlan:
    """CPU plans fit 2 cores (under 10 minutes, or 2 with ``quick``); on a GPU the same
    recipe runs at a larger scale in about the same time.

    A plain 11-layer net learns these shapes from scratch only after some 20k image
    passes (its loss sits at log(classes) until the three FC layers have grown), so the
    CPU plans spend their minutes on passes: crop 32 (S jittered in [36, 48], the paper's
    [256, 512] scaled by 32/224 and narrowed so objects stay whole), conv width 1/4, FC
    1024 (a 128-wide head barely learns), objects 40-90% of the image side, batch 64.
    The schedule is the paper's plateau: measured on 600 images per class for 12
    epochs, it reaches 46% top-1 error where cosine reaches 55% (with or without warm-up): these
    nets sit at log(classes) for the first epochs and need the full rate once they start
    to learn. The localisation net (PCR, all layers tuned, plateau) then trains at S = 42
    for a few epochs with lr 1e-2: at 3 epochs Appendix A's 1e-3 leaves 41% simple-
    protocol error, 1e-2 30%. Its full protocol runs at output stride 8 on a CPU: on the
    demo's nets (crop 32, Q = 42) stride 8 gave 21.0% top-1 localisation error against
    23.5% at the default 4, in 20 s instead of 50 (docs/localisation.md).
    """
    common = dict(classes=10, object_size=(0.4, 0.9), arch="A", batch_norm=True,
                  fc_width=1024, batch=64, lr=0.02, init="kaiming", patience=2,
                  schedule="plateau", warmup=0.0)
    if device.type == "cuda":
        return DemoPlan(train_per_class=600 if quick else 2000,
                        val_per_class=50 if quick else 100, min_side=80, max_side=160,
                        width=0.5, crop=64, scale=(72, 112), epochs=10 if quick else 40,
                        loc_epochs=4 if quick else 12, loc_lr=0.01,
                        **common)  # type: ignore[arg-type]
    if quick:
        return DemoPlan(train_per_class=560, val_per_class=20, min_side=40, max_side=64,
                        width=0.25, crop=32, scale=(36, 48), epochs=11, loc_epochs=2,
                        loc_lr=0.01, loc_stride=8, **common)  # type: ignore[arg-type]
    return DemoPlan(train_per_class=1200, val_per_class=80, min_side=40, max_side=72,
                    width=0.25, crop=32, scale=(36, 48), epochs=26, loc_epochs=5,
                    loc_lr=0.01, loc_stride=8, **common)  # type: ignore[arg-type]


@dataclass(frozen=True)
class DemoConfig:
    """``amp``: the precision of both training runs (``--amp`` of ``vgg train``; auto =
    bf16 where the hardware runs it natively and it measured faster at the net's size);
    ``plan``: the sizes (None: :func:`make_plan` for the device and ``quick``)."""

    out: Path = Path("vgg-demo")
    quick: bool = False
    device: str = "auto"
    seed: int = 0
    workers: int | None = None
    progress: bool = True
    amp: str = "auto"
    plan: DemoPlan | None = None


@dataclass
class DemoResult:
    out: Path
    report: Path
    checkpoint: Path
    rows: list[dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)
    loc_checkpoint: Path | None = None
    loc_rows: list[dict[str, Any]] = field(default_factory=list)

    def error(self, protocol: str) -> float:
        """Top-1 error of one protocol ("centre", "dense", "dense 3 scales", ...)."""
        for r in self.rows:
            if r["protocol"] == protocol:
                return float(r["top1_err"])
        raise KeyError(protocol)


def shapes_dataset(plan: DemoPlan, root: Path, seed: int) -> tuple[Path, bool]:
    """The plan's shapes dataset in ``root``: reused when its synth.json matches the plan
    (returns ``made=False``), written when ``root`` is absent or empty, refused otherwise
    (:func:`vgg.data.synthetic.ensure_shapes_dataset`)."""
    from .data.synthetic import ensure_shapes_dataset

    return ensure_shapes_dataset(
        root, plan.classes, seed, train_per_class=plan.train_per_class,
        val_per_class=plan.val_per_class, multi=False, min_side=plan.min_side,
        max_side=plan.max_side, object_size=plan.object_size)


def train_workers(workers: int | None, device: torch.device) -> int | None:
    """Loader processes of the demo's training runs: ``workers`` when given; else none on
    a CPU with at most 2 usable cores, where the demo's small generated images (40-72
    pixels) load in-process faster than worker processes share the cores with the
    training threads (measured on 2 cores: 9.6 s an epoch of the demo's net against
    10.0-11.8 s with 2 workers); else the loader's default."""
    from .data.loaders import default_workers

    if workers is None and device.type == "cpu" and default_workers() <= 2:
        return 0
    return workers


def train_config(plan: DemoPlan, data: Path, out: Path, device: torch.device,
                 **kw: Any) -> Any:
    """The :class:`vgg.train.TrainConfig` that trains the plan's net on ``data`` (in
    ``--amp auto``); ``kw`` sets the other fields (seed, workers, amp, progress, ...)."""
    from .train import TrainConfig

    fields: dict[str, Any] = dict(
        data=str(data), out=str(out), arch=plan.arch, batch_norm=plan.batch_norm,
        width=plan.width, fc_width=plan.fc_width, crop=plan.crop, scale=plan.scale,
        epochs=plan.epochs, batch=plan.batch, lr=plan.lr, init=plan.init,
        patience=plan.patience, schedule=plan.schedule, warmup=plan.warmup,
        device=device.type, amp="auto")
    return TrainConfig(**{**fields, **kw})


def _plot_errors(rows: list[dict[str, Any]], path: Path, chance: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["protocol"] for r in rows]
    top1 = [100 * r["top1_err"] for r in rows]
    top5 = [100 * r["top5_err"] for r in rows]
    xs = range(len(rows))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar([x - 0.2 for x in xs], top1, width=0.4, label="top-1 error")
    ax.bar([x + 0.2 for x in xs], top5, width=0.4, label="top-5 error")
    ax.axhline(100 * chance, color="grey", linestyle="--", label="top-1 chance")
    ax.set_xticks(list(xs), labels, rotation=15)
    ax.set_ylabel("validation error (%)")
    ax.set_title("Test protocols of Sect. 3.2 on the shapes dataset")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_demo(cfg: DemoConfig) -> DemoResult:
    """Run the demo end to end; returns the rows of the tables and where the report is."""
    from .data.folders import index_split
    from .devices import pick_device
    from .eval import evaluate
    from .model import default_dense_stride
    from .report import loc_table, paper_table
    from .train import train

    device = pick_device(cfg.device)
    plan = cfg.plan or make_plan(cfg.quick, device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    log.info("[1/4] shapes dataset (%d classes, %d train + %d val images per class)",
             plan.classes, plan.train_per_class, plan.val_per_class)
    data, made = shapes_dataset(plan, out / "data", cfg.seed)
    timings["dataset"] = time.perf_counter() - t0
    if not made:
        log.info("      reusing %s", data)

    t0 = time.perf_counter()
    log.info("[2/4] training %s (width %g, FC %d, crop %d) with S ~ U[%d, %d] on %s",
             plan.arch + ("-BN" if plan.batch_norm else ""), plan.width, plan.fc_width,
             plan.crop, *plan.scale, device.type)
    run_dir = out / "run"
    tcfg = train_config(plan, data, run_dir, device, seed=cfg.seed, amp=cfg.amp,
                        workers=train_workers(cfg.workers, device), progress=cfg.progress,
                        tensorboard=False, plot=True, overwrite=True)
    result = train(tcfg)
    timings["training"] = time.perf_counter() - t0
    ckpt = result.best_path or result.last_path

    t0 = time.perf_counter()
    s_min, s_max = plan.scale
    q_mid = (s_min + s_max) // 2
    scales = [s_min, q_mid, s_max]  # Sect. 3.2: Q = {Smin, (Smin+Smax)/2, Smax}
    stride = default_dense_stride(plan.crop)  # SPEC 6b: ~7 positions per window side
    log.info("[3/4] evaluating: centre crop, dense (output stride %d) at Q=%d and Q=%s, "
             "50-crop multi-crop, multi-crop & dense", stride, q_mid, scales)
    index = index_split(data, "val")
    common = dict(batch_size=32, device=device, workers=cfg.workers, progress=cfg.progress,
                  precision="auto" if device.type == "cuda" else "fp32")
    center = evaluate(ckpt, index, method="center", scales=[q_mid], **common)
    both = evaluate(ckpt, index, method="both", scales=scales, dense_stride=stride, **common)
    timings["evaluation"] = time.perf_counter() - t0
    protocols = [
        ("centre crop", center),
        ("dense", both.select("dense", scales=[q_mid])),
        ("dense 3 scales", both.select("dense")),
        ("multi-crop 3 scales", both.select("multicrop")),
        ("multi-crop & dense", both.select("both")),
    ]
    rows = []
    for name, r in protocols:
        row = r.table_row()
        rows.append(row | {"protocol": name, "n_images": r.n_images})
    table = paper_table(rows)
    chance = 1.0 - 1.0 / plan.classes

    t0 = time.perf_counter()
    loc = _localisation(plan, cfg, data, ckpt, out, device)
    timings["localisation"] = time.perf_counter() - t0
    loc_rows = [r.table_row() | {"n_images": r.n_images, "mean_iou": r.mean_iou()}
                for r in loc["results"]]

    _plot_errors(rows, out / "errors.png", chance)
    curves = run_dir / "curves.png"
    timings["total"] = sum(timings.values())
    (out / "results.json").write_text(json.dumps(
        {"rows": rows, "localisation": loc_rows, "plan": asdict(plan), "timings_s": timings,
         "device": str(device), "checkpoint": str(ckpt),
         "localisation_checkpoint": str(loc["checkpoint"]), "history": result.history,
         "localisation_history": loc["history"]}, indent=2, default=str))
    report = out / "report.md"
    report.write_text(_report_md(cfg, plan, device, paper_table(rows, fmt="markdown"),
                                 loc_table(loc["results"], fmt="markdown"), timings, ckpt,
                                 loc["checkpoint"], data, curves, result.history, chance,
                                 scales, loc["history"], stride))
    log.info("\n%s\n\n%s\n", table, loc_table(loc["results"]))
    log.info("chance level: top-1 error %.1f%%; report: %s", 100 * chance, report)
    log.info("try: vgg evaluate %s --data %s --method both", ckpt, data)
    log.info("     vgg predict %s %s --top 3", ckpt, next(iter(index.samples))[0])
    log.info("     vgg localize predict %s --classifier %s %s --draw boxes", loc["checkpoint"],
             ckpt, next(iter(index.samples))[0])
    return DemoResult(out=out, report=report, checkpoint=ckpt, rows=rows, timings=timings,
                      loc_checkpoint=loc["checkpoint"], loc_rows=loc_rows)


def _localisation(plan: DemoPlan, cfg: DemoConfig, data: Path, ckpt: Path, out: Path,
                  device: torch.device) -> dict[str, Any]:
    """Appendix A on the shapes set: a PCR net fine-tuned (all layers) from the demo's
    classification net at a single scale, then the simple and the full protocol, and a
    picture of predicted against true boxes."""
    from .localize.data import box_index
    from .localize.evaluate import full_protocol, simple_protocol
    from .localize.predict import draw_guesses, predict_boxes
    from .localize.task import localisation_config
    from .train import train

    s = (plan.scale[0] + plan.scale[1]) // 2
    log.info("[4/4] localisation: a PCR net from %s at S = %d (Appendix A), simple and "
             "full protocols", ckpt, s)
    lcfg = localisation_config({
        "source": str(ckpt), "data": str(data), "out": str(out / "localize"),
        "epochs": plan.loc_epochs, "lr": plan.loc_lr, "batch": plan.batch,
        "schedule": plan.schedule,
        "workers": train_workers(cfg.workers, device), "seed": cfg.seed,
        "progress": cfg.progress,
        "tensorboard": False, "plot": True, "overwrite": True, "device": device.type,
        "amp": cfg.amp})
    result = train(lcfg)
    loc_ckpt = result.best_path or result.last_path
    classes = load_classes(loc_ckpt)
    index, _ = box_index(data, "val", classes, quiet=True)
    common = dict(batch_size=32, device=device, workers=cfg.workers, progress=cfg.progress,
                  precision="auto" if device.type == "cuda" else "fp32")
    simple = simple_protocol(str(loc_ckpt), index, **common)
    stride = plan.full_loc_stride
    full = full_protocol(str(loc_ckpt), str(ckpt), index, dense_stride=stride, **common)
    results = [simple, full]
    if not cfg.quick:  # Table 9's second scale {S-32, S}, scaled with the crop
        step = max(1, round(32 * plan.crop / 224))
        results.append(full_protocol(str(loc_ckpt), str(ckpt), index, [s - step, s],
                                     dense_stride=stride, **common))
    # a picture: the first validation image of each class, guesses against the truth
    firsts: dict[int, Path] = {}
    for p, lbl in index.samples:
        firsts.setdefault(lbl, p)
    preds = predict_boxes(str(loc_ckpt), str(ckpt), list(firsts.values())[:8], top=1,
                          device=device, workers=cfg.workers, progress=False)
    pics = draw_guesses(preds, out / "boxes")
    _montage(pics, out / "boxes.png")
    return {"results": results, "checkpoint": loc_ckpt,
            "history": result.history}


def _positions(q: int, crop: int, stride: int) -> int:
    """Dense positions along a side of ``q`` pixels (``VGGFullyConv.map_size``)."""
    return q // stride - crop // stride + 1


def load_classes(path: Path) -> list[str]:
    from .weights import open_weights as load_checkpoint

    return list(load_checkpoint(path).classes or [])


def _montage(pictures: list[Path], path: Path) -> Path:
    """The drawn images side by side (2 rows) in one PNG for the report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    n = max(1, len(pictures))
    cols = (n + 1) // 2 if n > 1 else 1
    rows = 2 if n > 1 else 1
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, pic in zip(axes.flat, pictures):
        with Image.open(pic) as im:
            ax.imshow(im.convert("RGB"))
        ax.set_title(pic.stem, fontsize=8)
    fig.suptitle("top guess (red: class, score) against the true box (green)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _report_md(cfg: DemoConfig, plan: DemoPlan, device: torch.device, table: str,
               loc_table: str, timings: dict[str, float], ckpt: Path, loc_ckpt: Path,
               data: Path, curves: Path, history: list[dict[str, Any]], chance: float,
               scales: list[int], loc_history: list[dict[str, Any]], stride: int) -> str:
    from . import __version__
    from .train.step import amp_name

    example = next((data / "val").glob("*/*.jpg"), data / "val")
    rel_curves = curves.relative_to(cfg.out) if curves.is_relative_to(cfg.out) else curves
    lines = [
        "# vgg demo report",
        "",
        f"vgg {__version__}, torch {torch.__version__}, {platform.python_implementation()} "
        f"{platform.python_version()}, device `{device}`"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
           f" ({torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''})"),
        "",
        "## Results (Sect. 3.2 test protocols, validation set)",
        "",
        table,
        "",
        f"Chance level: {100 * chance:.1f}% top-1 error ({plan.classes} classes). "
        f"Test scales Q = {scales} (Smin, (Smin+Smax)/2, Smax for a net trained with "
        f"jittered S); single-scale rows use Q = {scales[1]}. Dense rows apply the "
        f"fully-convolutional net at output stride {stride} (the default for crop "
        f"{plan.crop}, SPEC 6b: about 7 positions per {plan.crop}-pixel window side, as "
        f"the paper's 32 pixels do for 224): the smaller side of an image rescaled to "
        f"Q = {scales[1]} holds {_positions(scales[1], plan.crop, stride)} positions, "
        f"against {_positions(scales[1], plan.crop, 32)} at stride 32 "
        f"(docs/evaluation.md).",
        "",
        "![error per protocol](errors.png)",
        "",
        "## Localisation (Appendix A, validation set)",
        "",
        loc_table,
        "",
        f"A PCR net (a box per class) fine-tuned from the classification net, all layers, "
        f"{plan.loc_epochs} epochs at the single scale S = {scales[1]}, Euclidean loss, "
        f"lr {plan.loc_lr:g}. "
        "*simple*: the central crop and the box of the ground-truth class (Table 8); "
        "*full*: dense boxes at every position and the mirror, the classification net's "
        "top-5 classes, greedy merging, five (class, box) guesses (Tables 9-10). An image "
        "is right when a guess has the right class and IoU > 0.5 with its true box. The "
        "two baselines use the same classes with the whole image as the box, or the mean "
        "training box at the centre. "
        f"The full protocol runs at output stride {plan.full_loc_stride} (the "
        "stride column): an image rescaled to "
        f"Q = {scales[1]} then holds "
        f"{_positions(scales[1], plan.crop, plan.full_loc_stride)} positions a side, "
        "each predicting boxes in its own window; at stride 32 it held one window, in the "
        "top-left corner, and the full protocol trailed the mean box "
        "(docs/localisation.md measures both).",
        "",
        "The full protocol's top guess for one validation image per class:",
        "",
        "![predicted against true boxes](boxes.png)",
        "",
        "| epoch | lr | train loss | val loc. err (simple) | val mean IoU |",
        "|---:|---:|---:|---:|---:|",
        *[f"| {h.get('epoch')} | {h.get('lr', 0):.1e} | {h.get('train_loss', 0):.4f} | "
          f"{h.get('val_loc_err', 0):.3f} | {h.get('val_mean_iou', 0):.3f} |"
          for h in loc_history],
        "",
        "## Training",
        "",
        f"![training curves]({rel_curves})",
        "",
        "| epoch | lr | train loss | train top-1 err | val top-1 err | val top-5 err |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for h in history:
        lines.append(f"| {h.get('epoch')} | {h.get('lr', 0):.1e} | {h.get('train_loss', 0):.3f} "
                     f"| {h.get('train_top1_err', 0):.3f} | {h.get('val_top1_err', 0):.3f} "
                     f"| {h.get('val_top5_err', 0):.3f} |")
    lines += [
        "",
        "## Settings",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    for k, v in asdict(plan).items():
        lines.append(f"| {k} | {v} |")
    lines += [
        f"| mode | {'quick' if cfg.quick else 'full'} |",
        f"| seed | {cfg.seed} |",
        f"| amp | {cfg.amp}: trained in "
        f"{amp_name(history[-1].get('amp', 'none') if history else 'none')} |",
        "",
        "Recipe (Sect. 3.1): SGD with momentum 0.9, weight decay 5e-4, dropout 0.5 on "
        "FC1/FC2, per-image scale jittering S ~ U[Smin, Smax], random crop and flip, PCA "
        "colour shift (alpha ~ N(0, 0.1)), mean RGB subtraction. What is changed, and why: "
        "the net is scaled down (width, FC width, crop) to fit a laptop; batch "
        "normalisation (not in the paper) and He initialisation (the paper uses N(0, 0.01) "
        "and pre-initialisation from net A) let the 11-layer net train from scratch in "
        "minutes. The learning rate follows the paper's schedule (divide by 10 on a "
        "plateau of the validation error); at this budget it beats cosine annealing "
        "(docs/training.md). The localisation net uses lr 1e-2 instead of Appendix A's "
        "1e-3, for the same short budget.",
        "",
        "## Timings",
        "",
        "| step | seconds |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v:.1f} |" for k, v in timings.items()]
    lines += [
        "",
        "## Use the trained net",
        "",
        "```bash",
        f"vgg evaluate {ckpt} --data {data} --method both --json results-both.json",
        f"vgg predict {ckpt} {example} --top 3",
        f"vgg export {ckpt} --onnx demo.onnx --fully-conv   # pip install 'vgg[export]'",
        f"vgg localize evaluate {loc_ckpt} --classifier {ckpt} --data {data} "
        f"--protocol full",
        f"vgg localize predict {loc_ckpt} --classifier {ckpt} {example} --draw boxes",
        "```",
        "",
    ]
    return "\n".join(lines)
