"""A train/val split of a folder of class folders (``vgg data split``).

``SRC/<class>/**/<image>`` -> ``OUT/train/<class>/...`` + ``OUT/val/<class>/...`` (the
relative path inside the class folder is kept) + ``OUT/split.json`` (parameters and
counts). Stratified: each class is split on its own, by a permutation drawn from
``default_rng([seed, crc32(class name)])``, so a class's split depends only on the seed
and its own files, not on the other classes. A class with at least two images gets at
least one val and one train image; a class with one image goes to train. Files are
symbolic links to the absolute source paths by default (or hard links, or copies). XML
annotations beside the images travel with them. OUT is written under a temporary name
and renamed at the end, so an interrupted run leaves no half-made OUT.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ..progress import Progress
from .imagefolder import index_folder
from .index import ImageIndex

log = logging.getLogger(__name__)

MODES = ("symlink", "hardlink", "copy")


def val_count(n: int, val_fraction: float | None, val_per_class: int | None) -> int:
    """Val images of a class of ``n``: round(fraction * n) or ``val_per_class``, kept in
    1..n-1 when n >= 2 (0 when n < 2)."""
    if n < 2:
        return 0
    k = val_per_class if val_per_class is not None else math.floor(val_fraction * n + 0.5)
    return min(max(int(k), 1), n - 1)


def stratified_split(index: ImageIndex, val_fraction: float | None = None,
                     val_per_class: int | None = None, seed: int = 0
                     ) -> tuple[list[int], list[int]]:
    """Positions in ``index.samples`` of the train and the val images (each list in index
    order). Each class (by primary label) is split on its own: its images sorted by path,
    then ``val_count`` of them chosen by ``default_rng([seed, crc32(class name)])``, so
    the split depends on the seed and the class's own files only, not on their listing
    order or on the other classes. ``vgg data split`` and ``--val-split`` share it: the
    same fraction and seed pick the same val images of a class-folder tree."""
    if val_per_class is None:
        val_fraction = 0.2 if val_fraction is None else val_fraction
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"the val fraction must be in (0, 1), got {val_fraction}")
    by_class: list[list[int]] = [[] for _ in index.classes]
    for i, (_, c) in enumerate(index.samples):
        by_class[c].append(i)
    train: list[int] = []
    val: list[int] = []
    for name, members in zip(index.classes, by_class):
        members.sort(key=lambda i: index.samples[i][0])
        k = val_count(len(members), val_fraction, val_per_class)
        rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
        chosen = set(rng.permutation(len(members))[:k].tolist())
        if len(members) == 1:
            log.warning("class %s has one image: it goes to train only", name)
        elif not members:
            log.warning("class %s has no image: left out", name)
        for j, i in enumerate(members):
            (val if j in chosen else train).append(i)
    return sorted(train), sorted(val)


def split_index(index: ImageIndex, val_fraction: float, seed: int = 0
                ) -> tuple[ImageIndex, ImageIndex]:
    """``index`` split into (train, val) indexes by ``stratified_split``, with the same
    classes; both record the split in ``meta`` (``val_split``, ``split_seed``,
    ``split_part``) and keep the split name of ``index`` (default train): their files,
    and the annotations found by split name, are those of the training images."""
    train, val = stratified_split(index, val_fraction, None, seed)
    if not val:
        raise DataError(f"--val-split {val_fraction}: no class of {index.root or 'the data'} "
                        f"has two images, so no image is left for validation")
    parts = index.subset(train), index.subset(val)
    for part, name in zip(parts, ("train", "val")):
        part.meta.update(val_split=val_fraction, split_seed=seed, split_part=name,
                         split=index.meta.get("split", "train"))
    return parts


def _place(src: Path, dst: Path, mode: str, shown: Path) -> None:
    """Link or copy ``src`` to ``dst`` (``shown``: the final path, for messages)."""
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if mode == "symlink":
            os.symlink(os.path.abspath(src), dst)
        elif mode == "hardlink":
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)
    except OSError as e:
        hint = ("; hard links need one file system: use --copy or the default symbolic links"
                if mode == "hardlink" and e.errno == errno.EXDEV else "")
        raise DataError(f"cannot {mode} {src} to {shown}: {e.strerror or e}{hint}") from None


def split_folder(src: str | Path, out: str | Path, *, val_fraction: float | None = None,
                 val_per_class: int | None = None, seed: int = 0, mode: str = "symlink",
                 progress: bool = True) -> dict[str, Any]:
    """Split ``src`` (class folders) into ``out/train`` and ``out/val``; returns what
    ``out/split.json`` records. ``val_fraction`` (default 0.2) or ``val_per_class``;
    ``mode``: "symlink" (default), "hardlink" or "copy". Refuses an ``out`` that is not
    empty or lies inside ``src``."""
    if val_fraction is not None and val_per_class is not None:
        raise ConfigError("give --val-fraction or --val-per-class, not both")
    if val_fraction is None and val_per_class is None:
        val_fraction = 0.2
    if val_fraction is not None and not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    if val_per_class is not None and val_per_class < 1:
        raise ConfigError(f"--val-per-class must be >= 1, got {val_per_class}")
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DataError(f"dataset folder not found: {src}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} exists and is not an empty folder: refusing to write into it")
    src_abs, out_abs = Path(os.path.abspath(src)), Path(os.path.abspath(out))
    real_src, real_out = Path(os.path.realpath(src)), Path(os.path.realpath(out))
    if real_out == real_src or real_src in real_out.parents:
        raise DataError(f"{out} lies inside {src}: it would become a class folder of it")
    subdirs = {d.name for d in src.iterdir() if d.is_dir()}
    if "train" in subdirs and subdirs & {"val", "test"}:
        raise DataError(f"{src} looks split already (it has train/ and "
                        f"{'val' if 'val' in subdirs else 'test'}/); give the folder that "
                        f"holds the class folders, e.g. {src / 'train'}")
    index = index_folder(src)
    train, val = stratified_split(index, val_fraction, val_per_class, seed)
    in_val = set(val)
    counts: dict[str, dict[str, int]] = {c: {"train": 0, "val": 0} for c in index.classes}
    plan: list[tuple[Path, Path]] = []
    for i in sorted(train + val, key=lambda i: index.samples[i]):
        p, c = index.samples[i]
        part = "val" if i in in_val else "train"
        counts[index.classes[c]][part] += 1
        plan.append((p, Path(part) / index.classes[c] / p.relative_to(src / index.classes[c])))
    carry_xml = index.boxes is not None
    tmp = out_abs.parent / f".{out_abs.name}.partial-{os.getpid()}"
    out_abs.parent.mkdir(parents=True, exist_ok=True)
    if tmp.exists():
        shutil.rmtree(tmp)
    record: dict[str, Any] = {
        "source": str(src_abs), "seed": seed, "val_fraction": val_fraction,
        "val_per_class": val_per_class, "mode": mode,
        "train": sum(v["train"] for v in counts.values()),
        "val": sum(v["val"] for v in counts.values()), "classes": counts}
    try:
        bar = Progress(len(plan), "split", "file", enabled=progress and len(plan) >= 2000)
        for p, rel in plan:
            bar.update(1)
            _place(p, tmp / rel, mode, out_abs / rel)
            if carry_xml and p.with_suffix(".xml").is_file():
                _place(p.with_suffix(".xml"), (tmp / rel).with_suffix(".xml"), mode,
                       (out_abs / rel).with_suffix(".xml"))
        bar.close()
        (tmp / "split.json").write_text(json.dumps(record, indent=2) + "\n")
        if out_abs.is_dir():
            out_abs.rmdir()  # empty (checked above)
        os.replace(tmp, out_abs)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.debug("wrote %d train + %d val images of %d classes to %s (%s)", record["train"],
             record["val"], len(counts), out, mode)
    return record
