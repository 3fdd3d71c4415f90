"""What a training run learns, apart from the loop itself: the data, the loss and the
validation protocol. The base :class:`Task` and classification (Sect. 3.1) are here;
localisation (Appendix A) is ``vgg.localize.task.LocalisationTask``; ``vgg.tasks`` picks
the task of a config. The trainer (``vgg.train.loop``) is given its task, and a task sees
the run only through a :class:`TaskContext` (the device, its share of the processes, a sum
over them, the bad-image log), so checkpoints, resume, DDP, schedules and logs are shared
and no task reaches into the trainer."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import VggError
from . import distributed as D

if TYPE_CHECKING:
    from ..data.folders import ImageIndex
    from ..data.loaders import BadImages
    from ..model import VGG
    from .config import TrainConfig


@dataclass(frozen=True)
class TaskContext:
    """What a task may use of the run it is in: the device, this process's place among
    the processes (``dist``), a sum over them, the run's log of unreadable images and the
    precision it trains in (``amp``: the resolved ``--amp``, "none", "bf16" or "fp16")."""

    device: torch.device
    dist: D.DistInfo
    bad_images: BadImages
    amp: str = "none"

    def note_bad(self, path: str, reason: str) -> None:
        """Warn about an unreadable image once per run (stats pass, epochs, validation)."""
        self.bad_images.note(path, reason)

    def sum_over_ranks(self, sums: torch.Tensor, names: list[str]) -> dict[str, float]:
        """Sum counts over the processes, then turn them into errors and means
        (:func:`error_sums`)."""
        t = sums.to(self.device) if self.dist.enabled else sums
        D.all_reduce_sum(t, self.dist)
        return error_sums(names, t.cpu().tolist())

    def shard(self, index: ImageIndex) -> ImageIndex:
        """This process's share of ``index`` (:func:`shard`)."""
        return shard(index, self.dist.rank, self.dist.world_size)


class Task(ABC):
    """The interface the trainer uses. ``primary`` names the validation error (lower is
    better) that drives the schedule and picks ``best.pt``; ``train_error`` the error
    counted on the training batches; ``curves`` the (train, val) error keys to plot."""

    name = "task"
    primary = "val_err"
    train_error = "train_err"
    extra_keys: tuple[str, ...] = ()  # batch tensors besides images/labels/alphas

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def indexes(self, net_classes: list[str] | None = None
                ) -> tuple[ImageIndex, ImageIndex]:
        """(train, val) indexes of ``cfg.data`` (its splits, ``--train-list`` /
        ``--val-list`` or ``--val-split``: ``vgg.data.sources``), with the same class list.
        ``net_classes``: the classes of the checkpoint the run starts from or resumes, if
        any (a classification run takes its classes from the data)."""
        from ..data.sources import DataSpec, train_val_indexes

        return train_val_indexes(DataSpec.of(self.cfg))

    def prepare(self, model: VGG, from_checkpoint: bool) -> None:
        """Adjust a freshly built or fine-tuned net before training (e.g. freeze layers)."""

    def transform(self, train_index: ImageIndex) -> Any:
        from ..data.transforms import TrainTransform

        cfg = self.cfg
        scale = cfg.scale[0] if cfg.s_min == cfg.s_max else tuple(cfg.scale)
        return TrainTransform(cfg.crop, scale, flip=cfg.flip, colour_std=cfg.colour_std)

    @abstractmethod
    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(sum of the per-image losses, number of images counted right, number of
        images that count). Sums, not means: the trainer divides by the global batch so
        that accumulation and data parallelism give the same gradient."""

    @abstractmethod
    def validate(self, model: VGG, val_index: ImageIndex, ctx: TaskContext
                 ) -> dict[str, float]:
        """This epoch's validation numbers of ``model`` on ``val_index`` (each process
        takes its ``ctx.shard``), summed over the processes (``primary`` among them)."""

    def train_mode(self, model: VGG) -> None:
        model.train()

    def empty_batch(self, crop: int) -> dict[str, torch.Tensor]:
        """A batch of no images with every tensor :meth:`loss` reads: this process's share
        when every image of it was unreadable (it still runs forward and backward, for
        DDP's gradient all-reduce)."""
        return {"images": torch.zeros(0, 3, crop, crop, dtype=torch.uint8),
                "labels": torch.zeros(0, dtype=torch.int64)}

    def meta(self) -> dict[str, Any]:
        """Facts the task adds to every checkpoint's ``meta``."""
        return {}


def val_precision(amp: str) -> str:
    """The precision validation runs in: the training's (the resolved --amp: bf16 or
    fp16), else fp32."""
    return "fp32" if amp in ("none", "auto") else amp


SMALL_VAL = 1000  # validation sets up to this many images (a rank's share) load in-process


def val_workers(workers: int | None, n_images: int) -> int | None:
    """Loader processes of one epoch's validation: none for a small set, whose images
    decode in less time than starting the processes takes (600 images of 40-80 pixels:
    1.2 s in-process against 1.6 s with 2 workers, every epoch); ``workers`` otherwise."""
    return 0 if n_images <= SMALL_VAL else workers


def shard(index: ImageIndex, rank: int, world: int) -> ImageIndex:
    """Every ``world``-th image from ``rank``: each image is validated by exactly one
    process (a rank may get none when there are fewer images than processes)."""
    return index.subset(list(range(rank, len(index), world)))


class ClassificationTask(Task):
    """Sect. 3.1: cross-entropy on the soft-max of the class scores; validation by the
    evaluator of Sect. 3.2 (``vgg.eval.evaluate``) at one test scale Q, centre crop or
    dense (at ``cfg.val_dense_stride``), so that the validation error of an epoch equals
    ``vgg evaluate best.pt --method center|dense --scales Q [--dense-stride N]`` on the same
    images."""

    name = "classification"
    primary = "val_top1_err"
    train_error = "train_top1_err"

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        labels = batch["labels"]
        loss = F.cross_entropy(out.float(), labels, reduction="sum")
        hits = (out.detach().argmax(1) == labels).sum()
        return loss, hits, torch.tensor(float(len(labels)), device=out.device)

    def validate(self, model: VGG, val_index: ImageIndex, ctx: TaskContext
                 ) -> dict[str, float]:
        from ..eval.evaluate import EvalNet, evaluate
        from ..eval.metrics import topk_error

        cfg = self.cfg
        part = ctx.shard(val_index)
        sums = torch.zeros(5, dtype=torch.float64)  # loss, top-1 right, top-5 right, n, bad
        if len(part):
            net = EvalNet(model, "validation", list(cfg.scale))
            r = evaluate(net, part, method=cfg.val_method, scales=[cfg.test_scale],
                         dense_stride=cfg.val_dense_stride,
                         batch_size=cfg.val_batch or 16, device=ctx.device,
                         workers=val_workers(cfg.workers, len(part)),
                         precision=val_precision(ctx.amp),
                         progress=False,
                         allow_empty=True, on_bad=ctx.note_bad)
            n = r.n_images
            if n:
                p = np.asarray(r.posteriors, dtype=np.float64)
                py = p[np.arange(n), r.labels]
                sums[0] = float(-np.log(np.clip(np.nan_to_num(py, nan=0.0), 1e-12, None)).sum())
                sums[1] = round(n * (1.0 - topk_error(p, r.labels, 1)))
                sums[2] = round(n * (1.0 - topk_error(p, r.labels, 5)))
                sums[3] = n
            sums[4] = len(r.skipped)
        return ctx.sum_over_ranks(sums, ["val_loss", "val_top1_err", "val_top5_err",
                                         "val_images", "val_bad"])

    def meta(self) -> dict[str, Any]:
        """The validation protocol behind the checkpoint's ``val_top1_err``."""
        s = self.cfg.val_dense_stride
        return {"val_method": self.cfg.val_method} | ({"val_dense_stride": s} if s else {})


def error_sums(names: Sequence[str], sums: Sequence[float]) -> dict[str, float]:
    """Turn summed counts into the logged numbers: "*_loss" and "*_err" keys are divided by
    the image count (errors as 1 - right / n), "*_images" and "*_bad" stay counts."""
    d = dict(zip(names, sums))
    n = next(v for k, v in d.items() if k.endswith("_images"))
    if n == 0:
        raise VggError("no readable validation image")
    out: dict[str, float] = {}
    for k, v in d.items():
        if k.endswith("_err"):
            out[k] = 1.0 - v / n
        elif k.endswith(("_images", "_bad")):
            out[k] = int(v)
        else:
            out[k] = v / n
    return out
