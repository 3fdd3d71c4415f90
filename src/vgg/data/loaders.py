"""Datasets and loaders with deterministic, resumable augmentation.

Every sample draws its randomness from ``np.random.default_rng([seed, epoch, index])``, so
the augmentation of image ``index`` in ``epoch`` depends on nothing else: not on the
number of workers, the batch it lands in, or where a resumed run restarts. The sampler
yields ``(index, epoch)`` keys so that persistent workers learn the epoch with each key.

Unreadable files (truncated, empty, not an image, too large) never stop an epoch: the
dataset returns a marker instead of the sample, and ``collate`` drops it and reports
``n_bad`` and ``bad`` = [(path, reason), ...] with the batch. A batch where every image was
bad comes back with zero images (callers skip it). Workers never log: the process that
consumes the batches passes each to one ``BadImages``, which warns once per file per run
(the colour-statistics pass notes its failures in the same object).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import BadImageError, DataError
from .decode import image_size
from .index import ImageIndex

log = logging.getLogger(__name__)

Key = int | tuple[int, int]
Transform = Callable[[Any, np.random.Generator], dict[str, Any]]


def _split_key(key: Key) -> tuple[int, int]:
    if isinstance(key, (tuple, list)):
        return int(key[0]), int(key[1])
    return int(key), 0


class ImageDataset(Dataset):
    """``index`` + a per-image ``transform(path, rng) -> dict(image, ...)``.

    ``dataset[i]`` or ``dataset[(i, epoch)]`` -> ``dict(image, label, index, **extras)``
    (``labels`` (K,) float32 multi-hot too when the index is multi-label), or None when
    the file cannot be decoded. Raises DataError at construction when the index is empty
    or no file in it has a readable image header.
    """

    def __init__(self, index: ImageIndex, transform: Transform, seed: int = 0,
                 check: bool = True) -> None:
        if len(index) == 0:
            raise DataError(f"no images in {index.root or 'the dataset'}")
        self.index = index
        self.transform = transform
        self.seed = int(seed)
        self._multi = index.label_matrix() if index.multilabels is not None else None
        if check:
            self._check_readable()

    def _check_readable(self) -> None:
        """Stop early with a clear error when no file is an image (stops at the first
        readable header, so this costs one file open on a healthy dataset)."""
        for p, _ in self.index.samples:
            try:
                image_size(p)
                return
            except BadImageError:
                continue
        raise DataError(f"no readable image among the {len(self.index)} files of "
                        f"{self.index.root or 'the dataset'} (e.g. {self.index.samples[0][0]})")

    def __len__(self) -> int:
        return len(self.index)

    def rng(self, index: int, epoch: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(epoch), int(index)])

    def load(self, key: Key) -> dict[str, Any]:
        """Like ``__getitem__`` but returns ``{"bad": path, "reason": ..., "index": i}`` for
        a bad file (not logged here: this runs in worker processes; see ``BadImages``)."""
        i, epoch = _split_key(key)
        path, label = self.index.samples[i]
        try:
            out = self.transform(path, self.rng(i, epoch))
        except BadImageError as e:
            return {"bad": str(path), "reason": e.reason, "index": i}
        out["label"] = label
        out["index"] = i
        if self._multi is not None:
            out["labels"] = torch.from_numpy(self._multi[i])
        return out

    def __getitem__(self, key: Key) -> dict[str, Any] | None:
        out = self.load(key)
        return None if "bad" in out else out

    def __getitems__(self, keys: Sequence[Key]) -> list[dict[str, Any]]:
        # DataLoader's batched fetch: keeps the path of bad files for ``collate``.
        return [self.load(k) for k in keys]


def collate(samples: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """Stack samples into ``dict(images uint8 (N,3,H,W), labels int64 (N,), indices int64
    (N,), alphas float32 (N,3) if present, multilabels float32 (N,K) if present, boxes
    float32 (N,4) + box_labels int64 (N,) + box_valid bool (N,) for localisation, n_bad,
    bad)``; None and bad samples are dropped and counted in ``n_bad``; ``bad`` lists
    ``(path, reason)`` of the bad samples that carry them (those of ``ImageDataset.load``).
    """
    good = [s for s in samples if s is not None and "bad" not in s]
    bad = [(s["bad"], s.get("reason", "")) for s in samples if s is not None and "bad" in s]
    n_bad = len(samples) - len(good)
    if not good:
        return {"images": torch.empty(0, 3, 0, 0, dtype=torch.uint8),
                "labels": torch.empty(0, dtype=torch.int64),
                "indices": torch.empty(0, dtype=torch.int64), "n_bad": n_bad, "bad": bad}
    shapes = {tuple(s["image"].shape) for s in good}
    if len(shapes) > 1:
        raise ValueError(f"images of different sizes in one batch: {sorted(shapes)[:3]} "
                         "(use batch_size=1 for uncropped images)")
    out: dict[str, Any] = {
        "images": torch.stack([s["image"] for s in good]),
        "labels": torch.tensor([s["label"] for s in good], dtype=torch.int64),
        "indices": torch.tensor([s["index"] for s in good], dtype=torch.int64),
        "n_bad": n_bad, "bad": bad}
    if "alpha" in good[0]:
        out["alphas"] = torch.stack([torch.as_tensor(s["alpha"], dtype=torch.float32)
                                     for s in good])
    if "labels" in good[0]:
        out["multilabels"] = torch.stack([s["labels"] for s in good])
    if "box" in good[0]:  # localisation targets (vgg.localize.data.LocTrainTransform)
        out["boxes"] = torch.stack([s["box"] for s in good])
        out["box_labels"] = torch.tensor([s["box_label"] for s in good], dtype=torch.int64)
        out["box_valid"] = torch.tensor([s["box_valid"] for s in good], dtype=torch.bool)
    return out


class BadImages:
    """The unreadable images of a run, kept in the main process: ``report(batch)`` and
    ``note(path, reason)`` log each path the first time it is seen (one warning naming it
    and the reason) and count every occurrence. Share one object between the
    colour-statistics pass, the training epochs and validation so that a bad file is
    named once per run whatever the number of epochs and worker processes."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.reasons: dict[str, str] = {}
        self.occurrences = 0
        self._log = logger or log

    def note(self, path: str | os.PathLike[str], reason: str) -> bool:
        """Record one failure to read ``path``; True (and a warning) when it is new."""
        self.occurrences += 1
        key = str(path)
        if key in self.reasons:
            return False
        self.reasons[key] = reason
        self._log.warning("skipping unreadable image %s: %s", key, reason)
        return True

    def report(self, batch: dict[str, Any]) -> int:
        """Note the ``bad`` (path, reason) pairs of a batch from ``collate``; returns the
        batch's ``n_bad`` (bad samples in it, new or not) for the caller's counters."""
        for item in batch.get("bad", ()):
            path, reason = (item, "") if isinstance(item, str) else (item[0], item[1])
            self.note(path, reason)
        n = int(batch.get("n_bad", 0))
        self.occurrences += max(0, n - len(batch.get("bad", ())))  # bad samples without a path
        return n

    def __len__(self) -> int:
        return len(self.reasons)

    def __contains__(self, path: object) -> bool:
        return str(path) in self.reasons

    def summary(self) -> str:
        return (f"{len(self.reasons)} unreadable image file(s), skipped "
                f"{self.occurrences} time(s)")


class EpochSampler(Sampler):
    """Yields ``(index, epoch)`` keys: a seeded permutation per epoch (or 0..n-1), split
    over ``world_size`` ranks as torch's DistributedSampler does (padded by repeating the
    head so every rank gets ``ceil(n / world_size)``; or truncated with ``drop_last``).
    ``start`` skips the first ``start`` keys of this rank's order (resume mid-epoch); it
    applies to the current epoch only."""

    def __init__(self, n: int, shuffle: bool, seed: int, epoch: int = 0, rank: int = 0,
                 world_size: int = 1, start: int = 0, drop_last: bool = False) -> None:
        if n < 1:
            raise DataError("cannot sample from an empty dataset")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        self.n, self.shuffle, self.seed = int(n), bool(shuffle), int(seed)
        self.rank, self.world_size, self.drop_last = int(rank), int(world_size), drop_last
        if drop_last and self.n >= world_size:
            self.num_samples = self.n // world_size
        else:
            self.num_samples = math.ceil(self.n / world_size)
        self.epoch = int(epoch)
        self.start = int(start)
        if not 0 <= self.start <= self.num_samples:
            raise ValueError(f"start {start} outside 0..{self.num_samples}")

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = int(epoch)
        self.start = int(start)

    def order(self) -> list[int]:
        """This rank's indices for the current epoch (before ``start``)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            idx = torch.randperm(self.n, generator=g).tolist()
        else:
            idx = list(range(self.n))
        total = self.num_samples * self.world_size
        if total > len(idx):
            reps = math.ceil(total / len(idx))
            idx = (idx * reps)[:total]
        else:
            idx = idx[:total]
        return idx[self.rank:total:self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        e = self.epoch
        return iter([(i, e) for i in self.order()[self.start:]])

    def __len__(self) -> int:
        return self.num_samples - self.start


def default_workers() -> int:
    """Worker processes for a loader: the usable cores (at most 8), split over the local
    ranks when running under torchrun."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        cores = os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(8, cores // max(1, local)))


def _worker_init(worker_id: int) -> None:
    # Augmentation uses per-sample RNGs; this only pins torch's and numpy's global state so
    # that nothing else in a worker is left unseeded.
    info = torch.utils.data.get_worker_info()
    seed = info.seed % 2**32 if info is not None else worker_id
    np.random.seed(seed)
    torch.set_num_threads(1)


def make_loader(dataset: ImageDataset, batch_size: int, *, shuffle: bool, seed: int,
                epoch: int = 0, workers: int | None = None, start: int = 0,
                drop_last: bool = False, distributed: bool | None = None,
                pin_memory: bool | None = None, persistent_workers: bool | None = None,
                prefetch_factor: int | None = None) -> DataLoader:
    """A DataLoader over ``(index, epoch)`` keys (``loader.sampler`` is the EpochSampler:
    call ``loader.sampler.set_epoch(e)`` before each epoch). ``distributed=None`` splits
    over ranks when torch.distributed is initialised; ``pin_memory=None`` pins when CUDA is
    available; persistent workers by default when ``workers > 0``. Same seed, same batches.
    ``start`` is counted in samples of this rank (resume inside an epoch)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rank, world = 0, 1
    if distributed is None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed:
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    sampler = EpochSampler(len(dataset), shuffle, seed, epoch, rank, world, start,
                           drop_last=drop_last and distributed)
    workers = default_workers() if workers is None else int(workers)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    if persistent_workers is None:
        persistent_workers = workers > 0
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs["persistent_workers"] = bool(persistent_workers)
        kwargs["worker_init_fn"] = _worker_init
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate, pin_memory=bool(pin_memory), drop_last=drop_last,
                      generator=torch.Generator().manual_seed(int(seed)), **kwargs)
