"""The training loop of Sect. 3.1: SGD with momentum on cross-entropy, the global batch
reached by gradient accumulation and/or DistributedDataParallel, validation each epoch
driving the plateau schedule, and checkpoints that let a killed run continue to the
same weights.

Exactness of resume: the augmentation of an image depends only on (seed, epoch, index)
(``vgg.data.loaders``), the sampler's order only on (seed, epoch), and torch's RNG (dropout)
is re-seeded from (seed, rank, epoch, step) before every optimizer step. A run restarted
from any checkpoint therefore replays exactly the steps it had not saved.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import load_checkpoint, load_model
from ..errors import CheckpointError, ConfigError, VggError
from ..model import VGG, build, init_from
from ..preprocess import Preprocess
from . import distributed as D
from .checkpoint import (BEST, LAST, Position, check_writable, estimate_checkpoint_bytes,
                         load_run_state, save_best, save_run_state, set_rng_state)
from .config import FIELDS, TrainConfig, load_yaml, resolve, save_yaml
from .schedule import PlateauSchedule

log = logging.getLogger(__name__)

# Settings a resumed run may change: they do not alter the arithmetic of training.
RESUME_OVERRIDABLE = ("data", "epochs", "device", "workers", "save_every_minutes",
                      "save_every_steps", "progress", "compile", "tensorboard", "plot")


class TrainingDiverged(VggError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run_dir: Path
    best_path: Path | None
    last_path: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best_top1_err: float | None = None
    stopped: str = "epochs"  # "epochs" | "schedule" | "interrupted"

    @property
    def interrupted(self) -> bool:
        return self.stopped == "interrupted"


def _loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum (not mean) of the per-image cross-entropy: the caller divides by the global
    batch, so accumulation and data parallelism give the same gradient."""
    return F.cross_entropy(logits.float(), labels, reduction="sum")


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is available")
        return torch.device("cuda", local_rank)
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps: MPS is not available on this machine")
    return torch.device(name)


def step_seed(seed: int, rank: int, epoch: int, step: int) -> int:
    """The torch seed for one optimizer step (dropout masks): a function of where the run
    is, so a resumed run draws the same masks as an uninterrupted one."""
    return (seed * 1_000_003 + rank * 7_919 + epoch * 100_003 + step) % (2**63 - 1)


def param_groups(model: nn.Module, weight_decay: float,
                 decay_biases: bool) -> list[dict[str, Any]]:
    """Weight decay on conv/FC weights; biases and BN affine parameters are decayed only
    with ``decay_biases`` (Caffe's global decay hits everything; MatConvNet's and most
    Caffe VGG ports set decay 0 on biases)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if decay_biases or p.dim() > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def resolve_resume(cfg: TrainConfig) -> TrainConfig:
    """The configuration of the run in ``cfg.resume``, with the few settings that may
    change on resume taken from ``cfg`` where they differ from the defaults."""
    run = Path(cfg.resume)  # type: ignore[arg-type]
    saved_path = run / "config.yaml"
    if not saved_path.is_file():
        raise CheckpointError(f"--resume: {run} has no config.yaml (not a vgg train run)")
    saved = load_yaml(saved_path)
    saved_cfg = resolve(saved)
    defaults = TrainConfig(data="-")
    for name in RESUME_OVERRIDABLE:
        value = getattr(cfg, name)
        if value != getattr(defaults, name) and not (name == "data" and value is None):
            saved[name] = value
    changed = [n for n in FIELDS - set(RESUME_OVERRIDABLE) - {"resume", "out"}
               if getattr(cfg, n) != getattr(defaults, n)
               and getattr(cfg, n) != getattr(saved_cfg, n)]
    if changed:
        raise ConfigError(
            f"--resume {run} continues the run with its own settings ({saved_path}); "
            f"cannot change {', '.join(sorted(changed))}. Only "
            f"{', '.join(RESUME_OVERRIDABLE)} may change; start a new run (e.g. "
            f"--finetune-from {run / LAST}) to change the others")
    saved["resume"] = str(run)
    saved["out"] = str(run)
    return resolve(saved)


class _StopFlag:
    """SIGINT/SIGTERM: remember the signal; the loop finishes its step, saves and exits."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("received %s: finishing the current step, saving, then stopping "
                    "(send again to stop at once)", signal.Signals(signum).name)

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


class _Writers:
    """metrics.jsonl always; TensorBoard when importable (rank 0 only)."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.metrics = run_dir / "metrics.jsonl"
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(run_dir / "tb"))
            except Exception as e:  # tensorboard missing or broken: only a note
                log.info("TensorBoard logging off (%s)", e)

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.tb is not None:
            self.tb.add_scalar(tag, value, step)

    def record(self, rec: dict[str, Any], history: list[dict[str, Any]]) -> None:
        """Rewrite metrics.jsonl from the whole history (atomically, after last.pt), so
        the file always matches the checkpoint a resumed run continues from."""
        if not self.enabled:
            return
        from ..checkpoint import atomic_write

        text = "".join(json.dumps(h) + "\n" for h in history)
        atomic_write(self.metrics, lambda f: f.write(text.encode()))
        for k, v in rec.items():
            if isinstance(v, (int, float)) and k not in ("epoch",):
                self.scalar(f"epoch/{k}", float(v), rec["epoch"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _micro_batches(batch: dict[str, Any], size: int) -> Iterator[dict[str, Any]]:
    n = len(batch["labels"])
    for i in range(0, max(n, 1), size):
        yield {k: batch[k][i:i + size] for k in ("images", "labels", "alphas") if k in batch}


class Trainer:
    """One run. Use :func:`train`; the class exists to keep the pieces readable."""

    def __init__(self, cfg: TrainConfig, progress: bool,
                 callback: Callable[[dict[str, Any]], None] | None) -> None:
        from ..data.folders import index_split

        if cfg.resume is not None:
            cfg = resolve_resume(cfg)
        self.cfg = cfg
        self.progress = progress and cfg.progress
        self.callback = callback
        self.run_dir = Path(cfg.out)
        device_type = pick_device(cfg.device).type
        self.dist = D.init_distributed(device_type)
        self.device = pick_device(cfg.device, self.dist.local_rank)
        self.main = self.dist.is_main
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
        if self.amp_dtype is not None and self.device.type != "cuda":
            raise ConfigError(f"--amp {cfg.amp} needs a CUDA device (got {self.device})")
        if cfg.batch % self.dist.world_size:
            raise ConfigError(f"--batch {cfg.batch} is not divisible by the "
                              f"{self.dist.world_size} processes")
        self.rank_batch = cfg.batch // self.dist.world_size
        self.micro = min(cfg.micro_batch or self.rank_batch, self.rank_batch)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(cfg.seed)

        # data
        self.train_index = index_split(cfg.data, "train")  # type: ignore[arg-type]
        self.val_index = index_split(cfg.data, "val", classes=list(self.train_index.classes))
        self.classes = list(self.train_index.classes)

        # checkpoint to resume / fine-tune from, colour statistics, model
        self.resume_ckpt, self.resume_state = (load_run_state(cfg.resume)
                                               if cfg.resume else (None, None))
        self.model = self._build_model()
        if self.main:  # before the (possibly long) statistics pass
            check_writable(self.run_dir, estimate_checkpoint_bytes(self.model))
        self.stats = self._colour_stats()
        self.model.preprocess = Preprocess.paper(self.stats.mean_rgb)
        self.model.to(self.device)
        if self.device.type == "cuda" and cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)

        self.optimizer = torch.optim.SGD(param_groups(self.model, cfg.weight_decay,
                                                      cfg.decay_biases),
                                         lr=cfg.lr, momentum=cfg.momentum)
        self.schedule = PlateauSchedule(lr=cfg.lr, factor=cfg.lr_factor, patience=cfg.patience,
                                        threshold=cfg.plateau_threshold,
                                        max_decreases=cfg.lr_decreases)
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16")
        self.position = Position()
        self.history: list[dict[str, Any]] = []
        self.best_err: float | None = None
        self.epoch_acc: dict[str, float] = {}
        if self.resume_state is not None:
            self._restore(self.resume_state)

        if self.main:
            save_yaml(cfg, self.run_dir / "config.yaml")
        D.barrier(self.dist)

        from ..data.transforms import DeviceAugment

        use_cl = self.device.type == "cuda" and cfg.channels_last
        self.augment = DeviceAugment(self.model.preprocess,
                                     self.stats if cfg.colour_std > 0 else None,
                                     channels_last=use_cl)
        self.net: nn.Module = self.model
        if self.dist.enabled:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                else None)
        if cfg.compile:
            self.net = torch.compile(self.net)  # type: ignore[assignment]

    # -- set-up -----------------------------------------------------------------------

    def _colour_stats(self) -> Any:
        from ..data.stats import compute_stats
        from ..data.transforms import ColourStats

        cfg = self.cfg
        if cfg.stats is not None:
            return ColourStats.load(cfg.stats)
        for ck in (self.resume_ckpt,
                   load_checkpoint(cfg.finetune_from) if cfg.finetune_from else None):
            if ck is not None and ck.meta.get("stats"):
                return ColourStats.from_dict(ck.meta["stats"])
        log.info("computing colour statistics over %d training images (--stats-limit)",
                 min(cfg.stats_limit, len(self.train_index)))
        return compute_stats(self.train_index, limit=cfg.stats_limit, seed=cfg.seed,
                             progress=self.progress and self.main)

    def _build_model(self) -> VGG:
        cfg = self.cfg
        if self.resume_ckpt is not None:
            model = self.resume_ckpt.build_model()
            if model.classes != self.classes:
                raise CheckpointError(f"the classes of {cfg.data} differ from those of the "
                                      f"run being resumed ({cfg.resume})")
            return model
        gen = torch.Generator().manual_seed(cfg.seed)
        model = build(cfg.arch, batch_norm=cfg.batch_norm, num_classes=len(self.classes),
                      width=cfg.width, fc_width=cfg.fc_width, crop=cfg.crop,
                      dropout=cfg.dropout, init=cfg.init, init_std=cfg.init_std,
                      classes=self.classes, generator=gen)
        if cfg.init_from:
            copied = init_from(model, load_model(cfg.init_from))
            log.info("initialised %s from %s", ", ".join(copied), cfg.init_from)
        if cfg.finetune_from:
            self._load_finetune(model, cfg.finetune_from)
        return model

    def _load_finetune(self, model: VGG, path: str) -> None:
        """All weights from ``path``; only FC8 may differ (another class count), and is then
        left at its fresh initialisation."""
        ck = load_checkpoint(path)
        own = model.state_dict()
        skipped = []
        state = {}
        for k, v in ck.state_dict.items():
            if k not in own:
                raise CheckpointError(f"{path}: layer {k} does not exist in {model.config.name}")
            if own[k].shape != v.shape:
                if k.startswith("classifier.6."):
                    skipped.append(k)
                    continue
                raise CheckpointError(f"{path}: {k} has shape {tuple(v.shape)}, the net being "
                                      f"trained needs {tuple(own[k].shape)} (same --arch, "
                                      f"--width, --fc-width and --crop are required)")
            state[k] = v
        missing = set(own) - set(state) - set(skipped)
        if missing:
            raise CheckpointError(f"{path} lacks {sorted(missing)[:4]} of {model.config.name}")
        model.load_state_dict(state, strict=False)
        log.info("fine-tuning from %s%s", path,
                 f" (new FC8 for {len(self.classes)} classes)" if skipped else "")

    def _restore(self, ts: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(ts["optimizer"])
        self.schedule.load_state_dict(ts["schedule"])
        self.position = Position(ts["epoch"], ts["step"], ts["global_step"])
        self.history = list(ts.get("history") or [])
        self.epoch_acc = dict(ts.get("epoch_acc") or {})
        errs = [h["val_top1_err"] for h in self.history if h.get("val_top1_err") is not None]
        self.best_err = min(errs) if errs else None
        if ts.get("scaler"):
            self.scaler.load_state_dict(ts["scaler"])
        set_rng_state(ts["rng"])
        log.info("resuming %s at epoch %d, step %d", self.run_dir, self.position.epoch + 1,
                 self.position.step)

    # -- checkpoints ------------------------------------------------------------------

    def _meta(self, val_err: float | None) -> dict[str, Any]:
        return {"train_scale": list(self.cfg.scale), "stats": self.stats.to_dict(),
                "epoch": self.position.epoch, "global_step": self.position.global_step,
                "val_top1_err": val_err, "dataset": str(self.cfg.data),
                "test_scale": self.cfg.test_scale, "run": str(self.run_dir)}

    def save_last(self) -> None:
        if not self.main:
            return
        last_err = self.history[-1]["val_top1_err"] if self.history else None
        sched = self.schedule.state_dict()
        save_run_state(self.run_dir, self.model, meta=self._meta(last_err),
                       optimizer=self.optimizer, schedule=sched, position=self.position,
                       history=self.history, scaler=self.scaler,
                       extra={"epoch_acc": dict(self.epoch_acc)})

    # -- the loop ---------------------------------------------------------------------

    def _set_lr(self) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = self.schedule.lr

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _train_step(self, batch: dict[str, Any]) -> tuple[float, float, float]:
        """One SGD update on this rank's share of the global batch. Returns the global
        (loss sum, correct top-1, images) of the batch."""
        n_local = len(batch["labels"])
        count = torch.tensor([float(n_local)], dtype=torch.float64)
        if self.dist.enabled:
            c = count.to(self.device)
            D.all_reduce_sum(c, self.dist)
            count = c.cpu()
        n_global = float(count.item())
        if n_global == 0:
            return 0.0, 0.0, 0.0
        # DDP averages gradients over ranks, so scale by world_size / global images:
        # the result is the mean over the global batch, however it is split.
        scale = self.dist.world_size / n_global
        crop = self.cfg.crop
        if n_local == 0:  # every image of this rank's share was unreadable
            batch = {"images": torch.zeros(0, 3, crop, crop, dtype=torch.uint8),
                     "labels": torch.zeros(0, dtype=torch.int64)}
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        micros = list(_micro_batches(batch, self.micro))
        for i, mb in enumerate(micros):
            images = mb["images"].to(self.device, non_blocking=True)
            labels = mb["labels"].to(self.device, non_blocking=True)
            alphas = mb.get("alphas")
            if alphas is not None:  # drawn with std colour_std by TrainTransform
                alphas = alphas.to(self.device, non_blocking=True)
            x = self.augment(images, alphas)
            sync = (contextlib.nullcontext() if i == len(micros) - 1 or not self.dist.enabled
                    else self.net.no_sync())  # type: ignore[operator]
            with sync:
                with self._autocast():
                    logits = self.net(x)
                loss = _loss_fn(logits, labels)
                self.scaler.scale(loss * scale).backward()
            loss_sum += loss.detach()
            correct += (logits.detach().argmax(1) == labels).sum()
        stats = torch.stack([loss_sum, correct.float()])
        D.all_reduce_sum(stats, self.dist)
        loss_total, correct_total = (float(v) for v in stats.cpu())
        if not math.isfinite(loss_total):
            raise TrainingDiverged(
                f"the loss became {loss_total} at epoch {self.position.epoch + 1}, step "
                f"{self.position.step + 1} (global step {self.position.global_step + 1}); "
                f"stopped without saving it: {self.run_dir / LAST} keeps the last good state. "
                f"Try a lower --lr (now {self.schedule.lr:g}) or --init glorot")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_total, correct_total, n_global

    def _epoch_loader(self, epoch: int, start: int) -> Any:
        from ..data.loaders import ImageDataset, make_loader
        from ..data.transforms import TrainTransform

        if not hasattr(self, "_train_loader"):
            cfg = self.cfg
            scale = cfg.scale[0] if cfg.s_min == cfg.s_max else tuple(cfg.scale)
            ds = ImageDataset(self.train_index, TrainTransform(
                cfg.crop, scale, flip=cfg.flip, colour_std=cfg.colour_std), seed=cfg.seed)
            self._train_loader = make_loader(ds, self.rank_batch, shuffle=True, seed=cfg.seed,
                                             epoch=epoch, workers=cfg.workers, start=start,
                                             distributed=self.dist.enabled)
        self._train_loader.sampler.set_epoch(epoch, start)
        return self._train_loader

    def close(self) -> None:
        """Stop the persistent loader processes now rather than whenever the trainer is
        garbage-collected (at interpreter exit that can be a KeyboardInterrupt traceback)."""
        loader = self.__dict__.pop("_train_loader", None)
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()

    def validate(self) -> dict[str, float]:
        """Single-scale validation at Q = ``test_scale``: the centre crop through the FC net,
        or the whole image through the fully-convolutional net (``dense``, Sect. 3.2,
        class scores averaged over the map). Each rank takes every world_size-th image."""
        from ..data.loaders import ImageDataset, make_loader
        from ..data.transforms import CenterCropTransform, DeviceAugment, RescaleTransform

        cfg = self.cfg
        idx = list(range(self.dist.rank, len(self.val_index), self.dist.world_size))
        if not idx:
            idx = [0]
        shard = self.val_index.subset(idx)
        dense = cfg.val_method == "dense"
        transform = (RescaleTransform(cfg.test_scale) if dense
                     else CenterCropTransform(cfg.test_scale, cfg.crop))
        ds = ImageDataset(shard, transform, seed=cfg.seed, check=False)
        loader = make_loader(ds, 1 if dense else (cfg.val_batch or self.micro), shuffle=False,
                             seed=cfg.seed, workers=cfg.workers, distributed=False,
                             persistent_workers=False)
        norm = DeviceAugment(self.model.preprocess, None,
                             channels_last=self.device.type == "cuda" and cfg.channels_last)
        net: nn.Module = self.model.to_fully_conv() if dense else self.model
        was_training = self.model.training
        self.model.eval()
        sums = torch.zeros(5, dtype=torch.float64, device=self.device)  # loss, c1, c5, n, bad
        with torch.no_grad():
            for batch in loader:
                sums[4] += batch["n_bad"]
                if len(batch["labels"]) == 0:
                    continue
                x = norm(batch["images"].to(self.device, non_blocking=True))
                y = batch["labels"].to(self.device)
                with self._autocast():
                    out = net(x)
                if dense:  # (N, K, h, w) -> average soft-max over the map
                    prob = out.float().softmax(1).mean((2, 3))
                    logp = prob.clamp_min(1e-12).log()
                    loss = F.nll_loss(logp, y, reduction="sum")
                    scores = prob
                else:
                    loss = F.cross_entropy(out.float(), y, reduction="sum")
                    scores = out.float()
                top5 = scores.topk(min(5, scores.shape[1]), 1).indices
                sums[0] += loss.double()
                sums[1] += (top5[:, 0] == y).sum()
                sums[2] += (top5 == y[:, None]).any(1).sum()
                sums[3] += len(y)
        self.model.train(was_training)
        D.all_reduce_sum(sums, self.dist)
        loss, c1, c5, n, bad = sums.tolist()
        if n == 0:
            raise VggError(f"no readable validation image in {cfg.data}")
        return {"val_loss": loss / n, "val_top1_err": 1 - c1 / n, "val_top5_err": 1 - c5 / n,
                "val_images": int(n), "val_bad": int(bad)}

    def run(self) -> TrainResult:
        from tqdm import tqdm

        cfg = self.cfg
        writers = _Writers(self.run_dir, self.main, cfg.tensorboard)
        stopped = "epochs"
        last_save = time.monotonic()
        try:
            with _StopFlag() as stop:
                while self.position.epoch < cfg.epochs and not self.schedule.done:
                    epoch = self.position.epoch
                    self._set_lr()
                    loader = self._epoch_loader(epoch, self.position.step * self.rank_batch)
                    steps = self.position.step + len(loader)
                    acc = self.epoch_acc or {"loss": 0.0, "correct": 0.0, "n": 0.0, "bad": 0.0,
                                             "time": 0.0}
                    self.model.train()
                    bar = tqdm(total=steps, initial=self.position.step,
                               disable=not (self.progress and self.main),
                               desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                               dynamic_ncols=True, leave=False)
                    t_epoch = time.perf_counter()
                    t_last = time.perf_counter()
                    interrupted = False
                    for batch in loader:
                        torch.manual_seed(step_seed(cfg.seed, self.dist.rank, epoch,
                                                    self.position.step))
                        bad = torch.tensor([float(batch["n_bad"])])
                        loss, correct, n = self._train_step(batch)
                        self.position.step += 1
                        self.position.global_step += 1
                        acc["loss"] += loss
                        acc["correct"] += correct
                        acc["n"] += n
                        acc["bad"] += float(bad.item())
                        self.epoch_acc = acc
                        now = time.perf_counter()
                        if n:
                            bar.set_postfix(loss=f"{loss / n:.3f}",
                                            top1_err=f"{1 - correct / n:.3f}",
                                            img_s=f"{n / max(now - t_last, 1e-9):.0f}",
                                            lr=f"{self.schedule.lr:.0e}")
                        t_last = now
                        bar.update(1)
                        if self.main and self.position.global_step % 10 == 0:
                            writers.scalar("train/loss", loss / max(n, 1),
                                           self.position.global_step)
                        due = ((cfg.save_every_steps
                                and self.position.global_step % cfg.save_every_steps == 0)
                               or time.monotonic() - last_save > cfg.save_every_minutes * 60)
                        interrupted = D.any_flag(stop.signum is not None, self.dist,
                                                 self.device)
                        if (due or interrupted) and self.position.step < steps:
                            acc["time"] += time.perf_counter() - t_epoch
                            t_epoch = time.perf_counter()
                            self.save_last()
                            last_save = time.monotonic()
                        if interrupted:
                            break
                    bar.close()
                    if interrupted and self.position.step < steps:
                        stopped = "interrupted"
                        log.warning("stopped at epoch %d, step %d; continue with "
                                    "`vgg train --resume %s`", epoch + 1, self.position.step,
                                    self.run_dir)
                        break
                    acc["time"] += time.perf_counter() - t_epoch
                    rec = self._end_epoch(acc, writers)
                    last_save = time.monotonic()
                    if self.callback is not None:
                        self.callback(rec)
                    if interrupted:
                        stopped = "interrupted"
                        break
                if self.schedule.done:
                    stopped = "schedule"
        finally:
            writers.close()
        if self.main and cfg.plot and self.history and stopped != "interrupted":
            try:
                from .plots import plot_curves
                plot_curves(self.history, self.run_dir / "curves.png")
            except Exception as e:  # a plot must never lose a finished run
                log.warning("could not write the training curves: %s", e)
        best = self.run_dir / BEST
        return TrainResult(run_dir=self.run_dir, best_path=best if best.is_file() else None,
                           last_path=self.run_dir / LAST, history=list(self.history),
                           best_top1_err=self.best_err, stopped=stopped)

    def _end_epoch(self, acc: dict[str, float], writers: _Writers) -> dict[str, Any]:
        epoch = self.position.epoch
        lr = self.schedule.lr
        val = self.validate()
        action = self.schedule.step(val["val_top1_err"])
        n = max(acc["n"], 1.0)
        rec: dict[str, Any] = {
            "epoch": epoch + 1, "lr": lr, "train_loss": acc["loss"] / n,
            "train_top1_err": 1 - acc["correct"] / n, "train_images": int(acc["n"]),
            "train_bad": int(acc["bad"]), **val, "schedule": action,
            "time_s": round(acc["time"], 3), "img_per_s": acc["n"] / max(acc["time"], 1e-9),
            "global_step": self.position.global_step}
        self.history.append(rec)
        improved = self.best_err is None or val["val_top1_err"] < self.best_err
        if improved:
            self.best_err = val["val_top1_err"]
        self.position = Position(epoch + 1, 0, self.position.global_step)
        self.epoch_acc = {}
        if self.main:
            if improved:
                save_best(self.run_dir, self.model, self._meta(val["val_top1_err"]))
            self.save_last()
            writers.record(rec, self.history)
            log.info("epoch %d/%d  lr %.0e  train loss %.4f top-1 err %.4f  val loss %.4f "
                     "top-1 err %.4f top-5 err %.4f  %.0f img/s  %d bad images skipped%s",
                     epoch + 1, self.cfg.epochs, lr, rec["train_loss"], rec["train_top1_err"],
                     val["val_loss"], val["val_top1_err"], val["val_top5_err"],
                     rec["img_per_s"], rec["train_bad"] + val["val_bad"],
                     {"decrease": f"; lr -> {self.schedule.lr:.0e}",
                      "stop": "; plateau after the last decrease: stopping"}.get(action, ""))
        D.barrier(self.dist)
        return rec


def train(cfg: TrainConfig, progress: bool = True,
          callback: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train one net with the recipe of Sect. 3.1 (see :class:`TrainConfig`).

    ``callback(record)`` is called after every epoch with that epoch's metrics (the dict
    also written to ``RUN/metrics.jsonl``). Under ``torchrun`` each process calls this;
    only rank 0 writes. Returns the run folder, checkpoint paths and the history.
    """
    trainer: Trainer | None = None
    try:
        trainer = Trainer(cfg, progress, callback)
        return trainer.run()
    finally:
        if trainer is not None:
            trainer.close()
        D.cleanup()


__all__ = ["FIELDS", "TrainConfig", "TrainResult", "TrainingDiverged", "train"]
