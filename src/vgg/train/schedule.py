"""Sect. 3.1 learning-rate schedule: start at ``lr`` (1e-2), divide by 10 when the
validation top-1 error stops improving, three decreases in all; the next plateau (or the
epoch limit) ends training."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError


@dataclass
class PlateauSchedule:
    """Reduce-on-plateau driven by validation top-1 error (lower is better).

    An epoch *improves* when ``err < best - threshold`` (absolute, in error units, e.g.
    1e-3 = 0.1 percentage point). After ``patience`` epochs in a row without improvement
    the learning rate is multiplied by ``factor``; once ``max_decreases`` decreases have
    happened, the next such plateau sets ``done``.
    """

    lr: float = 1e-2
    factor: float = 0.1
    patience: int = 2
    threshold: float = 1e-3
    max_decreases: int = 3
    best: float = math.inf
    bad_epochs: int = 0
    decreases: int = 0
    done: bool = False

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not 0 < self.factor < 1:
            raise ConfigError(f"lr factor must be in (0, 1), got {self.factor}")
        if self.patience < 0:
            raise ConfigError(f"patience must be >= 0, got {self.patience}")
        if self.threshold < 0:
            raise ConfigError(f"plateau threshold must be >= 0, got {self.threshold}")
        if self.max_decreases < 0:
            raise ConfigError(f"max_decreases must be >= 0, got {self.max_decreases}")

    def step(self, val_err: float) -> str:
        """Record one epoch's validation error. Returns what happened: ``"improved"``,
        ``"wait"``, ``"decrease"`` (``lr`` was divided) or ``"stop"`` (``done`` is set)."""
        if self.done:
            return "stop"
        if val_err < self.best - self.threshold:
            self.best = val_err
            self.bad_epochs = 0
            return "improved"
        self.bad_epochs += 1
        if self.bad_epochs <= self.patience:
            return "wait"
        self.bad_epochs = 0
        if self.decreases >= self.max_decreases:
            self.done = True
            return "stop"
        self.decreases += 1
        self.lr *= self.factor
        return "decrease"

    def state_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if math.isinf(d["best"]):
            d["best"] = None  # keep the checkpoint free of inf (JSON-like)
        return d

    def load_state_dict(self, d: dict[str, Any]) -> None:
        for k, v in d.items():
            if k == "best" and v is None:
                v = math.inf
            setattr(self, k, v)
