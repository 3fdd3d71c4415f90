"""The images of an index rescaled to test scales Q (Sect. 3.2), in batches of one rescaled
size: the data half of every evaluator (classification in ``vgg.eval``, localisation in
``vgg.localize``, deep features in ``vgg.transfer``).

Images keep their aspect ratio, so a batch can only hold images of one rescaled size:
:func:`size_buckets` groups dataset indices by that size. Batches come as uint8 and are
normalised on the device (:func:`normalise`). Unreadable files are reported once each
(default: :func:`warn_unreadable`) and left out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..errors import BadImageError
from ..interrupts import CtrlC
from ..preprocess import Preprocess
from ..progress import Progress
from .decode import Region, image_size
from .loaders import ImageDataset
from .transforms import RescaleTransform, rescale_size

log = logging.getLogger(__name__)

__all__ = ["RescaledImages", "normalise", "size_buckets", "warn_unreadable"]


def size_buckets(sizes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Batches of dataset indices whose images have the same (rescaled) size.

    ``sizes[i]`` is image i's (width, height) after rescaling. Batches are ordered by size
    then index, each at most ``batch_size`` long; every index appears exactly once."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    groups: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(sizes):
        groups.setdefault((int(s[0]), int(s[1])), []).append(i)
    batches: list[list[int]] = []
    for size in sorted(groups):
        idx = groups[size]
        batches.extend(idx[j:j + batch_size] for j in range(0, len(idx), batch_size))
    return batches


def _collate_by_shape(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``ImageDataset`` samples of one size bucket -> ``{"groups": [(indices int64 (n,),
    images uint8 (n, 3, H, W))], "bad": [(row, path, reason)]}``. A bucket normally holds
    one shape; grouping by the decoded shape keeps a header that lied from breaking it."""
    groups: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}
    bad = []
    for s in samples:
        if "bad" in s:
            bad.append((s["index"], s["bad"], s.get("reason", "")))
            continue
        groups.setdefault(tuple(s["image"].shape), []).append((s["index"], s["image"]))
    return {"groups": [(torch.tensor([i for i, _ in g], dtype=torch.int64),
                        torch.stack([img for _, img in g])) for g in groups.values()],
            "bad": bad}


def _sizes(paths: Sequence[Path], progress: bool) -> tuple[list[tuple[int, int] | None],
                                                          dict[int, str]]:
    """Header sizes (no decoding) and the reasons of the files that cannot be read."""
    out: list[tuple[int, int] | None] = []
    bad: dict[int, str] = {}
    with Progress(len(paths), "image sizes", "img",
                  enabled=progress and len(paths) >= 2000) as bar:
        for i, p in enumerate(paths):
            try:
                out.append(tuple(image_size(p)))  # type: ignore[arg-type]
            except BadImageError as e:
                out.append(None)
                bad[i] = e.reason
            bar.update(1)
    return out, bad


def warn_unreadable(path: str, reason: str) -> None:
    """The default ``on_bad``: one warning per unreadable image."""
    log.warning("skipping unreadable image %s: %s", path, reason)


class RescaledImages:
    """The images of an index rescaled to test scales Q (Sect. 3.2), in batches of one
    rescaled size. Image sizes are read from the headers once; unreadable files are
    reported to ``on_bad(path, reason)`` once and left out (``bad``)."""

    def __init__(self, index: Any, batch_size: int, workers: int, dev: torch.device,
                 progress: bool, on_bad: Callable[[str, str], None] | None = None) -> None:
        self.index = index
        # a sample may be a box of an image (``Region``: box-level features)
        self.paths = [p if isinstance(p, Region) else Path(p) for p, _ in index.samples]
        self.batch_size, self.workers, self.dev = batch_size, workers, dev
        self.progress = progress
        self.on_bad = on_bad or warn_unreadable
        self.sizes, self.bad = _sizes(self.paths, progress)
        for i, reason in self.bad.items():
            self.on_bad(str(self.paths[i]), reason)

    @property
    def ok_rows(self) -> list[int]:
        return [i for i, s in enumerate(self.sizes) if s is not None and i not in self.bad]

    def batches(self, q: int, desc: str, rows: Sequence[int] | None = None
                ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """(rows (n,) int64 numpy, images uint8 (n, 3, H, W) on the device) per batch of
        images rescaled so that their smaller side is ``q``; only ``rows`` when given
        (the rest of an interrupted pass)."""
        rows_ok = self.ok_rows
        if rows is not None:
            wanted = set(int(r) for r in rows)
            rows_ok = [r for r in rows_ok if r in wanted]
        rescaled = [rescale_size(*self.sizes[i], q) for i in rows_ok]  # type: ignore[misc]
        buckets = [[rows_ok[i] for i in b] for b in size_buckets(rescaled, self.batch_size)]
        dataset = ImageDataset(self.index, RescaleTransform(q), check=False)
        loader = DataLoader(dataset, batch_sampler=buckets, collate_fn=_collate_by_shape,
                            num_workers=self.workers, pin_memory=self.dev.type == "cuda",
                            persistent_workers=False)
        # Ctrl-C may land in the loader's clean-up (a __del__, where it would be lost):
        # CtrlC remembers it and check() raises it again (vgg.interrupts)
        with CtrlC() as ctrl_c:
            batches = iter(loader)
            try:
                with Progress(len(rows_ok), f"{desc} Q={q}", "img",
                              enabled=self.progress) as bar:
                    for batch in batches:
                        ctrl_c.check()
                        for row, path, reason in batch["bad"]:
                            if row not in self.bad:
                                self.bad[row] = reason
                                self.on_bad(path, reason)
                        for rows, images in batch["groups"]:
                            yield rows.numpy(), images.to(self.dev, non_blocking=True)
                            bar.update(len(rows))
                        bar.update(len(batch["bad"]))
            finally:
                del batches  # its __del__ stops the loader's workers
            ctrl_c.check()


class StoresPreprocessing(Protocol):
    """A net that carries its input preprocessing (``vgg.model.VGG``)."""

    @property
    def preprocess(self) -> Preprocess: ...

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]: ...


def normalise(model: StoresPreprocessing, x8: torch.Tensor) -> torch.Tensor:
    """uint8 RGB batch -> the net's input (its stored preprocessing computed in fp32, then
    cast to the dtype of its weights; NHWC on CUDA)."""
    x = model.preprocess(x8, dtype=next(model.parameters()).dtype)
    if x.is_cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    return x
