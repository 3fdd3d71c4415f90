"""The training curves of a run (loss, train/val top-1 error, learning rate) as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_curves(history: list[dict[str, Any]], path: str | Path,
                train_err: str = "train_top1_err", val_err: str = "val_top1_err") -> Path:
    """Three panels over epochs: loss (train, val), error (``train_err`` and ``val_err``,
    plus top-5 val when logged), learning rate (log scale). Written with matplotlib's Agg
    backend (no display)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    ax_loss, ax_err, ax_lr = fig.subplots(1, 3)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "s-", label="val")
    ax_loss.set(title="loss", xlabel="epoch")
    name = train_err.removeprefix("train_").replace("_err", "").replace("top1", "top-1")
    ax_err.plot(epochs, [h.get(train_err) for h in history], "o-", label=f"train {name}")
    ax_err.plot(epochs, [h.get(val_err) for h in history], "s-", label=f"val {name}")
    if all("val_top5_err" in h for h in history):
        ax_err.plot(epochs, [h["val_top5_err"] for h in history], "^--", label="val top-5")
    ax_err.set(title="error", xlabel="epoch", ylim=(0, 1))
    ax_lr.step(epochs, [h["lr"] for h in history], where="post")
    ax_lr.set(title="learning rate", xlabel="epoch", yscale="log")
    for ax in (ax_loss, ax_err):
        ax.legend()
    for ax in (ax_loss, ax_err, ax_lr):
        ax.grid(alpha=0.3)
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path
