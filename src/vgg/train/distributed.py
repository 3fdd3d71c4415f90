"""DistributedDataParallel plumbing for ``torchrun``: one process per device, NCCL on
GPUs, gloo on CPUs. The global batch is split across processes and DDP averages the
gradients, so the update equals one process with the whole batch (Sect. 3.3: "the result
is exactly the same as when training on a single GPU"). Only rank 0 logs and writes."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device_type: str, timeout_minutes: float = 30.0) -> DistInfo:
    """Join the process group described by torchrun's environment (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); a single process
    when those are absent. Backend: NCCL for CUDA, gloo otherwise."""
    if not launched_by_torchrun():
        return DistInfo()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if world == 1:
        return DistInfo(0, 1, local)
    if device_type == "mps":
        raise ConfigError("distributed training is not supported on MPS")
    if device_type == "cuda":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    return DistInfo(rank, world, local)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """In-place sum over processes (a no-op for one process)."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_flag(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True when ``flag`` is set on any process (e.g. a SIGTERM seen by one rank)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
