"""The training loop of Sect. 3.1: SGD with momentum, the global batch reached by gradient
accumulation and/or DistributedDataParallel, validation each epoch (by the evaluator of
Sect. 3.2) driving the learning-rate schedule, and checkpoints that let a killed run
continue to the same weights. What is learnt (classification, or box regression for
localisation) is a :class:`vgg.train.task.Task`; the loop is the same.

Exactness of resume: the augmentation of an image depends only on (seed, epoch, index)
(``vgg.data.loaders``), the sampler's order only on (seed, epoch), the learning rate only
on (global step, schedule state), and torch's RNG (dropout) is re-seeded from (seed,
rank, epoch, step) before every optimizer step. A run restarted from any checkpoint
therefore replays exactly the steps it had not saved.
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
from torch import nn

from ..checkpoint import Checkpoint, nonfinite_keys, remove_orphan_temporaries
from ..data.sources import check_same_images, fingerprint
from ..devices import pick_device
from ..errors import CheckpointError, ConfigError, VggError
from ..model import VGG, build, init_from
from ..preprocess import Preprocess
from ..progress import Progress
from ..weights import open_weights as load_checkpoint
from . import distributed as D
from .checkpoint import (BEST, LAST, Position, RunLock, check_writable,
                         estimate_checkpoint_bytes, load_run_state, save_best, save_run_state,
                         set_rng_state)
from .config import FIELDS, RESUME_OVERRIDABLE, TrainConfig, load_yaml, resolve, save_yaml
from .schedule import LrSchedule
from .task import Task, error_sums, task_for

log = logging.getLogger(__name__)


class TrainingDiverged(VggError):
    """The loss or the weights became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run_dir: Path
    best_path: Path | None
    last_path: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best_top1_err: float | None = None  # the best value of the task's validation error
    stopped: str = "epochs"  # "epochs" | "schedule" | "interrupted"

    @property
    def interrupted(self) -> bool:
        return self.stopped == "interrupted"

    @property
    def best_err(self) -> float | None:
        return self.best_top1_err


def step_seed(seed: int, rank: int, epoch: int, step: int) -> int:
    """The torch seed for one optimizer step (dropout masks): a function of where the run
    is, so a resumed run draws the same masks as an uninterrupted one."""
    return (seed * 1_000_003 + rank * 7_919 + epoch * 100_003 + step) % (2**63 - 1)


def param_groups(model: nn.Module, weight_decay: float,
                 decay_biases: bool) -> list[dict[str, Any]]:
    """Weight decay on conv/FC weights; biases and BN affine parameters are decayed only
    with ``decay_biases`` (Caffe's global decay hits everything; MatConvNet's and most
    Caffe VGG ports set decay 0 on biases). Frozen parameters are left out."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if decay_biases or p.dim() > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def check_resume(cfg: TrainConfig) -> None:
    """A config that resumes ``cfg.resume`` must carry that run's recipe: build it with
    :func:`vgg.train.config.resume_config` (what ``vgg train --resume`` and
    :func:`vgg.train.resume` do); any other difference is refused, naming it."""
    run = Path(cfg.resume)  # type: ignore[arg-type]
    saved_path = run / "config.yaml"
    if not saved_path.is_file():
        raise CheckpointError(f"--resume: {run} has no config.yaml (not a vgg train run)")
    saved = resolve(load_yaml(saved_path))
    skip = set(RESUME_OVERRIDABLE) | {"resume", "out", "overwrite"}
    changed = sorted(n for n in FIELDS - skip if getattr(cfg, n) != getattr(saved, n))
    if changed:
        raise ConfigError(f"resuming {run} with settings that differ from its config.yaml: "
                          f"{', '.join(changed)}; use vgg.train.resume({str(run)!r}, ...) "
                          f"(only {', '.join(RESUME_OVERRIDABLE)} may change)")


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
    """Slices of every per-image tensor of ``batch`` (images, labels, alphas, boxes...)."""
    n = len(batch["labels"])
    keys = [k for k, v in batch.items() if isinstance(v, torch.Tensor) and v.dim() >= 1
            and v.shape[0] == n]
    for i in range(0, max(n, 1), size):
        yield {k: batch[k][i:i + size] for k in keys}



class Trainer:
    """One run. Use :func:`train`; the class exists to keep the pieces readable."""

    def __init__(self, cfg: TrainConfig, progress: bool,
                 callback: Callable[[dict[str, Any]], None] | None) -> None:
        if cfg.resume is not None:
            check_resume(cfg)
        self.cfg = cfg
        self.task: Task = task_for(cfg)
        self.progress = progress and cfg.progress
        self.callback = callback
        self.run_dir = Path(cfg.out)
        device_type = pick_device(cfg.device).type
        self.dist = D.init_distributed(device_type)
        self.device = pick_device(cfg.device, self.dist.local_rank)
        self.main = self.dist.is_main
        if cfg.amp != "none" and self.device.type != "cuda":
            raise ConfigError(f"--amp {cfg.amp} needs a CUDA device (got {self.device})")
        self.lock: RunLock | None = None
        self._made_dir = False
        from ..data.loaders import BadImages

        self.bad_images = BadImages()  # each unreadable file named once per run
        try:
            if self.main:
                self._claim_run_folder()
            self._setup()
        except BaseException:
            self.close()
            raise

    # -- set-up -----------------------------------------------------------------------

    def _claim_run_folder(self) -> None:
        """One run per folder (a lock naming its holder); a new run never silently
        replaces the results of an earlier one; a resumed run first clears the temporary
        files that a kill during a checkpoint write left behind."""
        cfg = self.cfg
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ConfigError(f"output folder {self.run_dir} is not writable: it is a file")
        self._made_dir = not self.run_dir.exists()
        try:
            self.lock = RunLock(self.run_dir).acquire()
        except OSError as e:
            raise ConfigError(f"output folder {self.run_dir} is not writable: "
                              f"{e.strerror or e}") from None
        if cfg.resume is None:
            done = [n for n in (LAST, BEST, "metrics.jsonl") if (self.run_dir / n).exists()]
            if done and not cfg.overwrite:
                raise ConfigError(f"{self.run_dir} already holds a run ({', '.join(done)}); "
                                  f"continue it with --resume {self.run_dir}, choose another "
                                  f"--out, or pass --overwrite to replace it")
            if done:
                log.warning("--overwrite: starting a new run in %s; its earlier %s will be "
                            "replaced", self.run_dir, ", ".join(done))
        else:
            for p in remove_orphan_temporaries(self.run_dir):
                log.info("removed %s, left by a run killed while writing a checkpoint", p)

    def _setup(self) -> None:
        cfg = self.cfg
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
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

        # checkpoint to resume / start from (read once), data, colour statistics, model
        self.resume_ckpt, self.resume_state = (load_run_state(cfg.resume)
                                               if cfg.resume else (None, None))
        self.source: Checkpoint | None = None
        if cfg.finetune_from or cfg.init_from:
            self.source = load_checkpoint(cfg.finetune_from or cfg.init_from)
        start = self.resume_ckpt or self.source
        self.train_index, self.val_index = self.task.indexes(
            start.classes if start is not None else None)
        self.data_fingerprint = {"train": fingerprint(self.train_index),
                                 "val": fingerprint(self.val_index)}
        if self.resume_ckpt is not None:  # the same images, however the folder is reached
            check_same_images(self.resume_ckpt.meta.get("data"), self.data_fingerprint,
                              str(cfg.resume))
        self.classes = list(self.train_index.classes)
        self.model = self._build_model()
        if self.main:  # before the (possibly long) statistics pass
            check_writable(self.run_dir, estimate_checkpoint_bytes(self.model))
        self.stats = self._colour_stats()
        if self.resume_ckpt is None:
            self.model.preprocess = self._preprocess()
        self.model.to(self.device)
        if self.device.type == "cuda" and cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)

        self.optimizer = torch.optim.SGD(param_groups(self.model, cfg.weight_decay,
                                                      cfg.decay_biases),
                                         lr=cfg.lr, momentum=cfg.momentum)
        n_rank = math.ceil(len(self.train_index) / self.dist.world_size)
        self.steps_per_epoch = max(1, math.ceil(n_rank / self.rank_batch))
        self.schedule = LrSchedule.make(
            cfg.schedule, cfg.lr, cfg.lr_factor, cfg.patience, cfg.plateau_threshold,
            cfg.lr_decreases, total_steps=cfg.epochs * self.steps_per_epoch,
            warmup_steps=round(cfg.warmup * self.steps_per_epoch))
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

    def _colour_stats(self) -> Any:
        from ..data.stats import compute_stats
        from ..data.transforms import ColourStats

        cfg = self.cfg
        if cfg.stats is not None:
            return ColourStats.load(cfg.stats)
        for ck in (self.resume_ckpt, self.source):
            if ck is not None and ck.meta.get("stats"):
                try:
                    return ColourStats.from_dict(ck.meta["stats"])
                except (KeyError, TypeError, ValueError):
                    log.warning("%s carries unreadable colour statistics; recomputing",
                                ck.path)
        log.info("computing colour statistics over %d training images (--stats-limit)",
                 min(cfg.stats_limit, len(self.train_index)))
        return compute_stats(self.train_index, limit=cfg.stats_limit, seed=cfg.seed,
                             progress=self.progress and self.main,
                             bad_images=self.bad_images)

    def _preprocess(self) -> Preprocess:
        """Sect. 2.1: subtract this training set's mean RGB, unless the net starts from a
        checkpoint trained on other inputs (torchvision's mean/std, Caffe's BGR): its
        first layer then keeps seeing the inputs it was trained on."""
        paper = Preprocess.paper(self.stats.mean_rgb)
        src = self.source
        if src is None:
            return paper
        p = src.preprocess
        flag = "--finetune-from" if self.cfg.finetune_from else "--init-from"
        if p.std != (1.0, 1.0, 1.0) or p.channel_order != "RGB":
            log.info("%s %s: its first layer was trained on %s inputs (mean %s, std %s); "
                     "keeping that preprocessing instead of the paper's mean subtraction",
                     flag, src.path, p.channel_order,
                     "/".join(f"{v:.1f}" for v in p.mean), "/".join(f"{v:.1f}" for v in p.std))
            return p
        if self.cfg.finetune_from:
            log.info("%s %s: keeping its mean RGB %s", flag, src.path,
                     "/".join(f"{v:.1f}" for v in p.mean))
            return p
        return paper

    def _build_model(self) -> VGG:
        cfg = self.cfg
        want = cfg.net_config(len(self.classes))
        if self.resume_ckpt is not None:
            ck = self.resume_ckpt
            if ck.config != want:
                raise CheckpointError(f"{ck.path} holds a {ck.config.name} net "
                                      f"({ck.config.to_dict()}) but {cfg.resume}/config.yaml "
                                      f"describes {want.to_dict()}: the run folder was mixed "
                                      f"up; resume from a matching run")
            model = ck.build_model()
            if model.classes != self.classes:
                raise CheckpointError(f"the classes of {cfg.data} differ from those of the "
                                      f"run being resumed ({cfg.resume})")
            self.task.prepare(model, from_checkpoint=True)
            return model
        gen = torch.Generator().manual_seed(cfg.seed)
        model = build(cfg.arch, batch_norm=cfg.batch_norm, num_classes=len(self.classes),
                      width=cfg.width, fc_width=cfg.fc_width, crop=cfg.crop,
                      dropout=cfg.dropout, init=cfg.init, init_std=cfg.init_std,
                      classes=self.classes, generator=gen, head=cfg.head)
        if cfg.init_from:
            if self.source.meta.get("features_only"):  # type: ignore[union-attr]
                raise CheckpointError(f"--init-from {cfg.init_from}: it has no FC layers to "
                                      f"copy (Sect. 3.1 copies four convs and fc6-fc8); use "
                                      f"--finetune-from to start from its conv layers")
            copied = init_from(model, self.source.build_model())  # type: ignore[union-attr]
            log.info("initialised %s from %s", ", ".join(copied), cfg.init_from)
        if cfg.finetune_from:
            self._load_finetune(model, self.source)  # type: ignore[arg-type]
        names = self.train_index.display_names()
        if self.source is not None and self.source.classes == self.classes \
                and self.source.class_names:
            names = self.source.class_names
        model.set_class_names(names)
        self.task.prepare(model, from_checkpoint=bool(cfg.finetune_from))
        return model

    def _load_finetune(self, model: VGG, ck: Checkpoint) -> None:
        """All weights of ``ck``, except FC8 when it cannot mean the same thing here
        (another class count or class order, or a box head replacing class scores):
        FC8 then keeps its fresh initialisation. A features-only checkpoint (no FC layers,
        e.g. a Keras _notop file) gives the conv layers; FC6-FC8 start fresh."""
        path = ck.path
        own = model.state_dict()
        same_last = (ck.config.head == model.config.head and ck.classes == model.classes
                     and ck.config.out_features == model.config.out_features)
        fresh = "classifier." if ck.meta.get("features_only") else "classifier.6."
        state, skipped = {}, []
        for k, v in ck.state_dict.items():
            if k not in own:
                raise CheckpointError(f"{path}: layer {k} does not exist in {model.config.name}")
            if k.startswith(fresh) and (fresh == "classifier." or not same_last):
                skipped.append(k)
                continue
            if own[k].shape != v.shape:
                raise CheckpointError(f"{path}: {k} has shape {tuple(v.shape)}, the net being "
                                      f"trained needs {tuple(own[k].shape)} (same --arch, "
                                      f"--width, --fc-width and --crop are required)")
            state[k] = v
        missing = set(own) - set(state) - set(skipped)
        if missing:
            raise CheckpointError(f"{path} lacks {sorted(missing)[:4]} of {model.config.name}")
        model.load_state_dict(state, strict=False)
        if ck.meta.get("features_only"):
            log.info("fine-tuning from the conv layers of %s (it has no FC layers: fc6-fc8 "
                     "start random)", path)
        elif skipped:
            what = ("a box regressor" if not model.config.is_classifier
                    else f"{len(self.classes)} classes")
            log.info("fine-tuning from %s (every layer but the last, which starts random "
                     "for %s)", path, what)
        else:
            log.info("fine-tuning from %s (all layers)", path)

    def _restore(self, ts: dict[str, Any]) -> None:
        try:
            self.optimizer.load_state_dict(ts["optimizer"])
            self.schedule.load_state_dict(ts["schedule"])
            self.position = Position(ts["epoch"], ts["step"], ts["global_step"])
            self.history = list(ts.get("history") or [])
            self.epoch_acc = dict(ts.get("epoch_acc") or {})
            if ts.get("scaler"):
                self.scaler.load_state_dict(ts["scaler"])
            set_rng_state(ts["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{self.cfg.resume}/{LAST}: its training state does not fit "
                                  f"this run ({type(e).__name__}: {str(e)[:120]})") from None
        primary = self.task.primary
        errs = [h[primary] for h in self.history if h.get(primary) is not None]
        self.best_err = min(errs) if errs else None
        log.info("resuming %s at epoch %d, step %d", self.run_dir, self.position.epoch + 1,
                 self.position.step)

    # -- shared services for the task ---------------------------------------------------

    def note_bad(self, path: str, reason: str) -> None:
        """Warn about an unreadable image once per run (stats pass, epochs, validation)."""
        self.bad_images.note(path, reason)

    def sum_over_ranks(self, sums: torch.Tensor, names: list[str]) -> dict[str, float]:
        """Sum counts over the processes, then turn them into errors and means."""
        t = sums.to(self.device) if self.dist.enabled else sums
        D.all_reduce_sum(t, self.dist)
        return error_sums(names, t.cpu().tolist())

    # -- checkpoints ------------------------------------------------------------------

    def _meta(self, val_err: float | None) -> dict[str, Any]:
        meta = {"train_scale": list(self.cfg.scale), "stats": self.stats.to_dict(),
                "epoch": self.position.epoch, "global_step": self.position.global_step,
                self.task.primary: val_err,
                "dataset": str(self.cfg.data), "data": self.data_fingerprint,
                "test_scale": self.cfg.test_scale, "run": str(self.run_dir)}
        return meta | self.task.meta(self)

    def _check_weights(self) -> None:
        """Never write a checkpoint called good that holds NaN or inf weights."""
        bad = nonfinite_keys(self.model.state_dict())
        if bad:
            raise TrainingDiverged(
                f"the weights became non-finite ({', '.join(bad[:3])}) by epoch "
                f"{self.position.epoch + 1}, step {self.position.step} (global step "
                f"{self.position.global_step}); not saved: {self.run_dir / LAST} keeps the "
                f"last good state. Check --lr (now {self._lr:g}), --weight-decay and "
                f"--momentum")

    def save_last(self, checked: bool = False) -> None:
        """``RUN/last.pt``; ``checked``: the weights were just found finite."""
        if not self.main:
            return
        if not checked:
            self._check_weights()
        last_err = self.history[-1][self.task.primary] if self.history else None
        save_run_state(self.run_dir, self.model, meta=self._meta(last_err),
                       optimizer=self.optimizer, schedule=self.schedule.state_dict(),
                       position=self.position, history=self.history, scaler=self.scaler,
                       extra={"epoch_acc": dict(self.epoch_acc)})

    # -- the loop ---------------------------------------------------------------------

    @property
    def _lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def _set_lr(self) -> None:
        lr = self.schedule.lr_at(self.position.global_step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _train_step(self, batch: dict[str, Any]
                    ) -> tuple[float, float, float, float, float]:
        """One SGD update on this rank's share of the global batch. Returns the global
        (loss sum, images counted right, images counted, images, unreadable images) of
        the batch (for localisation a crop that shows no object is not counted)."""
        n_local = len(batch["labels"])
        count = torch.tensor([float(n_local), float(batch["n_bad"])], dtype=torch.float64)
        if self.dist.enabled:
            c = count.to(self.device)
            D.all_reduce_sum(c, self.dist)
            count = c.cpu()
        n_global, bad_global = (float(v) for v in count)
        if n_global == 0:
            return 0.0, 0.0, 0.0, 0.0, bad_global
        # DDP averages gradients over ranks, so scale by world_size / global images:
        # the result is the mean over the global batch, however it is split.
        scale = self.dist.world_size / n_global
        crop = self.cfg.crop
        if n_local == 0:  # every image of this rank's share was unreadable
            batch = {"images": torch.zeros(0, 3, crop, crop, dtype=torch.uint8),
                     "labels": torch.zeros(0, dtype=torch.int64)}
        stats = torch.zeros(3, device=self.device)  # loss, right, counted
        micros = list(_micro_batches(batch, self.micro))
        for i, mb in enumerate(micros):
            mb = {k: v.to(self.device, non_blocking=True) for k, v in mb.items()}
            x = self.augment(mb["images"], mb.get("alphas"))
            sync = (contextlib.nullcontext() if i == len(micros) - 1 or not self.dist.enabled
                    else self.net.no_sync())  # type: ignore[operator]
            with sync:
                with self._autocast():
                    out = self.net(x)
                loss, right, counted = self.task.loss(out, mb)
                self.scaler.scale(loss * scale).backward()
            stats += torch.stack([loss.detach().float(), right.float(), counted.float()])
        D.all_reduce_sum(stats, self.dist)
        loss_total, right_total, counted_total = (float(v) for v in stats.cpu())
        if not math.isfinite(loss_total):
            raise TrainingDiverged(
                f"the loss became {loss_total} at epoch {self.position.epoch + 1}, step "
                f"{self.position.step + 1} (global step {self.position.global_step + 1}); "
                f"stopped without saving it: {self.run_dir / LAST} keeps the last good state. "
                f"Try a lower --lr (now {self._lr:g}) or --init glorot")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_total, right_total, counted_total, n_global, bad_global

    def _epoch_loader(self, epoch: int, start: int) -> Any:
        from ..data.loaders import ImageDataset, make_loader

        if not hasattr(self, "_train_loader"):
            cfg = self.cfg
            ds = ImageDataset(self.train_index, self.task.transform(self.train_index),
                              seed=cfg.seed)
            self._train_loader = make_loader(ds, self.rank_batch, shuffle=True, seed=cfg.seed,
                                             epoch=epoch, workers=cfg.workers, start=start,
                                             distributed=self.dist.enabled)
        self._train_loader.sampler.set_epoch(epoch, start)
        return self._train_loader

    def close(self) -> None:
        """Stop the persistent loader processes now rather than whenever the trainer is
        garbage-collected (at interpreter exit that can be a KeyboardInterrupt traceback),
        and give the run folder back."""
        loader = self.__dict__.pop("_train_loader", None)
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        if self.lock is not None:
            self.lock.release()
            self.lock = None
            if self._made_dir and not any(self.run_dir.iterdir()):
                self.run_dir.rmdir()  # a run that failed before writing anything

    def validate(self) -> dict[str, float]:
        """The task's validation (classification: ``vgg.eval.evaluate`` at Q =
        ``test_scale`` with ``val_method``), split over the processes."""
        return self.task.validate(self)

    def run(self) -> TrainResult:
        cfg = self.cfg
        writers = _Writers(self.run_dir, self.main, cfg.tensorboard)
        stopped = "epochs"
        last_save = time.monotonic()
        try:
            with _StopFlag() as stop:
                while self.position.epoch < cfg.epochs and not self.schedule.done:
                    epoch = self.position.epoch
                    loader = self._epoch_loader(epoch, self.position.step * self.rank_batch)
                    steps = self.position.step + len(loader)
                    acc = self.epoch_acc or {"loss": 0.0, "correct": 0.0, "n": 0.0, "bad": 0.0,
                                             "time": 0.0, "images": 0.0}
                    acc.setdefault("images", acc["n"])
                    self.task.train_mode(self.model)
                    bar = Progress(steps, f"epoch {epoch + 1}/{cfg.epochs}", "step",
                                   enabled=self.progress and self.main,
                                   initial=self.position.step)
                    t_epoch = time.perf_counter()
                    t_last = time.perf_counter()
                    interrupted = False
                    for batch in loader:
                        torch.manual_seed(step_seed(cfg.seed, self.dist.rank, epoch,
                                                    self.position.step))
                        self._set_lr()
                        self.bad_images.report(batch)
                        t_step = time.perf_counter()
                        loss, correct, n, n_img, n_bad = self._train_step(batch)
                        self.position.step += 1
                        self.position.global_step += 1
                        acc["loss"] += loss
                        acc["correct"] += correct
                        acc["n"] += n
                        acc["images"] += n_img
                        acc["bad"] += n_bad
                        self.epoch_acc = acc
                        now = time.perf_counter()
                        if n:
                            bar.set_postfix(loss=f"{loss / n:.3f}",
                                            err=f"{1 - correct / n:.3f}",
                                            img_s=f"{n_img / max(now - t_last, 1e-9):.0f}",
                                            step_s=f"{now - t_step:.2f}",
                                            lr=f"{self._lr:.1e}")
                        t_last = now
                        bar.update(1)
                        if self.main and self.position.global_step % 10 == 0:
                            writers.scalar("train/loss", loss / max(n, 1),
                                           self.position.global_step)
                            writers.scalar("train/lr", self._lr, self.position.global_step)
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
                plot_curves(self.history, self.run_dir / "curves.png",
                            train_err=self.task.train_error, val_err=self.task.primary)
            except Exception as e:  # a plot must never lose a finished run
                log.warning("could not write the training curves: %s", e)
        best = self.run_dir / BEST
        return TrainResult(run_dir=self.run_dir, best_path=best if best.is_file() else None,
                           last_path=self.run_dir / LAST, history=list(self.history),
                           best_top1_err=self.best_err, stopped=stopped)

    def _end_epoch(self, acc: dict[str, float], writers: _Writers) -> dict[str, Any]:
        epoch = self.position.epoch
        lr = self._lr
        self._check_weights()  # every rank holds the same weights: all stop together
        val = self.validate()
        err = val[self.task.primary]
        action = self.schedule.epoch_end(err)
        n = max(acc["n"], 1.0)
        rec: dict[str, Any] = {
            "epoch": epoch + 1, "lr": lr, "train_loss": acc["loss"] / n,
            self.task.train_error: 1 - acc["correct"] / n,
            "train_images": int(acc.get("images", acc["n"])),
            "train_bad": int(acc["bad"]), **val, "schedule": action,
            "time_s": round(acc["time"], 3),
            "img_per_s": acc.get("images", acc["n"]) / max(acc["time"], 1e-9),
            "global_step": self.position.global_step}
        improved = self.best_err is None or err < self.best_err
        self.position = Position(epoch + 1, 0, self.position.global_step)
        self.epoch_acc = {}
        if self.main:
            if improved:
                save_best(self.run_dir, self.model, self._meta(err))
            self.history.append(rec)
            self.save_last(checked=True)
            writers.record(rec, self.history)
            log.info("epoch %d/%d  lr %.1e  train loss %.4f err %.4f  val %s  %.0f img/s  "
                     "%d bad images skipped%s", epoch + 1, self.cfg.epochs, lr,
                     rec["train_loss"], rec[self.task.train_error],
                     "  ".join(f"{k[4:]} {v:.4f}" for k, v in val.items()
                               if isinstance(v, float)),
                     rec["img_per_s"], len(self.bad_images),
                     {"decrease": f"; lr -> {self.schedule.plateau.lr:.0e}",
                      "stop": "; plateau after the last decrease: stopping"}.get(action, ""))
        else:
            self.history.append(rec)
        if improved:
            self.best_err = err
        D.barrier(self.dist)
        return rec


def train(cfg: TrainConfig, progress: bool = True,
          callback: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train one net with the recipe of Sect. 3.1 (see :class:`TrainConfig`), or a
    localisation net (Appendix A) when ``cfg.head`` is "scr" or "pcr".

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


def resume(run: str | Path, progress: bool = True,
           callback: Callable[[dict[str, Any]], None] | None = None,
           **changes: Any) -> TrainResult:
    """Continue the run in folder ``run`` exactly where its last checkpoint left it.
    ``changes``: only settings that do not alter the arithmetic of training (``epochs``
    to extend it, ``data`` when the dataset moved, ``device``, ``workers``, ...)."""
    from .config import resume_config

    return train(resume_config(run, changes), progress, callback)


__all__ = ["FIELDS", "TrainConfig", "TrainResult", "TrainingDiverged", "resume", "train"]
