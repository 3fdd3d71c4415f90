"""Which task a training run learns, above ``vgg.train`` and ``vgg.localize``: the
classification task (Sect. 3.1, ``vgg.train.task``) or the localisation task for an SCR /
PCR head (Appendix A, ``vgg.localize.task``), and the public :func:`train` / :func:`resume`
that pick it and give it to the trainer (``vgg.train.loop``). ``vgg.train`` hands both on
as ``vgg.train.train`` and ``vgg.train.resume``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .train.config import TrainConfig, resume_config
from .train.loop import TrainResult, train_task
from .train.task import ClassificationTask, Task


def task_for(cfg: TrainConfig) -> Task:
    """The task of a run: classification, or localisation for an SCR / PCR head."""
    if cfg.is_localisation:
        # imported here: ``vgg.localize.task`` imports ``vgg.train``, whose face hands on
        # this module's train/resume
        from .localize.task import LocalisationTask

        return LocalisationTask(cfg)
    return ClassificationTask(cfg)


def train(cfg: TrainConfig, progress: bool = True,
          callback: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train one net with the recipe of Sect. 3.1 (see :class:`TrainConfig`), or a
    localisation net (Appendix A) when ``cfg.head`` is "scr" or "pcr".

    ``callback(record)`` is called after every epoch with that epoch's metrics (the dict
    also written to ``RUN/metrics.jsonl``). Under ``torchrun`` each process calls this;
    only rank 0 writes. Returns the run folder, checkpoint paths and the history.
    """
    return train_task(cfg, task_for(cfg), progress, callback)


def resume(run: str | Path, progress: bool = True,
           callback: Callable[[dict[str, Any]], None] | None = None,
           **changes: Any) -> TrainResult:
    """Continue the run in folder ``run`` exactly where its last checkpoint left it.
    ``changes``: only settings that do not alter the arithmetic of training (``epochs``
    to extend it, ``data`` when the dataset moved, ``device``, ``workers``, ...)."""
    return train(resume_config(run, changes), progress, callback)


__all__ = ["resume", "task_for", "train"]
