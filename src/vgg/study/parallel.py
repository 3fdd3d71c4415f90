"""Several runs of a study at once, one per device (``vgg study --devices cuda:0,cuda:1``).

A run starts as soon as its parent has finished and a device is free; each device has
one worker process (spawned, so CUDA initialises cleanly in it) that trains through the
same :func:`ensure_run` as the sequential study: the same run folders and keys, the same
reuse of finished runs and resume of cut ones. ``cpu,cpu`` splits a CPU's cores between
two runs (each worker gets its share of the threads).

Ctrl-C (SIGINT to the whole process group) reaches the workers directly; SIGTERM to the
study process is passed on to them. Either way every running run saves its ``last.pt``
and the study raises :class:`StudyInterrupted`; the same command resumes it.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .plan import RunSpec, StudyPlan
from .runs import RunContext, StudyInterrupted, checkpoint_of, ensure_run

log = logging.getLogger(__name__)

_DEVICE: list[torch.device] = []  # the worker's device (set by _init_worker)


def _init_worker(devices: Any, threads: int, level: int) -> None:
    """Each worker takes the next free device of the shared queue for its lifetime."""
    dev = devices.get()
    _DEVICE.append(dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    torch.set_num_threads(max(1, threads))
    logging.basicConfig(level=level, format=f"[{dev}] %(message)s")


def _train_one(ctx: RunContext, plan: StudyPlan, spec: RunSpec, key: str,
               parent_ckpt: Path | None) -> str:
    """One run on this worker's device: "done" or "interrupted"."""
    try:
        ensure_run(replace(ctx, device=_DEVICE[0]), plan, spec, key, parent_ckpt)
    except StudyInterrupted:
        return "interrupted"
    return "done"


def train_parallel(ctx: RunContext, plan: StudyPlan, keys: dict[str, str],
                   folders: dict[str, Path], devices: list[torch.device]) -> None:
    """Train every run of ``plan``, up to ``len(devices)`` at once, parents first."""
    n = len(devices)
    cpu_workers = sum(d.type == "cpu" for d in devices)
    threads = max(1, (os.cpu_count() or 1) // max(1, cpu_workers)) if cpu_workers \
        else torch.get_num_threads()
    spawn = mp.get_context("spawn")
    queue = spawn.Queue()
    for d in devices:
        queue.put(d)
    pending = list(plan.runs)
    finished: set[str] = set()
    given_up: set[str] = set()
    running: dict[Future[str], RunSpec] = {}
    stop = False
    interrupted: list[str] = []

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True
        for p in list(getattr(pool, "_processes", {}).values()):
            if p.is_alive() and p.pid:
                os.kill(p.pid, signal.SIGINT)

    pool = ProcessPoolExecutor(max_workers=n, mp_context=spawn, initializer=_init_worker,
                               initargs=(queue, threads, logging.getLogger().level
                                         or logging.INFO))
    old_term = signal.signal(signal.SIGTERM, on_term)
    log.info("training up to %d runs at once on %s", n, ", ".join(map(str, devices)))
    try:
        while pending or running:
            if not stop:
                for spec in list(pending):
                    if len(running) >= n:
                        break
                    if spec.parent is not None and spec.parent in given_up:
                        log.warning("skipping %s: its parent %s left no checkpoint",
                                    spec.name, spec.parent)
                        pending.remove(spec)
                        given_up.add(spec.name)
                        continue
                    if spec.parent is not None and spec.parent not in finished:
                        continue
                    parent_ckpt = None
                    if spec.parent is not None:
                        parent_ckpt = checkpoint_of(folders[spec.parent])
                        if parent_ckpt is None:
                            log.warning("skipping %s: its parent %s left no checkpoint",
                                        spec.name, spec.parent)
                            pending.remove(spec)
                            given_up.add(spec.name)
                            continue
                    log.info("[run %d/%d] %s", len(plan.runs) - len(pending) + 1,
                             len(plan.runs), spec.name)
                    pending.remove(spec)
                    running[pool.submit(_train_one, ctx, plan, spec, keys[spec.name],
                                        parent_ckpt)] = spec
            elif not running:
                break
            if not running:
                if pending:  # nothing can start: every parent is missing
                    for spec in pending:
                        given_up.add(spec.name)
                    pending.clear()
                break
            try:
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:  # Ctrl-C: the workers got it too; let them save
                stop = True
                continue
            for fut in done:
                spec = running.pop(fut)
                if fut.result() == "interrupted":
                    interrupted.append(spec.name)
                    stop = True
                else:
                    finished.add(spec.name)
    except KeyboardInterrupt:
        stop = True
    finally:
        signal.signal(signal.SIGTERM, old_term)
        pool.shutdown(wait=True, cancel_futures=True)
    if stop or interrupted:
        raise StudyInterrupted(f"stopped during {', '.join(interrupted) or 'the study'}; "
                               f"run the same command again to resume where it stopped")
