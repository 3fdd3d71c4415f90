"""The folder a run writes to, and what it listens for while it runs: one run per folder
(a lock naming its holder), never silently replacing an earlier run's results;
SIGINT/SIGTERM turned into "finish the step, save, stop"; the metrics log
(``metrics.jsonl``, TensorBoard)."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from ..checkpoint import atomic_write, remove_orphan_temporaries
from ..errors import ConfigError
from .checkpoint import BEST, LAST, RunLock

log = logging.getLogger(__name__)


class RunFolder:
    """``path`` claimed for one run (:meth:`claim`, rank 0 only) and given back
    (:meth:`release`): a folder this run made and left empty is removed again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock: RunLock | None = None
        self.made = False

    def claim(self, resume: bool, overwrite: bool) -> None:
        """Lock the folder. A new run refuses a folder holding a run unless
        ``overwrite``; a resumed run first clears the temporary files that a kill during
        a checkpoint write left behind."""
        run_dir = self.path
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(f"output folder {run_dir} is not writable: it is a file")
        self.made = not run_dir.exists()
        try:
            self.lock = RunLock(run_dir).acquire()
        except OSError as e:
            raise ConfigError(f"output folder {run_dir} is not writable: "
                              f"{e.strerror or e}") from None
        if not resume:
            done = [n for n in (LAST, BEST, "metrics.jsonl") if (run_dir / n).exists()]
            if done and not overwrite:
                raise ConfigError(f"{run_dir} already holds a run ({', '.join(done)}); "
                                  f"continue it with --resume {run_dir}, choose another "
                                  f"--out, or pass --overwrite to replace it")
            if done:
                log.warning("--overwrite: starting a new run in %s; its earlier %s will be "
                            "replaced", run_dir, ", ".join(done))
        else:
            for p in remove_orphan_temporaries(run_dir):
                log.info("removed %s, left by a run killed while writing a checkpoint", p)

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None
            if self.made and not any(self.path.iterdir()):
                self.path.rmdir()  # a run that failed before writing anything


class StopFlag:
    """SIGINT/SIGTERM: remember the signal; the loop finishes its step, saves and exits."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
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


class Writers:
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
        text = "".join(json.dumps(h) + "\n" for h in history)
        atomic_write(self.metrics, lambda f: f.write(text.encode()))
        for k, v in rec.items():
            if isinstance(v, (int, float)) and k not in ("epoch",):
                self.scalar(f"epoch/{k}", float(v), rec["epoch"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
