"""Which images of a dataset folder train and which validate.

Three ways to say it, all giving ``ImageIndex`` objects of the one data layer (so the
trainer, the localisation trainer and the evaluator see the same images for the same
flags):

- the folder's own splits: ``DIR/train`` and ``DIR/val`` in any layout ``index_split``
  reads (the default);
- file lists named by the user, ``--train-list FILE`` / ``--val-list FILE``: one image a
  line, ``class/file.jpg`` (Caltech-101's ``train.txt`` / ``test.txt``) or ``path,label``,
  paths relative to DIR (``index_list``); the val list's labels must be classes of the
  training set;
- ``--val-split FRACTION``: a stratified, seeded part of the training images held out for
  validation (``vgg.data.split.stratified_split``, the split ``vgg data split`` writes as
  a tree), for a folder of class folders with no val split (or a training list).

The training and validation images must be disjoint (a file in both is an error naming
it). ``fingerprint`` identifies a set of images (relative paths and class names, in
order), so that a resumed run can check it trains on the same images.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from ..settings import MAX_SEED, check_float, check_int, check_str
from .folders import has_split, index_split
from .imagefolder import index_folder
from .index import ImageIndex
from .lists import index_list
from .split import split_index

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSpec:
    """Where a run's images come from: ``data`` (DIR), optional ``train_list`` /
    ``val_list`` (files; paths inside them are relative to DIR) and ``val_split`` (the
    fraction of each class held out for validation, drawn with ``split_seed``)."""

    data: str
    train_list: str | None = None
    val_list: str | None = None
    val_split: float | None = None
    split_seed: int = 0

    def __post_init__(self) -> None:
        check_str("data", self.data, allow_none=False)
        for name in ("train_list", "val_list"):
            check_str(name, getattr(self, name))
        if self.val_split is not None:
            object.__setattr__(self, "val_split", check_float(
                "val_split", self.val_split, 0.0, 1.0, lo_open=True, hi_open=True))
        object.__setattr__(self, "split_seed", check_int("split_seed", self.split_seed, 0,
                                                         MAX_SEED))
        if self.val_split is not None and self.val_list is not None:
            raise ConfigError("give --val-list or --val-split, not both: --val-split holds "
                              "out part of the training images, --val-list names the "
                              "validation images")

    @classmethod
    def of(cls, cfg: Any) -> DataSpec:
        """The spec of an object with these attributes (a ``TrainConfig``)."""
        return cls(str(cfg.data), cfg.train_list, cfg.val_list, cfg.val_split,
                   cfg.split_seed)

    @property
    def from_lists(self) -> bool:
        return self.train_list is not None or self.val_list is not None

    def describe(self) -> str:
        """The flags that chose the images, for log lines and messages."""
        parts = [f"--data {self.data}"]
        if self.train_list:
            parts.append(f"--train-list {self.train_list}")
        if self.val_list:
            parts.append(f"--val-list {self.val_list}")
        if self.val_split is not None:
            parts.append(f"--val-split {self.val_split:g} --split-seed {self.split_seed}")
        return " ".join(parts)


def find_list(name: str | os.PathLike[str], data: str | os.PathLike[str], flag: str) -> Path:
    """The list file ``name``: as given (absolute, or relative to the current folder),
    else relative to the data folder. DataError naming both places when it is in
    neither."""
    p = Path(name)
    if p.is_file():
        return p
    if not p.is_absolute() and (Path(data) / p).is_file():
        return Path(data) / p
    if p.is_dir():
        raise DataError(f"{flag} {name} is a folder; give a file list (one image a line)")
    if p.is_absolute():
        raise DataError(f"{flag}: file list not found: {p}")
    raise DataError(f"{flag}: file list not found: {p} (looked in the current folder and in "
                    f"{data})")


def _check_data(data: str) -> Path:
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    return root


def training_pool(spec: DataSpec) -> ImageIndex:
    """The training images before any ``--val-split``: the train list, else DIR's train
    split, else (with ``--val-split``) DIR itself as a folder of class folders."""
    root = _check_data(spec.data)
    if spec.train_list is not None:
        return index_list(find_list(spec.train_list, root, "--train-list"), root)
    if has_split(root, "train"):
        return index_split(root, "train")
    if spec.val_split is not None:
        return index_folder(root)
    try:
        return index_split(root, "train")  # raises, saying what DIR holds
    except DataError as e:
        raise DataError(f"{e}. For one folder of class folders without a split, give "
                        f"--val-split FRACTION; for split files, --train-list and "
                        f"--val-list") from None


def train_val_indexes(spec: DataSpec) -> tuple[ImageIndex, ImageIndex]:
    """(train, val) indexes with the same class list (the training set's, sorted class
    names); raises DataError naming the culprit for a missing list or listed file, a
    val label that is no class of the training set, images in both sets, or no way to
    find validation images."""
    root = _check_data(spec.data)
    if spec.val_split is not None and spec.train_list is None and has_split(root, "val"):
        raise ConfigError(f"{root} has a val split already: --val-split would leave it "
                          f"unused; drop --val-split (or choose the images with "
                          f"--train-list / --val-list)")
    pool = training_pool(spec)
    if spec.val_split is not None:
        train, val = split_index(pool, spec.val_split, spec.split_seed)
    else:
        train = pool
        known = (f"the training list {spec.train_list}" if spec.train_list
                 else f"the training set of {root}")
        if spec.val_list is not None:
            val = index_list(find_list(spec.val_list, root, "--val-list"), root,
                             classes=list(train.classes), known=known)
        elif has_split(root, "val"):
            val = index_split(root, "val", classes=list(train.classes))
        else:
            raise DataError(f"no validation images: {root} has no val split; give "
                            f"--val-list FILE or --val-split FRACTION")
    check_disjoint(train, val)
    absent = sorted(set(range(len(train.classes))) - {c for _, c in val.samples})
    if absent:
        log.info("the validation set has no image of %d of the %d classes (%s%s)",
                 len(absent), len(train.classes),
                 ", ".join(train.classes[c] for c in absent[:5]),
                 " ..." if len(absent) > 5 else "")
    log.info("data: %d training and %d validation images of %d classes (%s)", len(train),
             len(val), len(train.classes), spec.describe())
    return train, val


def eval_index(spec: DataSpec, split: str | None = None, classes: list[str] | None = None,
               known: str = "the net") -> ImageIndex:
    """The images ``vgg evaluate`` scores: the ``--val-list`` (labels must be among
    ``classes``, the net's, named ``known`` in messages), or the part of the training
    images a run with the same ``--val-split`` / ``--split-seed`` (and ``--train-list``)
    validated on, or split ``split`` of DIR (default val when there is one, else DIR
    itself as class folders)."""
    root = _check_data(spec.data)
    if spec.from_lists or spec.val_split is not None:
        if split is not None:
            raise ConfigError("give --split, or --val-list / --val-split, not both")
        if spec.val_list is not None:
            if spec.train_list is not None:
                raise ConfigError("give --val-list alone: evaluation scores the images of "
                                  "one list (--train-list goes with --val-split, to score "
                                  "the part of it a training run held out)")
            return index_list(find_list(spec.val_list, root, "--val-list"), root,
                              classes=classes, known=known)
        if spec.val_split is None:
            raise ConfigError("--train-list needs --val-split here: evaluation scores the "
                              "held-out part of the training list (or give the images to "
                              "score as --val-list)")
        return split_index(training_pool(spec), spec.val_split, spec.split_seed)[1]
    if split is not None or (root / "val").is_dir():
        return index_split(root, split or "val", classes)
    return index_folder(root, classes)


def _keys(index: ImageIndex) -> list[str]:
    """Normalised absolute path strings (one getcwd for all: 1.3M paths in about 1 s)."""
    cwd = os.getcwd()
    return [os.path.normpath(os.path.join(cwd, os.fspath(p))) for p, _ in index.samples]


def check_disjoint(train: ImageIndex, val: ImageIndex) -> None:
    """DataError when a file is both a training and a validation image (by its normalised
    absolute path)."""
    seen = set(_keys(train))
    both = [k for k in _keys(val) if k in seen]
    if both:
        shown = ", ".join(both[:3]) + (f" and {len(both) - 3} more" if len(both) > 3 else "")
        raise DataError(f"{len(both)} image(s) are both training and validation images "
                        f"({shown}): validating on trained images hides over-fitting; "
                        f"fix the lists")


def fingerprint(index: ImageIndex) -> dict[str, Any]:
    """``{"images": N, "sha256": ...}`` of the images in order, by path relative to the
    index's root and class name: equal for the same images however the folder is
    reached (a moved dataset), different when a file, a label or the order changes."""
    prefix = os.fspath(index.root) + os.sep if index.root is not None else None
    lines = []
    for p, c in index.samples:
        s = os.fspath(p)
        if prefix is not None and s.startswith(prefix):
            s = s[len(prefix):]
        lines.append(f"{s.replace(os.sep, '/')}\t{index.classes[c]}\n")
    digest = hashlib.sha256("".join(lines).encode("utf-8", "surrogateescape")).hexdigest()
    return {"images": len(index), "sha256": digest}


def check_same_images(saved: dict[str, Any] | None, now: dict[str, dict[str, Any]],
                      run: str) -> None:
    """On resume: the run's recorded fingerprints (``meta["data"]``) must equal the data's
    now. Runs written before fingerprints were recorded are not checked."""
    if not saved:
        return
    for part in ("train", "val"):
        a, b = saved.get(part), now.get(part)
        if a and b and a.get("sha256") != b.get("sha256"):
            what = "training" if part == "train" else "validation"
            raise DataError(f"--resume {run}: the {what} images differ from those the run "
                            f"was trained with ({a.get('images')} images then, "
                            f"{b.get('images')} now, or other files / labels / order); a "
                            f"run resumes on the same data (same lists, split and files). "
                            f"To go on with other data, start a new run with "
                            f"--finetune-from {Path(run) / 'last.pt'}")
