"""Run state on top of :mod:`vgg.checkpoint`: ``RUN/last.pt`` carries the weights plus
everything needed to continue (optimizer, schedule, epoch, position inside the epoch,
RNG states); ``RUN/best.pt`` the weights of the best validation epoch. Both are ordinary
vgg checkpoints (``vgg evaluate`` / ``vgg predict`` / ``load_model`` accept them), and both
are written atomically, so a kill at any moment leaves the previous file intact."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import load_checkpoint, save_checkpoint
from ..errors import CheckpointError, ConfigError
from ..model import VGG

log = logging.getLogger(__name__)

LAST, BEST = "last.pt", "best.pt"


@dataclass
class Position:
    """Where a run is: ``epoch`` (0-based, the one in progress) and ``step`` (optimizer
    steps already done inside it); ``global_step`` counts all optimizer steps."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as checkpoint-safe values (no numpy arrays)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos),
                  int(has_gauss), float(cached)],
        "python": [py[0], list(py[1]), py[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def save_run_state(run_dir: Path, model: VGG, *, meta: dict[str, Any],
                   optimizer: torch.optim.Optimizer, schedule: dict[str, Any],
                   position: Position, history: list[dict[str, Any]],
                   scaler: torch.amp.GradScaler | None = None,
                   extra: dict[str, Any] | None = None) -> Path:
    """Write ``RUN/last.pt`` atomically: weights + meta + train_state (``extra`` adds
    loop-specific entries, e.g. the running sums of a partial epoch)."""
    train_state = {
        "optimizer": optimizer.state_dict(),
        "schedule": schedule,
        "epoch": position.epoch,
        "step": position.step,
        "global_step": position.global_step,
        "rng": rng_state(),
        "history": history,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        **(extra or {}),
    }
    return save_checkpoint(Path(run_dir) / LAST, model, meta=meta, train_state=train_state)


def save_best(run_dir: Path, model: VGG, meta: dict[str, Any]) -> Path:
    """``RUN/best.pt``: weights and meta only (what evaluation needs)."""
    return save_checkpoint(Path(run_dir) / BEST, model, meta=meta)


def load_run_state(run_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """The checkpoint of ``RUN/last.pt`` and its train_state; a ``CheckpointError`` naming
    the folder when there is nothing to resume."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"--resume: no run folder {run_dir}")
    path = run_dir / LAST
    if not path.is_file():
        raise CheckpointError(f"--resume: {run_dir} has no {LAST} (nothing to resume)")
    ckpt = load_checkpoint(path)
    if not ckpt.train_state:
        raise CheckpointError(f"{path} holds no training state (not written by vgg train)")
    return ckpt, ckpt.train_state


def estimate_checkpoint_bytes(model: VGG) -> int:
    """Bytes of ``last.pt`` (weights + SGD momentum) plus ``best.pt`` (weights), plus the
    temporary copy an atomic write needs, with a margin."""
    n = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return int(n * 2 + n + max(n * 2, 1) + (1 << 20))


def check_writable(run_dir: Path, need_bytes: int) -> None:
    """Fail before training when the run folder cannot be written or the disk is too
    full for a checkpoint (a probe file is written and removed)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-probe"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output folder {run_dir} is not writable: "
                          f"{e.strerror or e}") from None
    free = shutil.disk_usage(run_dir).free
    if free < need_bytes:
        raise ConfigError(f"not enough free disk space in {run_dir}: {free / 2**20:.0f} MiB "
                          f"free, checkpoints need about {need_bytes / 2**20:.0f} MiB")


LOCK = ".lock"


class RunLock:
    """One run per folder. ``RUN/.lock`` holds the owner (pid, host, start time) and is
    ``flock``-ed for as long as the run lives, so the operating system releases it when
    the process dies, even by SIGKILL. A second run on the same folder is refused with a
    message naming the holder; a lock file left by a dead process is taken over with a
    warning. Use as a context manager, or ``acquire()`` / ``release()``."""

    def __init__(self, run_dir: str | Path, what: str = "vgg run") -> None:
        self.path = Path(run_dir) / LOCK
        self.what = what  # who holds such locks, for the message ("vgg study")
        self._fd: int | None = None

    @staticmethod
    def _holder(text: str) -> str:
        try:
            d = json.loads(text)
            return (f"pid {d['pid']} on {d['host']}, started "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(d['start']))}")
        except (ValueError, KeyError, TypeError):
            return "an unknown process (unreadable lock file)"

    def acquire(self) -> RunLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                text = os.pread(fd, 4096, 0).decode(errors="replace")
                os.close(fd)
                raise ConfigError(f"{self.path.parent} is in use by another {self.what} "
                                  f"({self._holder(text)}); wait for it to finish or choose "
                                  f"another --out") from None
            try:  # the holder may have removed the file between our open and flock
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:  # pragma: no cover - needs five lost races in a row
            raise ConfigError(f"could not lock {self.path}: it keeps changing")
        old = os.pread(fd, 4096, 0).decode(errors="replace")
        if old.strip():
            log.warning("taking over the stale lock of %s in %s (that process is gone)",
                        self._holder(old), self.path.parent)
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "start": time.time()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, info, 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
