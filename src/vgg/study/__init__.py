"""`vgg study`: the paper's experiments (Tables 3-6 and the initialisation finding of
Sect. 3.1) reproduced in kind, by one call, with a verdict per finding.

:func:`run_study` plans the runs the chosen tables need (:mod:`.plan`), trains each
through :func:`vgg.train.train` in its own folder keyed by its settings (reused when
finished, resumed when cut off: :mod:`.runs`), evaluates each with
:func:`vgg.eval.evaluate` (posteriors saved, so fusion and the report never rerun a
net), decides each finding by a paired bootstrap (:mod:`.verdict`, :mod:`.results`) and
writes ``report.md`` with plots (:mod:`.report`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import atomic_write
from ..errors import ConfigError
from .plan import TABLES, StudyPlan, StudyScale, make_scale, parse_tables, plan_study
from .results import Finding, StudyResults
from .runs import (
    RunContext,
    StudyInterrupted,
    checkpoint_of,
    ensure_eval,
    ensure_run,
    read_done,
    run_dir,
    run_keys,
)
from .verdict import FAILS, HOLDS, UNSURE, paired_bootstrap

log = logging.getLogger(__name__)

STUDY_JSON = "study.json"
MAX_SEEDS = 20
DEFAULT_SEEDS = 3  # every verdict from at least 3 seeds a net (verdict.MIN_SEEDS)
QUICK_SEEDS = 2    # --quick: a pipeline check whose verdicts are all inconclusive


@dataclass(frozen=True)
class StudyConfig:
    out: Path = Path("vgg-study")
    data: Path | None = None       # a class-folder dataset (train/, val/); None = generated
    budget: float | None = None    # seconds; None = the plan's own sizes
    quick: bool = False
    device: str = "auto"
    seeds: int | None = None       # None: DEFAULT_SEEDS, or QUICK_SEEDS with quick
    only: tuple[str, ...] = TABLES
    report_only: bool = False
    workers: int | None = None
    progress: bool = True
    command: str = "vgg study"
    scale: StudyScale | None = None  # explicit sizes (library use, tests); None = make_scale
    devices: tuple[str, ...] | None = None  # several runs at once, one per device


@dataclass
class StudyResult:
    out: Path
    report: Path
    plan: StudyPlan
    findings: list[Finding]
    timings: dict[str, float] = field(default_factory=dict)

    def verdict(self, finding_id: str) -> str:
        for f in self.findings:
            if f.id == finding_id:
                return f.verdict
        raise KeyError(finding_id)


def parse_budget(text: str) -> float:
    """``"2h"``, ``"90m"``, ``"45min"``, ``"1.5h"``, ``"600s"`` or ``"600"`` -> seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(h|hr|hours?|m|min|minutes?|s|sec|seconds?)?\s*",
                     str(text).lower())
    if not m:
        raise ConfigError(f"--budget wants a duration like 2h, 90m or 600s, got {text!r}")
    unit = (m.group(2) or "s")[0]
    secs = float(m.group(1)) * {"h": 3600, "m": 60, "s": 1}[unit]
    if not math.isfinite(secs) or secs < 60 or secs > 90 * 24 * 3600:
        raise ConfigError(f"--budget must be between 1 minute and 90 days, got {text!r}")
    return secs


def step_seconds(scale: StudyScale, arch: str, batch_norm: bool, device: torch.device,
                 classes: int) -> float:
    """Seconds of one SGD step (forward, backward, update) of this net at the study's
    batch and crop on ``device``, timed after a warm-up step."""
    from ..model import build

    model = build(arch, batch_norm=batch_norm, num_classes=classes, width=scale.width,
                  fc_width=scale.fc_width, crop=scale.crop).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(scale.batch, 3, scale.crop, scale.crop, device=device)
    y = torch.randint(0, classes, (scale.batch,), device=device)
    times = []
    for i in range(3):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - t0)
    return min(times)


# Measured on the 2-core CPU: decoding, augmenting and validating make a study step cost
# about this many times the bare SGD step (see docs/study.md)
STEP_OVERHEAD = 2.0


def estimate_seconds(plan: StudyPlan, n_train: int, n_val: int, device: torch.device,
                     classes: int) -> float:
    """A rough estimate of the study's training and evaluation time: timed SGD steps of
    each net times the steps of its epochs, times ``STEP_OVERHEAD``; evaluation counted
    as one validation pass per test scale and method at a third of a step per batch."""
    cache: dict[tuple[str, bool], float] = {}
    total = 0.0
    for spec in plan.runs:
        k = (spec.arch, spec.batch_norm)
        if k not in cache:
            cache[k] = step_seconds(plan.scale, spec.arch, spec.batch_norm, device, classes)
        steps = spec.epochs * (math.ceil(n_train / plan.scale.batch)
                               + math.ceil(n_val / plan.scale.batch) / 3)
        total += STEP_OVERHEAD * cache[k] * steps
    for ev in plan.evals:
        spec = plan.run(ev.run)
        per = cache[(spec.arch, spec.batch_norm)]
        # multi-crop: 50 crops per image per scale
        crops = (1 + 50) if ev.method == "both" else 1
        total += STEP_OVERHEAD * per / 3 * len(ev.scales) * crops * math.ceil(
            n_val / plan.scale.batch) * 2  # and the mirror image
    return total


def _fit_budget(scale: StudyScale, tables: tuple[str, ...], seeds: int, budget: float,
                device: torch.device) -> tuple[StudyScale, str]:
    """Scale every epoch count so the estimated study time meets the budget (at least 2
    epochs a run, at most 4x the plan's)."""
    plan = plan_study(scale, tables, seeds)
    n_train = scale.classes * scale.train_per_class
    n_val = scale.classes * scale.val_per_class
    est = estimate_seconds(plan, n_train, n_val, device, scale.classes)
    factor = min(4.0, budget / max(est, 1e-9))
    fitted = scale.with_epochs(factor)
    est2 = estimate_seconds(plan_study(fitted, tables, seeds), n_train, n_val, device,
                            scale.classes)
    note = (f"Budget {budget / 60:.0f} min: the plan's sizes were estimated at "
            f"{est / 60:.1f} min on `{device}`, so every epoch count was scaled by "
            f"{factor:.2f} (at least 2 epochs a run); the fitted plan is estimated at "
            f"{est2 / 60:.1f} min (a rough estimate from timed SGD steps).")
    log.info("%s", note)
    return fitted, note


def _data_key(data: Path) -> tuple[str, int, int, int]:
    """A fingerprint of the training and validation images, their counts and classes."""
    from ..data.folders import index_split
    from ..data.sources import fingerprint

    tr, va = index_split(data, "train"), index_split(data, "val")
    blob = json.dumps({"train": fingerprint(tr), "val": fingerprint(va)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16], len(tr), len(va), tr.num_classes


def _request(cfg: StudyConfig, device: torch.device) -> dict[str, Any]:
    """What decides the study's sizes (a rerun with the same request keeps them, so its
    runs keep their keys even when a new budget estimate would differ)."""
    return {"quick": cfg.quick, "budget": cfg.budget, "device": device.type,
            "data": str(Path(cfg.data).resolve()) if cfg.data else None,
            "tables": list(cfg.only), "seeds": seeds_of(cfg),
            "scale": cfg.scale.to_dict() if cfg.scale is not None else None}


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def seeds_of(cfg: StudyConfig) -> int:
    """``cfg.seeds``, or the default for the study's size."""
    if cfg.seeds is None:
        return QUICK_SEEDS if cfg.quick else DEFAULT_SEEDS
    return cfg.seeds


def _check(cfg: StudyConfig) -> None:
    if cfg.seeds is not None and (not isinstance(cfg.seeds, int) or isinstance(cfg.seeds, bool)
                                  or not 1 <= cfg.seeds <= MAX_SEEDS):
        raise ConfigError(f"--seeds must be in 1..{MAX_SEEDS}, got {cfg.seeds!r}")
    bad = [t for t in cfg.only if t not in TABLES]
    if bad or not cfg.only:
        raise ConfigError(f"--only: unknown table(s) {bad}; choose from {', '.join(TABLES)}")
    if cfg.devices is not None and not 1 <= len(cfg.devices) <= 64:
        raise ConfigError(f"--devices takes 1 to 64 devices, got {len(cfg.devices)}")
    if cfg.data is not None and not Path(cfg.data).is_dir():
        raise ConfigError(f"--data: no dataset folder {cfg.data}")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")


def _sizes(cfg: StudyConfig, device: torch.device, saved: dict[str, Any] | None
           ) -> tuple[StudyScale, str]:
    """The study's sizes: those saved by a study made with the same request (so a rerun
    keeps its runs' keys), else the plan's own (``make_scale``, or ``cfg.scale``), fitted
    to ``--budget``."""
    if saved is not None and saved.get("request") == _request(cfg, device):
        return StudyScale.from_dict(saved["scale"]), saved.get("budget_note", "")
    scale = cfg.scale or make_scale(cfg.quick, device)
    if cfg.budget is not None:
        return _fit_budget(scale, cfg.only, seeds_of(cfg), cfg.budget, device)
    return scale, ""


def study_plan(cfg: StudyConfig) -> dict[str, Any]:
    """``vgg study --plan``: every run (name, arch, batch norm, init, seed, scale, epochs,
    image passes) and every finding with the runs on each side, training nothing and
    writing nothing (:func:`vgg.study.results.describe_plan`)."""
    from dataclasses import replace

    from ..devices import pick_device
    from .results import describe_plan

    _check(cfg)
    device = pick_device(cfg.device)
    _run_devices(cfg, device)
    scale, budget_note = _sizes(cfg, device, _load_json(Path(cfg.out) / STUDY_JSON))
    n_train = scale.classes * scale.train_per_class
    if cfg.data is not None:
        from ..data.folders import index_split

        train_index = index_split(Path(cfg.data), "train")
        scale = replace(scale, classes=train_index.num_classes)
        n_train = len(train_index)
    desc = describe_plan(plan_study(scale, cfg.only, seeds_of(cfg)), n_train)
    desc["data"] = str(cfg.data) if cfg.data is not None else "generated shapes set"
    desc["budget_note"] = budget_note
    return desc


def plan_text(desc: dict[str, Any]) -> str:
    """The plan of :func:`study_plan` as the text ``vgg study --plan`` prints."""
    sc = desc["scale"]
    w = max([len(r["name"]) for r in desc["runs"]] + [4])
    lines = [f"vgg study plan: {len(desc['runs'])} runs, {desc['seeds']} seed(s), tables "
             f"{', '.join(desc['tables'])}; data: {desc['data']} ({sc['classes']} classes, "
             f"{desc['images_per_pass']} training images a pass); nets width "
             f"{sc['width']:g}, FC {sc['fc_width']}, crop {sc['crop']}; "
             f"{desc['total_image_passes']:,} image passes in all",
             "", "runs:",
             f"  {'name':<{w}} {'arch':<6} {'BN':<3} {'init':<16} {'seed':>4} {'S':<8} "
             f"{'epochs':>6} {'passes':>9} {'from scratch':>13}  parent"]
    for r in desc["runs"]:
        a, b = r["scale"]
        lines.append(f"  {r['name']:<{w}} {r['arch']:<6} {'yes' if r['batch_norm'] else 'no':<3} "
                     f"{r['init']:<16} {r['seed']:>4} {str(a) if a == b else f'[{a};{b}]':<8} "
                     f"{r['epochs']:>6} {r['image_passes']:>9,} "
                     f"{r['total_image_passes']:>13,}  "
                     f"{(r['mode'] + ' ' + r['parent']) if r['parent'] else '-'}")
    lines += ["", f"findings (a verdict needs {desc['min_seeds_for_a_verdict']} seeds a "
                  f"side):"]
    for f in desc["findings"]:
        lines.append(f"  {f['name']}: {f['claim']}" + (f" [{f['label']}]" if f['label'] else ""))
        for k in ("a", "b"):
            lines.append(f"    {k} ({f['side_labels'][k]}; {f['evaluation'][k]}): "
                         f"{', '.join(f['sides'][k])}")
    if desc.get("budget_note"):
        lines += ["", desc["budget_note"]]
    return "\n".join(lines)


def run_study(cfg: StudyConfig) -> StudyResult:
    """Plan, train (or reuse, or resume), evaluate, decide and report; see the module
    docstring. ``cfg.report_only`` rebuilds the report from the runs that finished,
    training nothing. One study at a time per ``--out``: the process holds ``OUT/.lock``
    (released by the operating system if it dies) across its training workers, and a
    second study on the same folder is refused (``ConfigError``)."""
    from ..devices import pick_device
    from ..train.checkpoint import RunLock

    _check(cfg)
    out = Path(cfg.out)
    if cfg.report_only:
        return _report_only(cfg, out, _load_json(out / STUDY_JSON))
    device = pick_device(cfg.device)
    devices = _run_devices(cfg, device)  # a bad --devices fails before anything is written
    with RunLock(out, what="vgg study"):
        return _run(cfg, out, device, devices)


def _run(cfg: StudyConfig, out: Path, device: torch.device, devices: list[torch.device]
         ) -> StudyResult:
    saved = _load_json(out / STUDY_JSON)
    seeds = seeds_of(cfg)
    timings: dict[str, float] = {}
    request = _request(cfg, device)
    scale, budget_note = _sizes(cfg, device, saved)
    if saved is not None and saved.get("request") == request:
        log.info("continuing the study in %s with its saved plan", out)

    t0 = time.perf_counter()
    data, data_text = _dataset(cfg, out, scale)
    data_key, _, _, classes = _data_key(data)
    if cfg.data is not None:
        from dataclasses import replace

        scale = replace(scale, classes=classes)
    timings["dataset"] = time.perf_counter() - t0
    plan = plan_study(scale, cfg.only, seeds)
    keys = run_keys(plan, data_key)
    ctx = RunContext(out=out, data=data, data_key=data_key, device=device,
                     workers=cfg.workers, progress=cfg.progress)
    folders = {s.name: run_dir(ctx, s, keys[s.name]) for s in plan.runs}
    state = {"request": request, "scale": scale.to_dict(), "budget_note": budget_note,
             "data": str(data), "data_text": data_text, "data_key": data_key,
             "tables": list(cfg.only), "seeds": seeds, "device": str(device),
             "command": cfg.command, "runs": {n: str(f) for n, f in folders.items()},
             "timings": (saved or {}).get("timings", {}) if saved and
             saved.get("request") == request else {}}
    _save_state(out, state)

    t0 = time.perf_counter()
    log.info("study: %d runs, %d evaluations (%s; %d seed(s)) in %s", len(plan.runs),
             len(plan.evals), ", ".join(cfg.only), seeds, out)
    if len(devices) > 1:
        from .parallel import train_parallel

        train_parallel(ctx, plan, keys, folders, devices)
    for i, spec in enumerate(plan.runs, 1):  # (after a parallel pass: every run reused)
        parent_ckpt = None
        if spec.parent is not None:
            parent_ckpt = checkpoint_of(folders[spec.parent])
            if parent_ckpt is None:
                log.warning("skipping %s: its parent %s left no checkpoint", spec.name,
                            spec.parent)
                continue
        if len(devices) > 1 and read_done(folders[spec.name]) is not None:
            continue
        log.info("[run %d/%d] %s", i, len(plan.runs), spec.name)
        ensure_run(ctx, plan, spec, keys[spec.name], parent_ckpt)
    timings["training"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i, ev in enumerate(plan.evals, 1):
        if read_done(folders[ev.run]) is None:
            continue
        log.info("[evaluation %d/%d] %s: %s at Q=%s", i, len(plan.evals), ev.run, ev.method,
                 list(ev.scales))
        ensure_eval(ctx, folders[ev.run], ev)
    timings["evaluation"] = time.perf_counter() - t0
    state["timings"] = {k: state["timings"].get(k, 0.0) + v for k, v in timings.items()}
    _save_state(out, state)
    return _write(out, plan, folders, state, timings)


def _run_devices(cfg: StudyConfig, device: torch.device) -> list[torch.device]:
    """The devices runs are trained on at once: ``cfg.devices`` (e.g. cuda:0,cuda:1, or
    cpu,cpu to split a CPU's cores), else every CUDA device when ``--device auto`` finds
    more than one, else ``device`` alone."""
    from ..devices import pick_device

    if cfg.devices:
        try:
            return [pick_device(d) for d in cfg.devices]
        except ConfigError as e:
            raise ConfigError(str(e).replace("--device ", "--devices: ", 1)) from None
    if cfg.device in (None, "auto") and device.type == "cuda" and \
            torch.cuda.device_count() > 1:
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return [device]


def _dataset(cfg: StudyConfig, out: Path, scale: StudyScale) -> tuple[Path, str]:
    from ..data.synthetic import ensure_shapes_dataset

    if cfg.data is not None:
        return Path(cfg.data), f"`{cfg.data}` (given with --data)."
    log.info("shapes dataset: %d classes, %d train + %d val images per class, objects "
             "%g-%g of the smaller side, clutter %g", scale.classes, scale.train_per_class,
             scale.val_per_class, *scale.object_size, scale.clutter)
    root, _ = ensure_shapes_dataset(
        out / "data", scale.classes, seed=0, train_per_class=scale.train_per_class,
        val_per_class=scale.val_per_class, multi=False, min_side=scale.min_side,
        max_side=scale.max_side, object_size=scale.object_size, clutter=scale.clutter,
        workers=cfg.workers, progress=cfg.progress)
    text = (f"the generated shapes set (`{root}`): {scale.classes} classes, "
            f"{scale.train_per_class} training and {scale.val_per_class} validation images "
            f"per class, sides {scale.min_side}-{scale.max_side} px, objects "
            f"{scale.object_size[0]:g}-{scale.object_size[1]:g} of the smaller side, "
            f"clutter {scale.clutter:g} decoy polygons per image (docs/study.md says why).")
    return root, text


def _save_state(out: Path, state: dict[str, Any]) -> None:
    text = json.dumps(state, indent=1)
    atomic_write(out / STUDY_JSON, lambda f: f.write(text.encode()))


def _write(out: Path, plan: StudyPlan, folders: dict[str, Path], state: dict[str, Any],
           timings: dict[str, float]) -> StudyResult:
    from .report import write_report

    res = StudyResults.load(plan, folders)
    info = {"device": state.get("device"), "command": state.get("command"),
            "data_text": state.get("data_text", ""), "timings": state.get("timings"),
            "budget_note": state.get("budget_note", "")}
    path, found = write_report(out, plan, res, info)
    for f in found:
        log.info("%-14s %s%s%s", f.id, f.verdict,
                 f"  {f.interval.text()}" if f.interval else "",
                 f"  ({f.note})" if f.note else "")
        if f.seeds_a:
            log.info("%-14s   top-1 error %s", "", f.seeds_text())
    log.info("report: %s", path)
    return StudyResult(out=out, report=path, plan=plan, findings=found, timings=timings)


def _report_only(cfg: StudyConfig, out: Path, saved: dict[str, Any] | None) -> StudyResult:
    """Rebuild report.md from the study's saved plan and its finished runs."""
    if saved is None:
        raise ConfigError(f"--report: {out / STUDY_JSON} not found or unreadable; run "
                          f"`vgg study --out {out}` first")
    try:
        scale = StudyScale.from_dict(saved["scale"])
        tables = tuple(saved["tables"])
        seeds = int(saved["seeds"])
        runs = {n: Path(f) for n, f in saved["runs"].items()}
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"--report: {out / STUDY_JSON} is incomplete ({e})") from None
    if cfg.only != TABLES:  # --only with --report: a subset of what was run
        tables = tuple(t for t in tables if t in cfg.only) or tables
    plan = plan_study(scale, tables, seeds)
    missing = [s.name for s in plan.runs if s.name not in runs]
    if missing:
        raise ConfigError(f"--report: the study in {out} did not plan {missing[:3]}")
    return _write(out, plan, {s.name: runs[s.name] for s in plan.runs}, saved, {})


__all__ = [
    "FAILS",
    "HOLDS",
    "TABLES",
    "UNSURE",
    "StudyConfig",
    "StudyInterrupted",
    "StudyResult",
    "paired_bootstrap",
    "parse_budget",
    "plan_text",
    "study_plan",
    "parse_tables",
    "plan_study",
    "run_study",
]
