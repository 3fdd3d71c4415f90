"""Training (Sect. 3.1): ``train(TrainConfig(...)) -> TrainResult``; ``vgg train`` is its
command line. See docs/training.md.

The loop (``vgg.train.loop.Trainer``) is given its task; ``train`` and ``resume`` pick the
task of a config (classification, or localisation: ``vgg.localize``) in ``vgg.tasks``,
above this package, and are handed on here on first use."""

from typing import TYPE_CHECKING, Any

from .config import TrainConfig, load_yaml, parse_scale, resolve, resume_config
from .loop import TrainResult
from .schedule import LrSchedule, PlateauSchedule
from .step import TrainingDiverged

if TYPE_CHECKING:
    from ..tasks import resume, train

__all__ = ["LrSchedule", "PlateauSchedule", "TrainConfig", "TrainResult", "TrainingDiverged",
           "load_yaml", "parse_scale", "resolve", "resume", "resume_config", "train"]


def __getattr__(name: str) -> Any:
    """``train`` and ``resume`` from ``vgg.tasks``, which imports this package: taken
    when first asked for, so either can be imported first."""
    if name in ("train", "resume"):
        from .. import tasks

        return getattr(tasks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + ["resume", "train"])
