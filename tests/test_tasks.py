"""The task registry (``vgg.tasks``) and the contract between the trainer and a task: the
trainer is given its task, and the task sees the run only through a ``TaskContext``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from vgg.checkpoint import load_checkpoint
from vgg.data.loaders import BadImages
from vgg.data.synthetic import make_shapes_dataset
from vgg.errors import VggError
from vgg.localize.task import LocalisationTask
from vgg.tasks import task_for
from vgg.train import TrainConfig
from vgg.train.distributed import DistInfo
from vgg.train.loop import train_task
from vgg.train.task import ClassificationTask, TaskContext


def test_task_for_picks_the_task_of_the_head() -> None:
    assert type(task_for(TrainConfig(data="d"))) is ClassificationTask
    for head in ("scr", "pcr"):
        task = task_for(TrainConfig(data="d", head=head))
        assert type(task) is LocalisationTask and task.cfg.head == head


def test_context_sums_counts_into_errors_on_one_process(caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    ctx = TaskContext(torch.device("cpu"), DistInfo(), BadImages())
    sums = torch.tensor([6.0, 3.0, 5.0, 6.0, 1.0], dtype=torch.float64)
    out = ctx.sum_over_ranks(sums, ["val_loss", "val_top1_err", "val_top5_err",
                                    "val_images", "val_bad"])
    assert out == {"val_loss": 1.0, "val_top1_err": 0.5, "val_top5_err": pytest.approx(1 / 6),
                   "val_images": 6, "val_bad": 1}
    with pytest.raises(VggError, match="no readable validation image"):
        ctx.sum_over_ranks(torch.zeros(2, dtype=torch.float64), ["val_loss", "val_images"])
    ctx.note_bad("a.jpg", "truncated")
    ctx.note_bad("a.jpg", "truncated")
    assert len(ctx.bad_images) == 1  # named once per run


class RecordingTask(ClassificationTask):
    """Classification that records what the trainer hands it."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        self.contexts: list[Any] = []

    def validate(self, model: Any, val_index: Any, ctx: TaskContext) -> dict[str, float]:
        self.contexts.append(ctx)
        assert len(ctx.shard(val_index)) == len(val_index)  # one process: every image
        return super().validate(model, val_index, ctx)

    def meta(self) -> dict[str, Any]:
        return {"recorded": len(self.contexts)}


def test_the_trainer_runs_the_task_it_is_given(tmp_path: Path) -> None:
    data = make_shapes_dataset(tmp_path / "shapes", classes=3, train_per_class=4,
                               val_per_class=1, min_side=40, max_side=48, workers=0)
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), arch="A", width=1 / 16,
                      fc_width=32, crop=32, scale=(40, 48), epochs=2, batch=6, workers=0,
                      stats_limit=6, tensorboard=False, plot=False, progress=False)
    task = RecordingTask(cfg)
    r = train_task(cfg, task)
    assert len(task.contexts) == 2 and task.contexts[0] is task.contexts[1]
    ctx = task.contexts[0]
    assert ctx.device.type == "cpu" and ctx.dist.world_size == 1
    assert load_checkpoint(r.last_path).meta["recorded"] == 2  # the task's meta is saved
