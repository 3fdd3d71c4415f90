"""``TrainConfig``: every setting of ``vgg train``, with the paper's recipe (Sect. 3.1)
as defaults, and its YAML form (``configs/*.yaml``; CLI flags given by the user override
the file's values)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..model import INIT_SCHEMES, PAPER_INIT_STD

DEVICES = ("auto", "cpu", "cuda", "mps")
AMP_MODES = ("none", "bf16", "fp16")
VAL_METHODS = ("center", "dense")


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Scales are in pixels: ``scale`` = (s_min, s_max), equal for
    fixed-scale training (S = 256) and different for scale jittering ([256, 512])."""

    data: str | None = None          # DIR with train/ and val/ (ImageFolder or ImageNet)
    out: str = "runs/train"          # run folder: last.pt, best.pt, metrics.jsonl, ...
    # model (Table 1, scaled down through width / fc_width / crop)
    arch: str = "D"
    batch_norm: bool = False
    width: float = 1.0
    fc_width: int = 4096
    crop: int = 224
    dropout: float = 0.5
    # Sect. 3.1 recipe
    scale: tuple[int, int] = (256, 256)
    epochs: int = 74
    batch: int = 256
    micro_batch: int | None = None   # images per forward/backward; None = the whole batch
    lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    decay_biases: bool = False       # biases (and BN affine) are not weight-decayed
    lr_factor: float = 0.1
    patience: int = 2
    plateau_threshold: float = 1e-3
    lr_decreases: int = 3
    flip: bool = True
    colour_std: float = 0.1          # alpha ~ N(0, 0.1) of the PCA colour shift; 0 = off
    # initialisation
    init: str = "gaussian"
    init_std: float = PAPER_INIT_STD
    init_from: str | None = None     # a trained net A: first 4 convs + 3 FCs
    finetune_from: str | None = None  # all weights from a checkpoint (S=256 -> 384 -> jitter)
    resume: str | None = None        # a run folder to continue
    # colour statistics for the mean subtraction and the PCA shift
    stats: str | None = None         # JSON written by `vgg data stats`; None = compute
    stats_limit: int = 2000          # images sampled to compute them
    # validation
    val_method: str = "center"
    val_scale: int | None = None     # Q; default (s_min + s_max) / 2
    val_batch: int | None = None
    # machinery
    device: str = "auto"
    amp: str = "none"
    channels_last: bool = True       # on CUDA only
    compile: bool = False
    deterministic: bool = False
    workers: int | None = None       # loader processes; None = usable cores (max 8)
    seed: int = 0
    save_every_minutes: float = 30.0
    save_every_steps: int = 0        # 0 = off; also checkpoint every N optimizer steps
    tensorboard: bool = True
    plot: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        scale = self.scale
        if isinstance(scale, (int, str)):
            scale = parse_scale(str(scale))
        scale = tuple(int(s) for s in scale)
        if len(scale) != 2:
            raise ConfigError(f"scale must be S or [s_min, s_max], got {self.scale!r}")
        object.__setattr__(self, "scale", scale)
        s_min, s_max = scale
        if s_min > s_max:
            raise ConfigError(f"scale: s_min {s_min} > s_max {s_max}")
        if s_min < self.crop:
            raise ConfigError(f"scale S={s_min} is smaller than the crop {self.crop}")
        for name in ("epochs", "batch", "fc_width", "crop"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.micro_batch is not None and not 1 <= self.micro_batch:
            raise ConfigError(f"micro_batch must be >= 1, got {self.micro_batch}")
        if self.micro_batch is not None and self.micro_batch > self.batch:
            raise ConfigError(f"micro_batch {self.micro_batch} > batch {self.batch}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ConfigError("weight_decay must be >= 0 and momentum in [0, 1)")
        if self.init not in INIT_SCHEMES:
            raise ConfigError(f"init must be one of {INIT_SCHEMES}, got {self.init!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.val_method not in VAL_METHODS:
            raise ConfigError(f"val_method must be one of {VAL_METHODS}, "
                              f"got {self.val_method!r}")
        if self.val_scale is not None and self.val_scale < self.crop:
            raise ConfigError(f"val_scale Q={self.val_scale} is smaller than the crop")
        if self.init_from and self.finetune_from:
            raise ConfigError("give --init-from or --finetune-from, not both")
        if self.resume is None and self.data is None:
            raise ConfigError("no training data: give --data DIR (or --resume RUN)")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if self.stats_limit < 1 or self.save_every_steps < 0:
            raise ConfigError("stats_limit must be >= 1 and save_every_steps >= 0")

    @property
    def s_min(self) -> int:
        return self.scale[0]

    @property
    def s_max(self) -> int:
        return self.scale[1]

    @property
    def test_scale(self) -> int:
        """Q for validation: the training S, or the middle of the jitter range."""
        return self.val_scale or (self.s_min + self.s_max) // 2

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["scale"] = list(self.scale)
        return d

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


FIELDS = {f.name for f in fields(TrainConfig)}


def parse_scale(text: str) -> tuple[int, int]:
    """``"256"`` -> (256, 256); ``"256-512"`` or ``"256,512"`` -> (256, 512)."""
    parts = str(text).replace(",", "-").replace(":", "-").split("-")
    try:
        vals = [int(p) for p in parts if p.strip()]
    except ValueError:
        raise ConfigError(f"scale must be S or SMIN-SMAX (e.g. 256-512), got {text!r}") from None
    if len(vals) == 1:
        return vals[0], vals[0]
    if len(vals) == 2:
        return vals[0], vals[1]
    raise ConfigError(f"scale must be S or SMIN-SMAX (e.g. 256-512), got {text!r}")


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A config file's settings, keys normalised to field names (``micro-batch`` ->
    ``micro_batch``). Unknown keys are an error naming the file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
    out = {str(k).replace("-", "_"): v for k, v in raw.items()}
    unknown = sorted(set(out) - FIELDS)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {unknown}")
    if "scale" in out and not isinstance(out["scale"], (list, tuple)):
        out["scale"] = parse_scale(str(out["scale"]))
    return out


def resolve(file_values: dict[str, Any] | None = None,
            overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults <- config file <- explicit overrides (the flags the user gave)."""
    merged: dict[str, Any] = {}
    merged.update(file_values or {})
    merged.update(overrides or {})
    unknown = sorted(set(merged) - FIELDS)
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown}")
    if "scale" in merged and isinstance(merged["scale"], list):
        merged["scale"] = tuple(merged["scale"])
    try:
        return TrainConfig(**merged)
    except TypeError as e:
        raise ConfigError(f"bad config value: {e}") from None


def save_yaml(cfg: TrainConfig, path: str | os.PathLike[str]) -> None:
    from ..checkpoint import atomic_write

    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    atomic_write(path, lambda f: f.write(text.encode()))
