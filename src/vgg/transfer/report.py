"""What a transfer protocol returns (Appendix B): an :class:`Outcome` per set of
features (the metric over splits, per class, the settings that made the descriptors) and
the :class:`TransferReport` that prints them in Table 11's layout, writes JSON and plots
precision-recall curves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from ..errors import DataError
from ..eval import metrics


@dataclass
class Outcome:
    """One line of Table 11: features (``label``: trained or random nets, image or image +
    box) scored by one metric; ``values`` per split, ``value`` their mean, ``std`` their
    sample standard deviation (:func:`vgg.eval.metrics.mean_std`: ddof=1, the project's
    one convention). Several values of which one is not finite are refused: a split that
    scored nothing is an error, never a narrower spread."""

    label: str
    nets: list[str]
    scales: list[int]
    combine: str
    layer: str
    metric: str
    values: list[float]
    per_class: dict[str, float]
    details: list[dict[str, Any]] = field(default_factory=list)
    curves: dict[str, tuple[list[float], list[float]]] | None = None
    precision: str = "fp32"  # of the nets that made the descriptors
    dense_stride: int | str | None = None  # their output stride (SPEC 6b)

    def __post_init__(self) -> None:
        if len(self.values) > 1:
            try:
                metrics.mean_std(self.values)
            except ValueError as e:
                raise DataError(f"{self.label}, {self.metric}: {e}") from None

    @property
    def value(self) -> float:
        """The mean over splits (one value: itself, NaN when nothing was scored)."""
        if len(self.values) == 1:
            return float(self.values[0])
        return metrics.mean_std(self.values)[0]

    @property
    def std(self) -> float | None:
        return metrics.mean_std(self.values)[1] if len(self.values) > 1 else None

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "nets": self.nets, "scales": self.scales,
                "combine": self.combine, "layer": self.layer, "precision": self.precision,
                "dense_stride": self.dense_stride, "metric": self.metric,
                "value": self.value, "std": self.std, "values": self.values,
                "per_class": self.per_class, "splits": self.details}


@dataclass
class TransferReport:
    protocol: str
    dataset: str
    train: str
    test: str
    outcomes: list[Outcome]
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def table(self) -> str:
        """Table 11's layout: net(s), scales, the dense output stride, combination, the
        nets' precision, dataset, metric, value."""
        head = ("features", "net(s)", "scales", "stride", "combination", "precision",
                "dataset", "metric", "value")
        rows = [head]
        for o in self.outcomes:
            v = "n/a" if not math.isfinite(o.value) else f"{100 * o.value:.1f}"
            if o.std is not None:
                v += f" ± {100 * o.std:.1f}"
            rows.append((o.label, " & ".join(o.nets), ",".join(map(str, o.scales)),
                         "-" if o.dense_stride is None else str(o.dense_stride), o.combine,
                         o.precision, self.dataset, o.metric, v))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        out = [f"{self.protocol} protocol: trained on {self.train}, tested on {self.test}",
               *lines]
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out)

    def to_json(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "dataset": self.dataset, "train": self.train,
                "test": self.test, "notes": self.notes, "skipped": self.skipped,
                "results": [o.to_json() for o in self.outcomes]}

    def plot(self, path: str | Path) -> Path | None:
        """Precision-recall curves per class (VOC), one panel per set of features."""
        with_curves = [o for o in self.outcomes if o.curves]
        if not with_curves:
            return None
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from ..checkpoint import atomic_write

        fig, axes = plt.subplots(1, len(with_curves), figsize=(6.5 * len(with_curves), 5.5),
                                 squeeze=False)
        for ax, o in zip(axes[0], with_curves):
            cmap = plt.get_cmap("tab20")
            for k, (name, (p, r)) in enumerate(sorted(o.curves.items())):
                ap = o.per_class.get(name, float("nan"))
                ax.plot(r, p, color=cmap(k % 20), lw=1.2, label=f"{name} {100 * ap:.1f}")
            ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
                   title=f"{o.label}: {o.metric} {100 * o.value:.1f}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, ncol=2, loc="lower left")
        fig.suptitle(f"{self.dataset}: precision-recall per class (test: {self.test})")
        fig.tight_layout()
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
        plt.close(fig)
        return Path(path)
