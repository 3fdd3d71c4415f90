"""Learning-rate schedules. The paper's (Sect. 3.1): start at ``lr`` (1e-2), divide by 10
when the validation top-1 error stops improving, three decreases in all; the next plateau
(or the epoch limit) ends training. For fixed short budgets: cosine annealing or fixed
steps, each with an optional linear warm-up (:class:`LrSchedule`)."""

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


@dataclass
class LrSchedule:
    """The learning rate of every optimizer step: ``plateau`` (the paper's, above),
    ``cosine`` (half a cosine from ``lr`` to 0 over the run) or ``step`` (multiply by
    ``factor`` ``decreases`` times, at evenly spaced points of the run), each optionally
    after a linear warm-up over the first ``warmup_steps`` steps.

    For a budget fixed in advance (a few epochs on a laptop) cosine anneals properly
    where the plateau schedule may never fire; the paper's 74-epoch runs use plateau.
    The rate is a function of (global step, plateau state, anchor) only, so a resumed
    run gets the same rates as an uninterrupted one.

    A resume with another horizon (``--epochs`` changed, so ``total_steps`` differs from
    the saved one) never makes the rate jump: the schedule is re-anchored at the step it
    resumes from (or the end of the warm-up, if later), keeping the rate it had there, and
    the rest of the curve is stretched (or squeezed) to the new end: cosine from that rate
    to 0, step with the decreases not yet passed spaced evenly over what remains
    (:meth:`load_state_dict`). ``anchor`` is ``(step, multiplier, decreases passed)``.
    """

    kind: str
    plateau: PlateauSchedule
    total_steps: int = 1
    warmup_steps: int = 0
    _base: float = 0.0  # the initial lr of cosine / step (the plateau keeps its own)
    anchor: tuple[int, float, int] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("plateau", "cosine", "step"):
            raise ConfigError(f"unknown schedule {self.kind!r} (plateau, cosine or step)")
        self.total_steps = max(1, int(self.total_steps))
        self.warmup_steps = max(0, min(int(self.warmup_steps), self.total_steps - 1))
        if not self._base:
            self._base = self.plateau.lr

    @property
    def done(self) -> bool:
        return self.kind == "plateau" and self.plateau.done

    def lr_at(self, step: int) -> float:
        """Learning rate of the optimizer step with 0-based global index ``step``."""
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        if self.kind == "plateau":
            return self.plateau.lr * warm
        return self._base * warm * self._shape(step)[0]

    def _shape(self, step: int) -> tuple[float, int]:
        """(multiplier of the base rate after warm-up, step decreases passed) at ``step``."""
        start, scale, passed0 = self.anchor or (self.warmup_steps, 1.0, 0)
        t = min(max(step - start, 0), max(0, self.total_steps - start))
        span = max(1, self.total_steps - start)
        if self.kind == "cosine":
            return scale * 0.5 * (1.0 + math.cos(math.pi * t / span)), 0
        n = self.plateau.max_decreases - passed0
        passed = sum(1 for i in range(1, n + 1) if t >= span * i / (n + 1))
        return scale * self.plateau.factor ** passed, passed0 + passed

    def epoch_end(self, val_err: float) -> str:
        """Record one epoch's validation error. Plateau: see :meth:`PlateauSchedule.step`;
        cosine and step only report ``"improved"`` or ``"wait"`` (the best error is kept
        for best.pt either way)."""
        if self.kind == "plateau":
            return self.plateau.step(val_err)
        if val_err < self.plateau.best - self.plateau.threshold:
            self.plateau.best = val_err
            return "improved"
        return "wait"

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "base_lr": self._base,
                "anchor": list(self.anchor) if self.anchor else None,
                "plateau": self.plateau.state_dict()}

    def load_state_dict(self, d: dict[str, Any], step: int | None = None) -> bool:
        """Restore a saved schedule. ``step`` is the global step the run resumes at: when
        the saved horizon (``total_steps``) differs from this schedule's, cosine and step
        are re-anchored there so that the rate goes on from where it was, without a jump,
        and reaches the end of its curve at the new horizon. Returns True when it did."""
        if "kind" not in d:  # written before the schedule choice existed: plateau state
            self.plateau.load_state_dict(d)
            return False
        if d["kind"] != self.kind:
            raise ConfigError(f"the run was trained with the {d['kind']} schedule, not "
                              f"{self.kind}")
        self.plateau.load_state_dict(d["plateau"])
        self._base = float(d["base_lr"])
        anchor = d.get("anchor")
        saved = LrSchedule(self.kind, self.plateau, int(d.get("total_steps", self.total_steps)),
                           int(d.get("warmup_steps", self.warmup_steps)), self._base,
                           (int(anchor[0]), float(anchor[1]), int(anchor[2])) if anchor
                           else None)
        self.warmup_steps = min(saved.warmup_steps, self.total_steps - 1)
        if saved.total_steps == self.total_steps or self.kind == "plateau" or step is None:
            self.anchor = saved.anchor
            return False
        start = max(int(step), saved.warmup_steps)
        scale, passed = saved._shape(start)
        self.anchor = (start, scale, passed)
        return True

    @classmethod
    def make(cls, kind: str, lr: float, factor: float, patience: int, threshold: float,
             decreases: int, total_steps: int, warmup_steps: int) -> LrSchedule:
        return cls(kind, PlateauSchedule(lr=lr, factor=factor, patience=patience,
                                         threshold=threshold, max_decreases=decreases),
                   total_steps, warmup_steps)
