"""Indexing a dataset folder as users have it, in whichever layout it has: (path, label)
lists plus class names (folder names, wnids, XML or CSV class names), optional boxes and
multi-label vectors.

Layouts (``index_split(DIR, split)`` tries them in this order; ``split`` is any name):

- class folders: ``DIR/<split>/<class>/**/<image>`` (ImageFolder; classes sorted; any
  split other than train takes its class list from ``DIR/train`` when that exists, so
  labels agree);
- ILSVRC-2012 flat val: ``DIR/val/ILSVRC2012_val_00000001.JPEG ...`` labelled by
  ``LOC_val_solution.csv`` (also gives boxes) or by the devkit's
  ``ILSVRC2012_validation_ground_truth.txt`` + ``meta.mat`` (searched in DIR, DIR/..,
  DIR/devkit/data, DIR/ILSVRC2012_devkit_t12/data, DIR/LOC);
- PASCAL VOC: ``DIR/JPEGImages``, ``DIR/Annotations``, ``DIR/ImageSets/Main/<split>.txt``
  (multi-label: every object class of an image);
- a file list ``DIR/<split>.csv`` or ``DIR/<split>.txt`` (a path per line, with its
  label or in a class folder; see ``index_list``, which also reads lists given by name:
  ``vgg train --train-list`` / ``--val-list``);
- an object-detection CSV ``DIR/<split>_labels.csv`` (or ``DIR/<split>.csv`` with that
  header): ``filename,width,height,class,xmin,ymin,xmax,ymax`` per box, images in DIR or
  ``DIR/images`` (the raccoon dataset's layout); an image's label is the class of its
  largest box.

Each layout has its module: ``imagefolder`` (class folders, flat val), ``annotated``
(VOC, detection CSV), ``lists`` (file lists); ``scan`` says how folders are walked and which
files are images; every indexer returns an ``index.ImageIndex``.

Boxes (see ``annotations``): ``index_split`` attaches the XML beside the images or in
``DIR/annotations/<split>/`` and the boxes of the layouts that define them (LOC CSV, VOC,
detection CSV); ``load_boxes(index)`` finds the other sources (ILSVRC bbox folders, ...).
Human-readable class names come from ``LOC_synset_mapping.txt`` / ``synset_words.txt``
("n01440764 tench, Tinca tinca") when one is found next to the data.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .annotated import index_detection_csv, index_voc
from .annotations import load_boxes
from .box_formats import csv_kind, read_voc_xml, write_voc_xml
from .box_sources import CsvSource, label_dirs
from .boxes import Box, BoxReport
from .class_names import find_class_names, read_class_names
from .decode import IMAGE_EXTENSIONS
from .imagefolder import index_folder, index_imagenet_val
from .index import ImageIndex
from .lists import index_csv, index_list
from .scan import FileScan, is_image_file, list_images, scan_images, subfolders

# the names this module had before its layouts got modules of their own are kept here
__all__ = ["IMAGE_EXTENSIONS", "Box", "BoxReport", "FileScan", "ImageIndex", "index_csv",
           "index_list", "index_detection_csv", "index_folder", "index_imagenet_val",
           "index_split", "has_split", "index_voc", "is_image_file", "list_images",
           "load_boxes", "read_class_names", "read_voc_xml", "scan_images", "write_voc_xml"]


def _first_file(names: tuple[str, ...], dirs: list[Path]) -> Path | None:
    for d in dirs:
        for n in names:
            if (d / n).is_file():
                return d / n
    return None


def _csv_classes(path: Path) -> list[str] | None:
    try:
        return CsvSource(path, "detection").class_names() or None
    except DataError:
        return None


def _train_classes(data_dir: Path) -> list[str] | None:
    """The class names of DIR's train split (class folders, or a detection CSV)."""
    train = data_dir / "train"
    if train.is_dir():
        return subfolders(train) or None
    f = data_dir / "train_labels.csv"
    if f.is_file() and csv_kind(f) == "detection":
        return _csv_classes(f)
    return None


_NOT_SPLITS = {"annotations", "Annotations", "ImageSets", "JPEGImages", "images",
               "SegmentationClass", "SegmentationObject", "devkit", "LOC"}


def _what_is_there(data_dir: Path) -> str:
    folders = [d for d in subfolders(data_dir) if d not in _NOT_SPLITS]
    lists = sorted(f.name for f in data_dir.iterdir()
                   if f.is_file() and f.suffix.lower() in (".csv", ".txt")
                   and not f.name.startswith("."))
    main = data_dir / "ImageSets" / "Main"
    voc = sorted(f.stem for f in main.glob("*.txt") if "_" not in f.stem) if main.is_dir() \
        else []
    parts = []
    if folders:
        parts.append("folders " + ", ".join(folders[:12]) + (" ..." if len(folders) > 12 else ""))
    if lists:
        splits = sorted({n.rsplit(".", 1)[0].removesuffix("_labels") for n in lists})
        parts.append("list files " + ", ".join(lists[:12])
                     + f" (splits {', '.join(splits[:12])})")
    if voc:
        parts.append("VOC splits " + ", ".join(voc))
    return "; it has " + "; ".join(parts) if parts else "; it holds no folder or list file"


def has_split(data_dir: str | Path, split: str) -> bool:
    """Whether ``data_dir`` holds ``split`` in one of the layouts ``index_split`` reads."""
    d = Path(data_dir)
    return ((d / split).is_dir() or (d / "ImageSets" / "Main" / f"{split}.txt").is_file()
            or (d / f"{split}.csv").is_file() or (d / f"{split}.txt").is_file()
            or (d / f"{split}_labels.csv").is_file())


def index_split(data_dir: str | Path, split: str = "train",
                classes: list[str] | None = None) -> ImageIndex:
    """Index split ``split`` (any name: train, val, test, valid, holdout, ...) of
    ``data_dir`` in whichever layout it has (see the module docstring). A split other
    than train takes its class list from the train split when there is one (and
    ``classes`` is not given), so labels agree by class name. Raises DataError naming the
    path, and listing the folders and list files that are there, when nothing matches."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"dataset folder not found: {data_dir}")
    if not split or split in (".", "..") or "/" in split or "\\" in split:
        raise DataError(f"bad split name {split!r}: give the name of a folder or list file "
                        f"of {data_dir}{_what_is_there(data_dir)}")
    if classes is None and split != "train":
        classes = _train_classes(data_dir)
    index = _index_split(data_dir, split, classes)
    index.meta.setdefault("data_dir", str(data_dir))
    index.meta["split"] = split
    return index


def _index_split(data_dir: Path, split: str, classes: list[str] | None) -> ImageIndex:
    split_dir = data_dir / split
    names_dirs = label_dirs(data_dir)
    if split_dir.is_dir():
        ann = data_dir / "annotations" / split
        if subfolders(split_dir):
            index = index_folder(split_dir, classes, ann if ann.is_dir() else None)
        else:
            sol = _first_file((f"LOC_{split}_solution.csv",), names_dirs)
            gt = _first_file((f"ILSVRC2012_{'validation' if split == 'val' else split}"
                              "_ground_truth.txt",), names_dirs)
            meta = _first_file(("meta.mat",), names_dirs)
            names = find_class_names(*names_dirs)
            index = index_imagenet_val(split_dir, classes=classes, solution_csv=sol,
                                       ground_truth=None if sol else gt, meta=meta,
                                       class_names=names)
            if names is not None:
                index.class_names = names
        if index.class_names is None:
            index.class_names = find_class_names(*names_dirs)
        return index
    if (data_dir / "ImageSets" / "Main" / f"{split}.txt").is_file():
        return index_voc(data_dir, split, classes)
    lists = [data_dir / f"{split}.csv", data_dir / f"{split}.txt"]
    if split.lower().endswith((".csv", ".txt")):
        lists.insert(0, data_dir / split)
    for f in lists:
        if f.is_file():
            if f.suffix.lower() == ".csv" and csv_kind(f) == "detection":
                return index_detection_csv(f, data_dir, classes)
            return index_list(f, data_dir, classes)
    f = data_dir / f"{split}_labels.csv"
    if f.is_file() and csv_kind(f) == "detection":
        return index_detection_csv(f, data_dir, classes)
    raise DataError(f"no {split} split in {data_dir}{_what_is_there(data_dir)}. Expected "
                    f"{split_dir}/<class>/<image>, a flat {split_dir} with ImageNet labels, "
                    f"ImageSets/Main/{split}.txt (VOC), {split}.csv / {split}.txt (file list) "
                    f"or {split}_labels.csv (detection CSV)")
