"""Verdicts decided from numbers: a hierarchical, paired bootstrap of the difference of two
top-1 errors that resamples the seeds and then the validation images, so that both the
training noise (seed to seed) and the test-set noise (image to image) are in the interval.

Each side of a comparison is a (seeds, images) array of per-image errors (0/1, or the
fraction of pooled nets that got the image wrong). The two sides are paired by seed index
(seed i of both sides saw the same data order; in the fine-tuning chains the two arms of
seed i start from the same parent net) and by image. One bootstrap replicate draws k seed
indices with replacement, then N image indices with replacement (one draw shared by the
drawn seeds and both sides: every seed is tested on the same images, so a new test set would
change them all together), and takes the mean difference over the drawn (seed, image) cells.

A finding "X beats Y" holds when the whole 95% interval of err(Y) - err(X) is above 0,
does not hold when it is below 0 (Y is then significantly better), and is inconclusive
at this scale otherwise. A finding "X does not help over Y" (LRN) holds when the interval
of the improvement err(Y) - err(X) lies below a margin of practical equivalence
(``EQUIVALENCE``, stated in the report), does not hold when X is significantly better,
and is inconclusive when the interval is too wide to tell. A verdict other than
inconclusive needs ``MIN_SEEDS`` seeds a side: with fewer, one lucky seed can decide it.

With 3 seeds, a replicate draws the same seed three times with probability 1/27 (3.7%,
more than the 2.5% tail), so the interval reaches about as far as the least favourable
seed's own difference: a finding holds only when every seed shows the effect.
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
MIN_SEEDS = 3  # seeds a side needs for a verdict other than "inconclusive"


@dataclass(frozen=True)
class Interval:
    """The mean paired difference (fraction of images) and its bootstrap interval."""

    mean: float
    low: float
    high: float
    n_images: int
    n_seeds: int = 1

    def text(self) -> str:
        return (f"{100 * self.mean:+.1f} points (95% CI {100 * self.low:+.1f} to "
                f"{100 * self.high:+.1f}; {self.n_seeds} seed(s) x {self.n_images} images)")


def paired_bootstrap(worse: np.ndarray, better: np.ndarray, n_boot: int = BOOTSTRAP,
                     level: float = LEVEL, seed: int = 0) -> Interval:
    """The interval of mean(worse - better), resampling seeds, then images (the module
    docstring says how); the same resample for both sides, so what they share cancels.

    ``worse``, ``better``: (k, N) per-seed, per-image errors in [0, 1] of the claimed worse
    and better setting, seeds paired by index, on the same images in the same order; an
    (N,) array is one seed (then only the images are resampled)."""
    a = np.asarray(worse, dtype=np.float64)
    b = np.asarray(better, dtype=np.float64)
    if a.ndim == 1:
        a = a[None]
    if b.ndim == 1:
        b = b[None]
    if a.shape != b.shape or a.ndim != 2:
        raise VggError(f"paired bootstrap needs two (seeds, N) arrays of the same images and "
                       f"seeds, got {np.shape(worse)} and {np.shape(better)}")
    if a.size == 0:
        raise VggError("paired bootstrap over zero images")
    d = a - b  # (k, N)
    k, n = d.shape
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for lo in range(0, n_boot, 500):  # (chunk, k, N) arrays, bounded memory
        hi = min(n_boot, lo + 500)
        seeds = rng.integers(0, k, size=(hi - lo, k))
        images = rng.integers(0, n, size=(hi - lo, n))
        per_image = d[seeds].mean(axis=1)  # (chunk, N): the drawn seeds' mean, per image
        means[lo:hi] = np.take_along_axis(per_image, images, axis=1).mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float(d.mean()), float(low), float(high), int(n), int(k))


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
