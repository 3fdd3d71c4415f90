"""One optimizer step of Sect. 3.1: this process's share of the global batch, augmented on
the device, through the net in micro-batches (gradient accumulation, DDP's ``no_sync``
until the last) under the run's autocast, then one SGD update. The only place that runs
the net forward for training: the precision of that forward pass (``--amp``) is resolved
in :func:`resolve_amp` (``auto``), checked in :func:`amp_dtype` and applied in
:meth:`TrainStep.autocast`.

Mixed precision (``--amp bf16``, on a CUDA GPU or a CPU): the convolutions and FC layers
run under ``torch.autocast`` in bf16; the master weights, the optimizer's momentum, the
loss (computed on the scores cast to fp32), batch-norm's running statistics and the
checkpoints stay fp32. ``fp16`` (CUDA only) adds the loss scaling of :func:`grad_scaler`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, VggError
from ..model import VGG, NetShape
from ..precision import native_bf16
from . import distributed as D
from .checkpoint import LAST, Position
from .config import TrainConfig
from .task import Task


class TrainingDiverged(VggError):
    """The loss or the weights became NaN or infinite; the last good checkpoint is kept."""


def step_seed(seed: int, rank: int, epoch: int, step: int) -> int:
    """The torch seed for one optimizer step (dropout masks): a function of where the run
    is, so a resumed run draws the same masks as an uninterrupted one."""
    return (seed * 1_000_003 + rank * 7_919 + epoch * 100_003 + step) % (2**63 - 1)


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a resolved ``--amp`` (None: fp32). bf16 runs on CUDA and on
    CPUs; fp16 needs CUDA (its loss scaling is CUDA's GradScaler)."""
    if amp in ("none", "auto"):
        return None
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError(f"--amp fp16 needs a CUDA device (got {device}); on a CPU use "
                          f"--amp bf16 or --amp auto")
    if amp == "bf16" and device.type not in ("cuda", "cpu"):
        raise ConfigError(f"--amp bf16 runs on a CUDA device or a CPU (got {device})")
    return AMP_DTYPES[amp]


def amp_name(amp: str) -> str:
    """How a resolved ``--amp`` reads in logs and reports: "fp32" or "bf16 mixed precision"."""
    return "fp32" if amp == "none" else f"{amp} mixed precision"


def cpu_bf16_pays(shape: NetShape) -> bool:
    """Whether bf16 training measured faster than fp32 on a native-bf16 CPU for a net of
    this shape (``benchmarks/bench_train.py``, docs/benchmarks.md "Training step"): at
    batch 32, bf16 autocast ran 1.42x vgg's fp32 step for the demo's net (width 1/4,
    crop 32), 1.64x for a crop-64 net and 1.89x for VGG-16; narrower nets were not
    measured and stay fp32."""
    return shape.width >= 0.25


def resolve_amp(amp: str, device: torch.device, shape: NetShape) -> tuple[str, str]:
    """``--amp none|bf16|fp16|auto`` for a net of ``shape`` on ``device`` -> (the
    precision the run trains in: "none", "bf16" or "fp16"; why, for the log).

    ``auto``: bf16 on a CUDA GPU with native bf16 (compute capability >= 8.0); on a CPU
    with native bf16 (AVX512-BF16 or AMX, :func:`vgg.precision.native_bf16`) where
    :func:`cpu_bf16_pays` for the net's size; fp32 elsewhere."""
    if amp != "auto":
        return amp, "as given"
    if not native_bf16(device):
        return "none", f"{device.type} without native bf16"
    if device.type == "cuda":
        return "bf16", "native bf16 on this GPU"
    if device.type == "cpu":
        if cpu_bf16_pays(shape):
            return "bf16", "native bf16 on this CPU, measured faster at this net size"
        return "none", "bf16 measured no faster than fp32 at this net size"
    return "none", f"no bf16 training on {device.type}"


def micro_batches(batch: dict[str, Any], size: int) -> Iterator[dict[str, Any]]:
    """Slices of every per-image tensor of ``batch`` (images, labels, alphas, boxes...)."""
    n = len(batch["labels"])
    keys = [k for k, v in batch.items() if isinstance(v, torch.Tensor) and v.dim() >= 1
            and v.shape[0] == n]
    for i in range(0, max(n, 1), size):
        yield {k: batch[k][i:i + size] for k in keys}


def train_memory_format(cfg: TrainConfig) -> torch.memory_format:
    """The memory format a run's net and batches train in, on every device: channels-last
    (NHWC; ``--channels-last``, the default), or NCHW with ``--no-channels-last``."""
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


class TrainStep:
    """The step of one run: ``model`` wrapped for the processes (DDP) and ``--compile``,
    the device augmentation (``stats``: the PCA colour shift's statistics, None without
    it), the task's loss, ``optimizer`` and ``scaler`` (fp16's loss scaling); ``amp``:
    the run's resolved precision (:func:`resolve_amp`)."""

    def __init__(self, cfg: TrainConfig, model: VGG, task: Task,
                 optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, *,
                 stats: Any, dist: D.DistInfo, device: torch.device, run_dir: Path,
                 amp: str) -> None:
        from ..data.transforms import DeviceAugment

        self.cfg, self.task, self.optimizer, self.scaler = cfg, task, optimizer, scaler
        self.dist, self.device, self.run_dir = dist, device, run_dir
        self.amp_dtype = amp_dtype(amp, device)
        rank_batch = cfg.batch // dist.world_size
        self.micro = min(cfg.micro_batch or rank_batch, rank_batch)
        self.augment = DeviceAugment(model.preprocess, stats,
                                     channels_last=bool(cfg.channels_last))
        self.net: nn.Module = model
        if dist.enabled:
            self.net = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        if cfg.compile:
            self.net = torch.compile(self.net)  # type: ignore[assignment]

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The forward pass's precision: fp32, or autocast to ``amp_dtype``."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def __call__(self, batch: dict[str, Any], position: Position
                 ) -> tuple[float, float, float, float, float]:
        """One SGD update on this rank's share of the global batch (``position``: where
        the run is, for the message when the loss diverges). Returns the global (loss sum,
        images counted right, images counted, images, unreadable images) of the batch (for
        localisation a crop that shows no object is not counted)."""
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
        if n_local == 0:  # every image of this rank's share was unreadable
            batch = self.task.empty_batch(self.cfg.crop)
        stats = torch.zeros(3, device=self.device)  # loss, right, counted
        micros = list(micro_batches(batch, self.micro))
        for i, mb in enumerate(micros):
            mb = {k: v.to(self.device, non_blocking=True) for k, v in mb.items()}
            x = self.augment(mb["images"], mb.get("alphas"))
            sync = (contextlib.nullcontext() if i == len(micros) - 1 or not self.dist.enabled
                    else self.net.no_sync())  # type: ignore[operator]
            with sync:
                with self.autocast():
                    out = self.net(x)
                loss, right, counted = self.task.loss(out, mb)
                self.scaler.scale(loss * scale).backward()
            stats += torch.stack([loss.detach().float(), right.float(), counted.float()])
        D.all_reduce_sum(stats, self.dist)
        loss_total, right_total, counted_total = (float(v) for v in stats.cpu())
        if not math.isfinite(loss_total):
            raise TrainingDiverged(
                f"the loss became {loss_total} at epoch {position.epoch + 1}, step "
                f"{position.step + 1} (global step {position.global_step + 1}); "
                f"stopped without saving it: {self.run_dir / LAST} keeps the last good state. "
                f"Try a lower --lr (now {self.optimizer.param_groups[0]['lr']:g}) or "
                f"--init glorot")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_total, right_total, counted_total, n_global, bad_global


def grad_scaler(amp: str) -> torch.amp.GradScaler:
    """fp16's loss scaling (a no-op otherwise); its state is part of the run's."""
    return torch.amp.GradScaler("cuda", enabled=amp == "fp16")
