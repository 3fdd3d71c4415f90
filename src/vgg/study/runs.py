"""Run folders of a study, keyed by their settings: ``OUT/runs/<name>-<key>/`` holds the
``vgg train`` run (``train/``: config.yaml, last.pt, best.pt, metrics.jsonl), a
``done.json`` once training finished, and the saved posteriors of each evaluation
(``eval-<method>-<scales>.npz``, the format of ``vgg evaluate --save-posteriors``).

A finished run is reused; a run with a ``last.pt`` but no ``done.json`` (a study killed
mid-run) is continued by :func:`vgg.train.resume`, exactly as ``vgg train --resume``
does; the key changes when any setting changes (or the parent's key, or the data), so a
changed plan never reuses a stale net.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import atomic_write
from ..errors import VggError
from .plan import EvalSpec, RunSpec, StudyPlan

log = logging.getLogger(__name__)

DONE = "done.json"


class StudyInterrupted(VggError):
    """A run was stopped by SIGINT/SIGTERM after saving; rerunning the study resumes it."""

    exit_code = 130


@dataclass
class RunContext:
    """What every run of one study shares."""

    out: Path
    data: Path
    data_key: str           # fingerprint of the training and validation images
    device: torch.device
    workers: int | None
    progress: bool


def run_keys(plan: StudyPlan, data_key: str) -> dict[str, str]:
    """Each run's key: a hash of its settings, the data's fingerprint and its parent's
    key (a re-trained parent gives new children)."""
    keys: dict[str, str] = {}
    for spec in plan.runs:  # parents come first
        blob = {"settings": spec.settings(plan.scale), "data": data_key,
                "parent": keys.get(spec.parent) if spec.parent else None}
        text = json.dumps(blob, sort_keys=True)
        keys[spec.name] = hashlib.sha256(text.encode()).hexdigest()[:12]
    return keys


def slug(name: str) -> str:
    """A folder-safe form of a run name: "D S=[37;73]" -> "D_S37-73"."""
    s = name.replace("=", "").replace(";", "-").replace("(", "").replace(")", "")
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", s).strip("_")


def run_dir(ctx: RunContext, spec: RunSpec, key: str) -> Path:
    return ctx.out / "runs" / f"{slug(spec.name)}-{key}"


def read_done(folder: Path) -> dict[str, Any] | None:
    """The run's ``done.json``, or None when it has not finished (or the file is
    unreadable, which makes the run resume and rewrite it)."""
    try:
        return json.loads((folder / DONE).read_text())
    except (OSError, ValueError):
        return None


def checkpoint_of(folder: Path) -> Path | None:
    """The net a finished run is evaluated with: its best checkpoint by validation error
    (the last one if there is no best)."""
    for name in ("best.pt", "last.pt"):
        p = folder / "train" / name
        if p.is_file():
            return p
    return None


def train_config(ctx: RunContext, plan: StudyPlan, spec: RunSpec, folder: Path,
                 parent_ckpt: Path | None) -> Any:
    """The :class:`vgg.train.TrainConfig` of one run: the paper's recipe at the study's
    scale, validated densely each epoch at the run's single test scale."""
    from ..train import TrainConfig

    sc = plan.scale
    src: dict[str, Any] = {}
    if spec.mode == "finetune":
        src["finetune_from"] = str(parent_ckpt)
    elif spec.mode == "init_from":
        src["init_from"] = str(parent_ckpt)
    return TrainConfig(
        data=str(ctx.data), out=str(folder / "train"), arch=spec.arch,
        batch_norm=spec.batch_norm, width=sc.width, fc_width=sc.fc_width, crop=sc.crop,
        scale=spec.scale, epochs=spec.epochs, batch=sc.batch, lr=spec.lr, init=spec.init,
        patience=sc.patience, schedule="plateau", seed=spec.seed,
        device=ctx.device.type if ctx.device.index is None else str(ctx.device),
        amp=sc.amp, workers=ctx.workers,
        progress=ctx.progress, tensorboard=False, plot=True, overwrite=True, **src)


def ensure_run(ctx: RunContext, plan: StudyPlan, spec: RunSpec, key: str,
               parent_ckpt: Path | None) -> dict[str, Any]:
    """Train ``spec`` unless its folder says it is done; resume it when it was cut off.
    Returns its ``done.json`` record. A run whose loss or weights diverge is a result of
    the study (the initialisation finding), recorded as ``diverged``."""
    from ..train import TrainingDiverged, resume, train

    folder = run_dir(ctx, spec, key)
    done = read_done(folder)
    if done is not None:
        log.info("reusing %s (%s)", spec.name, folder)
        return done
    folder.mkdir(parents=True, exist_ok=True)
    last = folder / "train" / "last.pt"
    diverged = None
    try:
        if last.is_file():
            log.info("resuming %s from %s", spec.name, last)
            result = resume(folder / "train", progress=ctx.progress, workers=ctx.workers,
                            epochs=spec.epochs, device=train_config(ctx, plan, spec, folder, parent_ckpt).device)
        else:
            log.info("training %s (%s, %d epochs, lr %g, init %s%s) in %s", spec.name,
                     spec.arch + ("-BN" if spec.batch_norm else ""), spec.epochs, spec.lr,
                     spec.init, f", {spec.mode} {spec.parent}" if spec.parent else "", folder)
            result = train(train_config(ctx, plan, spec, folder, parent_ckpt))
        if result.interrupted:
            raise StudyInterrupted(f"stopped during {spec.name} ({folder}); run the same "
                                   f"command again to resume it where it stopped")
        history, stopped = result.history, result.stopped
    except TrainingDiverged as e:
        log.warning("%s diverged: %s", spec.name, e)
        diverged = str(e)
        history, stopped = _history(folder), "diverged"
    record = {"name": spec.name, "key": key, "settings": spec.settings(plan.scale),
              "parent": spec.parent, "stopped": stopped, "diverged": diverged,
              "history": history}
    text = json.dumps(record, indent=1, default=str)
    atomic_write(folder / DONE, lambda f: f.write(text.encode()))
    return record


def _history(folder: Path) -> list[dict[str, Any]]:
    try:
        lines = (folder / "train" / "metrics.jsonl").read_text().splitlines()
        return [json.loads(x) for x in lines if x.strip()]
    except (OSError, ValueError):
        return []


def ensure_eval(ctx: RunContext, folder: Path, spec: EvalSpec) -> Path | None:
    """The saved posteriors of one evaluation of the run in ``folder``; computed (and
    written atomically) when absent. None when the run has no checkpoint to evaluate (it
    diverged before its first epoch ended)."""
    from ..data.folders import index_split
    from ..eval import evaluate

    path = folder / spec.file
    if path.is_file():
        return path
    ckpt = checkpoint_of(folder)
    if ckpt is None:
        return None
    index = index_split(ctx.data, "val")
    res = evaluate(ckpt, index, method=spec.method, scales=list(spec.scales), batch_size=32,
                   device=ctx.device, workers=ctx.workers, progress=ctx.progress,
                   precision="auto" if ctx.device.type == "cuda" else "fp32")
    if spec.method == "both":  # the pieces first, so the report can split the methods
        for m in ("dense", "multicrop"):
            res.select(m).save_posteriors(folder / spec.file.replace("-both-", f"-{m}-"))
    res.save_posteriors(path)  # last: its presence means the evaluation is complete
    return path
