"""Colour statistics of a training set (Sect. 3.1's PCA colour shift, Sect. 2.1's mean).

Streaming and deterministic: one pass that accumulates, in float64, the pixel count, the
per-channel sums and the 3 x 3 sums of products of RGB pixels in [0, 1] units; mean and
covariance come from those at the end, then ``numpy.linalg.eigh``. Images are decoded
with the JPEG draft to about ``side`` (256) px on the smaller side: the mean and covariance of a
downscaled image are within a fraction of a grey level of the full image's, at a
fraction of the decoding cost. ``limit`` takes a seeded random subset.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import BadImageError, DataError
from ..progress import Progress
from .decode import decode_image
from .folders import has_split, index_split
from .imagefolder import index_folder
from .index import ImageIndex
from .loaders import BadImages
from .transforms import ColourStats

log = logging.getLogger(__name__)


def _as_index(src: ImageIndex | str | Path) -> ImageIndex:
    if isinstance(src, ImageIndex):
        return src
    p = Path(src)
    if has_split(p, "train"):
        return index_split(p, "train")
    return index_folder(p)


def compute_stats(index_or_dir: ImageIndex | str | Path, limit: int | None = None,
                  seed: int = 0, side: int = 256, progress: bool = True,
                  bad_images: BadImages | None = None) -> ColourStats:
    """Mean RGB (0..255) and the eigen-decomposition of the RGB covariance ([0, 1] units)
    over the images of an index or a dataset folder (its train split when it has one,
    in any layout ``index_split`` reads; else the folder's class folders).
    Unreadable images are skipped and noted in ``bad_images`` (which warns once per file;
    pass the run's object so that the epochs do not name them again); none readable
    raises DataError."""
    index = _as_index(index_or_dir)
    paths = index.paths
    if limit is not None and limit < len(paths):
        order = np.random.default_rng(seed).permutation(len(paths))[:limit]
        paths = [paths[i] for i in sorted(order)]
    n = 0
    s1 = np.zeros(3, np.float64)
    s2 = np.zeros((3, 3), np.float64)
    n_images, n_bad = 0, 0
    bad_images = BadImages(log) if bad_images is None else bad_images
    bar = Progress(len(paths), "colour stats", "img", enabled=progress)
    for p in paths:
        bar.update(1)
        try:
            img = decode_image(p, target_min_side=side)
        except BadImageError as e:
            bad_images.note(p, e.reason)
            n_bad += 1
            continue
        x = np.asarray(img, np.float64).reshape(-1, 3) / 255.0
        n += x.shape[0]
        s1 += x.sum(0)
        s2 += x.T @ x
        n_images += 1
    bar.close()
    if n_images == 0:
        raise DataError(f"no readable image among {len(paths)} files of "
                        f"{index.root or 'the dataset'}")
    mean = s1 / n
    cov = s2 / n - np.outer(mean, mean)
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1]
    eigval, eigvec = np.clip(eigval[order], 0, None), eigvec[:, order]
    # A fixed sign per eigenvector (largest-magnitude component positive): deterministic
    # output across LAPACK builds; alpha is symmetric so the shift's law is unchanged.
    for i in range(3):
        if eigvec[np.argmax(np.abs(eigvec[:, i])), i] < 0:
            eigvec[:, i] = -eigvec[:, i]
    return ColourStats(tuple(mean * 255.0), tuple(eigval), tuple(map(tuple, eigvec)),
                       n_images=n_images, n_pixels=int(n),
                       extra={"root": str(index.root) if index.root else "",
                              "limit": limit, "seed": seed, "side": side,
                              "n_bad": n_bad})
