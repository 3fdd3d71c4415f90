"""The training loop of Sect. 3.1: SGD with momentum, the global batch reached by gradient
accumulation and/or DistributedDataParallel, validation each epoch (by the evaluator of
Sect. 3.2) driving the learning-rate schedule, and checkpoints that let a killed run
continue to the same weights. What is learnt (classification, or box regression for
localisation) is a :class:`vgg.train.task.Task` given to the :class:`Trainer`; the loop is
the same. Its pieces: ``build`` (the net and what it starts from), ``step`` (one
optimizer step), ``run_folder`` (the folder, signals, metrics log), ``checkpoint``.

Exactness of resume: the augmentation of an image depends only on (seed, epoch, index)
(``vgg.data.loaders``), the sampler's order only on (seed, epoch), the learning rate only
on (global step, schedule state), and torch's RNG (dropout) is re-seeded from (seed,
rank, epoch, step) before every optimizer step. A run restarted from any checkpoint
therefore replays exactly the steps it had not saved.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import nonfinite_keys
from ..data.sources import check_same_images, fingerprint
from ..devices import pick_device
from ..errors import CheckpointError, ConfigError
from ..precision import native_bf16
from ..progress import Progress
from . import distributed as D
from .build import Start, build_model, colour_stats, new_preprocess, param_groups
from .checkpoint import (BEST, LAST, Position, check_writable, estimate_checkpoint_bytes,
                         save_best, save_run_state, set_rng_state)
from .config import TrainConfig, check_resume, save_yaml
from .run_folder import RunFolder, StopFlag, Writers
from .schedule import LrSchedule
from .step import (TrainingDiverged, TrainStep, amp_dtype, amp_name, grad_scaler,
                   resolve_amp, step_seed, train_memory_format)
from .task import Task, TaskContext

log = logging.getLogger(__name__)


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


class Trainer:
    """One run of ``task`` (the caller picks it: ``vgg.tasks.task_for``) with the settings
    ``cfg``. Use :func:`train_task`, or ``vgg.train.train`` which picks the task too. The
    task sees the run through ``ctx`` (:class:`TaskContext`), never through the trainer.
    ``callback(record)`` is called after every epoch."""

    def __init__(self, cfg: TrainConfig, task: Task, *, progress: bool = True,
                 callback: Callable[[dict[str, Any]], None] | None = None) -> None:
        if cfg.resume is not None:
            check_resume(cfg)
        self.cfg, self.task, self.callback = cfg, task, callback
        self.progress = progress and cfg.progress
        self.run_dir = Path(cfg.out)
        device_type = pick_device(cfg.device).type
        self.dist = D.init_distributed(device_type)
        self.device = pick_device(cfg.device, self.dist.local_rank)
        self.main = self.dist.is_main
        amp_dtype(cfg.amp, self.device)  # fp16 without CUDA: refused before the folder is claimed
        self.folder = RunFolder(self.run_dir)
        from ..data.loaders import BadImages

        self.bad_images = BadImages()  # each unreadable file named once per run
        self.ctx = TaskContext(self.device, self.dist, self.bad_images)
        try:
            if self.main:
                self.folder.claim(resume=cfg.resume is not None, overwrite=cfg.overwrite)
            self._setup()
        except BaseException:
            self.close()
            raise

    # -- set-up -----------------------------------------------------------------------

    def _setup(self) -> None:
        """Everything before the first step, in the order resume relies on: the seed, the
        data, the net, the optimizer and schedule, the saved state, then the step."""
        cfg = self.cfg
        if cfg.batch % self.dist.world_size:
            raise ConfigError(f"--batch {cfg.batch} is not divisible by the "
                              f"{self.dist.world_size} processes")
        self.rank_batch = cfg.batch // self.dist.world_size
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(cfg.seed)
        self.start = Start.read(cfg)  # the checkpoints to resume / start from, read once
        self.amp = self._resolve_amp()
        self.ctx = dataclasses.replace(self.ctx, amp=self.amp)
        self._read_data()
        self._make_model()
        self._make_optimizer()
        self.position = Position()
        self.history: list[dict[str, Any]] = []
        self.best_err: float | None = None
        self.epoch_acc: dict[str, float] = {}
        if self.start.resume_state is not None:
            self._restore(self.start.resume_state)
        if self.main:
            save_yaml(cfg, self.run_dir / "config.yaml")
        D.barrier(self.dist)
        self.step = TrainStep(cfg, self.model, self.task, self.optimizer, self.scaler,
                              stats=self.stats if cfg.colour_std > 0 else None,
                              dist=self.dist, device=self.device, run_dir=self.run_dir,
                              amp=self.amp)

    def _resolve_amp(self) -> str:
        """The precision this run trains in ("none", "bf16", "fp16"): ``--amp`` with
        ``auto`` resolved for this device and net (:func:`resolve_amp`). A resumed run
        continues in the precision its ``last.pt`` records, so that it stays exact:
        ``auto`` follows the record (and says so where this machine would pick another),
        an explicit ``--amp`` that differs from it is refused."""
        cfg = self.cfg
        amp, why = resolve_amp(cfg.amp, self.device, cfg)
        recorded = (self.start.resume_ckpt.meta.get("amp")
                    if self.start.resume_ckpt is not None else None)
        if recorded is not None and recorded != amp:
            if cfg.amp != "auto":
                raise ConfigError(
                    f"{cfg.resume} was trained with --amp {recorded} (its {LAST}); resuming "
                    f"it with --amp {amp} would change its arithmetic half-way. Resume with "
                    f"--amp {recorded}, or start a new run (e.g. --finetune-from "
                    f"{Path(str(cfg.resume)) / LAST}) to train on in another precision")
            amp_dtype(recorded, self.device)  # e.g. fp16 on a CPU: refused
            if self.main:
                log.warning("--amp auto: %s would train in %s here (%s), but %s was trained "
                            "in %s: continuing in %s so that the resume stays exact",
                            self.device.type, amp_name(amp), why, cfg.resume,
                            amp_name(recorded), amp_name(recorded))
            return str(recorded)
        if amp == "bf16" and self.device.type == "cpu" and not native_bf16(self.device):
            log.warning("--amp bf16: this CPU has no native bf16 (AVX512-BF16 or AMX); it "
                        "runs emulated, slower than fp32 (--amp auto picks fp32 here)")
        if self.main:
            log.info("training in %s (--amp %s%s)", amp_name(amp), cfg.amp,
                     "" if cfg.amp != "auto" else f": {why}")
        return amp

    def _read_data(self) -> None:
        self.train_index, self.val_index = self.task.indexes(self.start.classes)
        self.data_fingerprint = {"train": fingerprint(self.train_index),
                                 "val": fingerprint(self.val_index)}
        if self.start.resume_ckpt is not None:  # the same images, however they are reached
            check_same_images(self.start.resume_ckpt.meta.get("data"), self.data_fingerprint,
                              str(self.cfg.resume))

    def _make_model(self) -> None:
        """The net on its device, with its preprocessing and the colour statistics."""
        cfg = self.cfg
        self.model = build_model(cfg, self.task, self.start, self.train_index)
        if self.main:  # before the (possibly long) statistics pass
            check_writable(self.run_dir, estimate_checkpoint_bytes(self.model))
        self.stats = colour_stats(cfg, self.start, self.train_index,
                                  progress=self.progress and self.main,
                                  bad_images=self.bad_images)
        if self.start.resume_ckpt is None:
            self.model.preprocess = new_preprocess(cfg, self.stats, self.start.source)
        self.model.to(self.device)
        self.model.memory_format = train_memory_format(cfg)

    def _make_optimizer(self) -> None:
        cfg = self.cfg
        self.optimizer = torch.optim.SGD(param_groups(self.model, cfg.weight_decay,
                                                      cfg.decay_biases),
                                         lr=cfg.lr, momentum=cfg.momentum)
        n_rank = math.ceil(len(self.train_index) / self.dist.world_size)
        self.steps_per_epoch = max(1, math.ceil(n_rank / self.rank_batch))
        self.schedule = LrSchedule.make(
            cfg.schedule, cfg.lr, cfg.lr_factor, cfg.patience, cfg.plateau_threshold,
            cfg.lr_decreases, total_steps=cfg.epochs * self.steps_per_epoch,
            warmup_steps=round(cfg.warmup * self.steps_per_epoch))
        self.scaler = grad_scaler(self.amp)

    def _restore(self, ts: dict[str, Any]) -> None:
        try:
            self.optimizer.load_state_dict(ts["optimizer"])
            rehorizoned = self.schedule.load_state_dict(ts["schedule"], ts["global_step"])
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
        if rehorizoned:  # docs/training.md: resuming with another --epochs
            log.info("%s schedule: --epochs %d changes the run's end; the rate goes on from "
                     "%.3g and now reaches the end of its curve at epoch %d", self.cfg.schedule,
                     self.cfg.epochs, self.schedule.lr_at(self.position.global_step),
                     self.cfg.epochs)
            if self.schedule.lr_at(self.position.global_step) < 0.01 * self.cfg.lr:
                log.warning("the rate had already annealed to under 1%% of --lr: the added "
                            "epochs train at that rate; to train on at a higher one, start a "
                            "new run with --finetune-from %s/last.pt --lr ...", self.run_dir)
        log.info("resuming %s at epoch %d, step %d", self.run_dir, self.position.epoch + 1,
                 self.position.step)

    # -- checkpoints ------------------------------------------------------------------

    def _meta(self, val_err: float | None) -> dict[str, Any]:
        meta = {"train_scale": list(self.cfg.scale), "stats": self.stats.to_dict(),
                "epoch": self.position.epoch, "global_step": self.position.global_step,
                self.task.primary: val_err,
                "dataset": str(self.cfg.data), "data": self.data_fingerprint,
                "test_scale": self.cfg.test_scale, "run": str(self.run_dir),
                "amp": self.amp}
        return meta | self.task.meta()

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
        self.folder.release()

    def validate(self) -> dict[str, float]:
        """The task's validation (classification: ``vgg.eval.evaluate`` at Q =
        ``test_scale`` with ``val_method``), split over the processes."""
        return self.task.validate(self.model, self.val_index, self.ctx)

    def run(self) -> TrainResult:
        """Epochs until ``cfg.epochs``, the end of the schedule, or a signal."""
        writers = Writers(self.run_dir, self.main, self.cfg.tensorboard)
        stopped = "epochs"
        self._last_save = time.monotonic()
        try:
            with StopFlag() as stop:
                while self.position.epoch < self.cfg.epochs and not self.schedule.done:
                    if self._run_epoch(stop, writers):
                        stopped = "interrupted"
                        break
                if self.schedule.done:
                    stopped = "schedule"
        finally:
            writers.close()
        if self.main and self.cfg.plot and self.history and stopped != "interrupted":
            self._plot()
        best = self.run_dir / BEST
        return TrainResult(run_dir=self.run_dir, best_path=best if best.is_file() else None,
                           last_path=self.run_dir / LAST, history=list(self.history),
                           best_top1_err=self.best_err, stopped=stopped)

    def _run_epoch(self, stop: StopFlag, writers: Writers) -> bool:
        """The rest of the current epoch, then (unless a signal stopped it half-way) its
        validation, schedule, checkpoints and record. True when a signal stops the run."""
        epoch = self.position.epoch
        loader = self._epoch_loader(epoch, self.position.step * self.rank_batch)
        steps = self.position.step + len(loader)
        acc = self.epoch_acc or {"loss": 0.0, "correct": 0.0, "n": 0.0, "bad": 0.0,
                                 "time": 0.0, "images": 0.0}
        acc.setdefault("images", acc["n"])
        self.task.train_mode(self.model)
        interrupted = self._steps(loader, steps, acc, stop, writers)
        if interrupted and self.position.step < steps:
            log.warning("stopped at epoch %d, step %d; continue with "
                        "`vgg train --resume %s`", epoch + 1, self.position.step, self.run_dir)
            return True
        rec = self._end_epoch(acc, writers)
        self._last_save = time.monotonic()
        if self.callback is not None:
            self.callback(rec)
        return interrupted

    def _steps(self, loader: Any, steps: int, acc: dict[str, float], stop: StopFlag,
               writers: Writers) -> bool:
        """The epoch's remaining optimizer steps (up to step ``steps``), summed into
        ``acc``, saving ``last.pt`` when one is due. True when a signal (seen by any
        process) asks the run to stop."""
        cfg, pos = self.cfg, self.position
        bar = Progress(steps, f"epoch {pos.epoch + 1}/{cfg.epochs}", "step",
                       enabled=self.progress and self.main, initial=pos.step)
        t_epoch = t_last = time.perf_counter()
        interrupted = False
        for batch in loader:
            torch.manual_seed(step_seed(cfg.seed, self.dist.rank, pos.epoch, pos.step))
            self._set_lr()
            self.bad_images.report(batch)
            t_step = time.perf_counter()
            sums = self.step(batch, pos)  # loss, right, counted, images, bad
            pos.step += 1
            pos.global_step += 1
            for k, v in zip(("loss", "correct", "n", "images", "bad"), sums):
                acc[k] += v
            self.epoch_acc = acc
            now = time.perf_counter()
            self._show_step(bar, writers, sums, now - t_last, now - t_step)
            t_last = now
            due = ((cfg.save_every_steps and pos.global_step % cfg.save_every_steps == 0)
                   or time.monotonic() - self._last_save > cfg.save_every_minutes * 60)
            interrupted = D.any_flag(stop.signum is not None, self.dist, self.device)
            if (due or interrupted) and pos.step < steps:
                acc["time"] += time.perf_counter() - t_epoch
                t_epoch = time.perf_counter()
                self.save_last()
                self._last_save = time.monotonic()
            if interrupted:
                break
        bar.close()
        acc["time"] += time.perf_counter() - t_epoch
        return interrupted

    def _show_step(self, bar: Progress, writers: Writers,
                   sums: tuple[float, float, float, float, float],
                   since_last: float, step_s: float) -> None:
        loss, correct, n, n_img, _ = sums
        if n:
            bar.set_postfix(loss=f"{loss / n:.3f}", err=f"{1 - correct / n:.3f}",
                            img_s=f"{n_img / max(since_last, 1e-9):.0f}",
                            step_s=f"{step_s:.2f}", lr=f"{self._lr:.1e}")
        bar.update(1)
        if self.main and self.position.global_step % 10 == 0:
            writers.scalar("train/loss", loss / max(n, 1), self.position.global_step)
            writers.scalar("train/lr", self._lr, self.position.global_step)

    def _plot(self) -> None:
        try:
            from .plots import plot_curves
            plot_curves(self.history, self.run_dir / "curves.png",
                        train_err=self.task.train_error, val_err=self.task.primary)
        except Exception as e:  # a plot must never lose a finished run
            log.warning("could not write the training curves: %s", e)

    def _end_epoch(self, acc: dict[str, float], writers: Writers) -> dict[str, Any]:
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
            "global_step": self.position.global_step, "amp": self.amp}
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


def train_task(cfg: TrainConfig, task: Task, progress: bool = True,
               callback: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Run ``task`` with the settings ``cfg`` (see :func:`vgg.train.train`, which picks
    the task of ``cfg``); the run folder and the process group are given back however
    the run ends."""
    trainer: Trainer | None = None
    try:
        trainer = Trainer(cfg, task, progress=progress, callback=callback)
        return trainer.run()
    finally:
        if trainer is not None:
            trainer.close()
        D.cleanup()


__all__ = ["Trainer", "TrainResult", "TrainingDiverged", "train_task"]
