"""Training (Sect. 3.1): ``train(TrainConfig(...)) -> TrainResult``; ``vgg train`` is its
command line. See docs/training.md."""

from .config import TrainConfig, load_yaml, parse_scale, resolve
from .loop import TrainingDiverged, TrainResult, train
from .schedule import PlateauSchedule

__all__ = ["PlateauSchedule", "TrainConfig", "TrainResult", "TrainingDiverged", "load_yaml",
           "parse_scale", "resolve", "train"]
