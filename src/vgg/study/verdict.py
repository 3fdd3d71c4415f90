"""Verdicts decided from numbers: a paired bootstrap over validation images of the
difference of two top-1 errors (each image's error averaged over the seeds first, so
several seeds narrow the interval and their spread is part of it).

A finding "X beats Y" holds when the whole 95% interval of err(Y) - err(X) is above 0,
does not hold when it is below 0 (Y is then significantly better), and is inconclusive
at this scale otherwise. A finding "X does not help over Y" (LRN) holds when the interval
of the improvement err(Y) - err(X) lies below a margin of practical equivalence
(``EQUIVALENCE``, stated in the report), does not hold when X is significantly better,
and is inconclusive when the interval is too wide to tell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import VggError

HOLDS = "holds"
FAILS = "does not hold"
UNSURE = "inconclusive at this scale"
EQUIVALENCE = 0.02  # 2 points of top-1 error: "does not help" allows at most this gain
BOOTSTRAP = 4000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """The mean paired difference (fraction of images) and its bootstrap interval."""

    mean: float
    low: float
    high: float
    n_images: int

    def text(self) -> str:
        return (f"{100 * self.mean:+.1f} points (95% CI {100 * self.low:+.1f} to "
                f"{100 * self.high:+.1f}, {self.n_images} images)")


def paired_bootstrap(worse: np.ndarray, better: np.ndarray, n_boot: int = BOOTSTRAP,
                     level: float = LEVEL, seed: int = 0) -> Interval:
    """The interval of mean(worse - better) over images, resampling images with
    replacement (the same resample for both, so what the two nets share cancels).

    ``worse``, ``better``: (N,) per-image errors in [0, 1] (0/1 wrong, or the fraction of
    seeds that got the image wrong) of the claimed worse and better setting, on the same
    images in the same order."""
    a = np.asarray(worse, dtype=np.float64)
    b = np.asarray(better, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise VggError(f"paired bootstrap needs two (N,) arrays of the same images, got "
                       f"{a.shape} and {b.shape}")
    if a.size == 0:
        raise VggError("paired bootstrap over zero images")
    d = a - b
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for lo in range(0, n_boot, 500):  # (chunk, N) index arrays, bounded memory
        hi = min(n_boot, lo + 500)
        idx = rng.integers(0, d.size, size=(hi - lo, d.size))
        means[lo:hi] = d[idx].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float(d.mean()), float(low), float(high), int(d.size))


def better_verdict(ci: Interval) -> str:
    """"X beats Y", with ``ci`` the interval of err(Y) - err(X)."""
    if ci.low > 0:
        return HOLDS
    if ci.high < 0:
        return FAILS
    return UNSURE


def no_gain_verdict(ci: Interval, margin: float = EQUIVALENCE) -> str:
    """"X does not help over Y", with ``ci`` the interval of the gain err(Y) - err(X)."""
    if ci.low > 0:
        return FAILS
    if ci.high < margin:
        return HOLDS
    return UNSURE
