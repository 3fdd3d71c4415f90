"""Training (Sect. 3.1): ``train(TrainConfig(...)) -> TrainResult``; ``vgg train`` is its
command line. See docs/training.md."""

from .config import TrainConfig, load_yaml, parse_scale, resolve, resume_config
from .loop import TrainingDiverged, TrainResult, resume, train
from .schedule import LrSchedule, PlateauSchedule

__all__ = ["LrSchedule", "PlateauSchedule", "TrainConfig", "TrainResult", "TrainingDiverged",
           "load_yaml", "parse_scale", "resolve", "resume", "resume_config", "train"]
