"""Indexing datasets as users have them: (path, label) lists plus optional class names,
boxes and multi-label vectors.

Layouts (``index_split(DIR, split)`` tries them in this order):

- class folders: ``DIR/<split>/<class>/**/*.jpg`` (ImageFolder; classes sorted; the val
  split takes its class list from ``DIR/train`` when that exists, so labels agree);
- ILSVRC-2012 flat val: ``DIR/val/ILSVRC2012_val_00000001.JPEG ...`` labelled by
  ``LOC_val_solution.csv`` (also gives boxes) or by the devkit's
  ``ILSVRC2012_validation_ground_truth.txt`` + ``meta.mat`` (searched in DIR, DIR/..,
  DIR/devkit/data, DIR/ILSVRC2012_devkit_t12/data);
- PASCAL VOC: ``DIR/JPEGImages``, ``DIR/Annotations``, ``DIR/ImageSets/Main/<split>.txt``
  (multi-label: every object class of an image);
- a file list ``DIR/<split>.csv`` (path,label per row; see ``index_csv``).

Boxes come from PASCAL VOC XML files, either beside each image (``a.jpg`` + ``a.xml``) or
in a parallel tree ``DIR/annotations/<split>/<same relative path>.xml`` (what ``vgg data
synth`` writes). ``read_voc_xml`` returns boxes in 0-based pixel-edge coordinates
``(name, x0, y0, x1, y1)`` (VOC files store 1-based inclusive pixel indices: x0 = xmin - 1,
x1 = xmax). Human-readable class names come from ``LOC_synset_mapping.txt`` /
``synset_words.txt`` ("n01440764 tench, Tinca tinca") when one is found next to the data.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp",
                              ".tif", ".tiff", ".webp", ".gif"})
NAME_FILES = ("LOC_synset_mapping.txt", "synset_words.txt", "class_names.txt")


class Box(NamedTuple):
    """One object: class name and 0-based pixel-edge coordinates (x1, y1 exclusive)."""
    name: str
    x0: float
    y0: float
    x1: float
    y1: float


@dataclass
class ImageIndex:
    """A dataset's files. ``samples[i] = (path, label)``; ``classes[label]`` is the class id
    (folder name / wnid); ``class_names`` maps ids to human-readable names; ``boxes`` maps a
    path to its objects; ``multilabels[i]`` lists every class index present in image i."""

    samples: list[tuple[Path, int]]
    classes: list[str]
    root: Path | None = None
    class_names: dict[str, str] | None = None
    boxes: dict[Path, list[Box]] | None = None
    multilabels: list[list[int]] | None = None
    meta: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def paths(self) -> list[Path]:
        return [p for p, _ in self.samples]

    @property
    def labels(self) -> list[int]:
        return [c for _, c in self.samples]

    def display_names(self) -> list[str]:
        """Class names for people (human-readable where known, else the ids)."""
        names = self.class_names or {}
        return [names.get(c, c) for c in self.classes]

    def label_matrix(self) -> np.ndarray:
        """(N, K) float32 multi-hot label vectors (the single label when not multi-label)."""
        y = np.zeros((len(self.samples), len(self.classes)), np.float32)
        for i, (_, c) in enumerate(self.samples):
            for k in (self.multilabels[i] if self.multilabels is not None else [c]):
                y[i, k] = 1.0
        return y

    def subset(self, indices: list[int] | np.ndarray) -> ImageIndex:
        idx = [int(i) for i in indices]
        samples = [self.samples[i] for i in idx]
        boxes = None if self.boxes is None else {
            p: self.boxes[p] for p, _ in samples if p in self.boxes}
        ml = None if self.multilabels is None else [self.multilabels[i] for i in idx]
        return ImageIndex(samples, list(self.classes), self.root, self.class_names, boxes,
                          ml, dict(self.meta))


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _walk_images(d: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(d, followlinks=True):
        dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if is_image_file(Path(f)))
    return out


def read_voc_xml(path: str | Path) -> list[Box]:
    """Objects of a PASCAL VOC / ILSVRC annotation file, 0-based pixel-edge coordinates."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise DataError(f"cannot read annotation {path}: {e}") from None
    boxes = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        bb = obj.find("bndbox")
        if not name or bb is None:
            continue
        try:
            x0, y0, x1, y1 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            raise DataError(f"bad bndbox in {path} for object {name!r}") from None
        boxes.append(Box(name, x0 - 1.0, y0 - 1.0, x1, y1))
    return boxes


def write_voc_xml(path: str | Path, filename: str, size: tuple[int, int],
                  boxes: list[Box], folder: str = "") -> None:
    """Write a VOC annotation (inverse of ``read_voc_xml``: 1-based inclusive integers)."""
    lines = ["<annotation>", f"  <folder>{folder}</folder>", f"  <filename>{filename}</filename>",
             f"  <size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"]
    for b in boxes:
        lines += ["  <object>", f"    <name>{b.name}</name>", "    <pose>Unspecified</pose>",
                  "    <truncated>0</truncated>", "    <difficult>0</difficult>",
                  f"    <bndbox><xmin>{int(round(b.x0)) + 1}</xmin><ymin>{int(round(b.y0)) + 1}"
                  f"</ymin><xmax>{int(round(b.x1))}</xmax><ymax>{int(round(b.y1))}</ymax>"
                  "</bndbox>", "  </object>"]
    lines.append("</annotation>")
    Path(path).write_text("\n".join(lines) + "\n")


def read_class_names(path: str | Path) -> dict[str, str]:
    """``wnid name, synonyms`` per line -> {wnid: name} (the first synonym)."""
    names = {}
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            names[parts[0]] = parts[1].split(",")[0].strip()
    return names


def _find_class_names(*dirs: Path) -> dict[str, str] | None:
    for d in dirs:
        for n in NAME_FILES:
            if (d / n).is_file():
                return read_class_names(d / n)
    return None


def _attach_annotations(index: ImageIndex, ann_root: Path | None, img_root: Path) -> None:
    """Boxes (and multi-labels) from VOC XML beside each image or under ``ann_root``."""
    boxes: dict[Path, list[Box]] = {}
    for p, _ in index.samples:
        cands = [p.with_suffix(".xml")]
        if ann_root is not None:
            try:
                cands.append((ann_root / p.relative_to(img_root)).with_suffix(".xml"))
            except ValueError:
                pass
        for x in cands:
            if x.is_file():
                boxes[p] = read_voc_xml(x)
                break
    if not boxes:
        return
    index.boxes = boxes
    pos = {c: i for i, c in enumerate(index.classes)}
    index.multilabels = [sorted({c} | {pos[b.name] for b in boxes.get(p, []) if b.name in pos})
                         for p, c in index.samples]


def index_folder(root: str | Path, classes: list[str] | None = None,
                 annotations: str | Path | None = None) -> ImageIndex:
    """ImageFolder layout ``root/<class>/**/<image>``; classes sorted (or given: then every
    folder must be one of them). Raises DataError naming ``root`` when missing or empty."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    dirs = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not dirs:
        raise DataError(f"no class folders in {root} (expected {root}/<class>/<image>)")
    if classes is None:
        classes = dirs
    else:
        unknown = sorted(set(dirs) - set(classes))
        if unknown:
            raise DataError(f"{root} has class folders not among the {len(classes)} known "
                            f"classes: {', '.join(unknown[:5])}")
    pos = {c: i for i, c in enumerate(classes)}
    samples = [(p, pos[d]) for d in dirs for p in _walk_images(root / d)]
    if not samples:
        raise DataError(f"no image files under {root} (extensions: "
                        f"{', '.join(sorted(IMAGE_EXTENSIONS))})")
    index = ImageIndex(samples, list(classes), root,
                       _find_class_names(root, root.parent), meta={"layout": "folders"})
    _attach_annotations(index, None if annotations is None else Path(annotations), root)
    return index


def _imagenet_val_files(val_dir: Path) -> list[Path]:
    return sorted(p for p in val_dir.iterdir() if p.is_file() and is_image_file(p))


def _read_meta_mat(path: Path) -> dict[int, tuple[str, str]]:
    """devkit meta.mat -> {ILSVRC2012_ID: (wnid, words)} for the leaf synsets."""
    try:
        from scipy.io import loadmat
    except ImportError:  # pragma: no cover - scipy is a test dependency
        raise DataError(f"reading {path} needs scipy (pip install scipy)") from None
    try:
        synsets = loadmat(str(path), squeeze_me=True)["synsets"]
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"cannot read devkit meta {path}: {e}") from None
    out = {}
    for s in np.atleast_1d(synsets):
        if int(s["num_children"]) == 0:
            out[int(s["ILSVRC2012_ID"])] = (str(s["WNID"]), str(s["words"]))
    return out


def _parse_loc_solution(path: Path) -> dict[str, list[Box]]:
    """LOC_val_solution.csv: ImageId,PredictionString ("wnid x0 y0 x1 y1 ...")."""
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            toks = row["PredictionString"].split()
            out[row["ImageId"]] = [Box(toks[i], *(float(v) for v in toks[i + 1:i + 5]))
                                   for i in range(0, len(toks) - 4, 5)]
    return out


def index_imagenet_val(val_dir: str | Path, *, classes: list[str] | None = None,
                       solution_csv: str | Path | None = None,
                       ground_truth: str | Path | None = None, meta: str | Path | None = None,
                       class_names: dict[str, str] | None = None) -> ImageIndex:
    """ILSVRC-2012 flat val (``ILSVRC2012_val_*.JPEG``) labelled by ``LOC_val_solution.csv``
    or by the devkit ground truth (1-based ILSVRC2012_IDs in file order) + ``meta.mat``.
    ``classes`` (the training wnids, sorted) fix the label numbering; without them the
    wnids found are sorted."""
    val_dir = Path(val_dir)
    files = _imagenet_val_files(val_dir)
    if not files:
        raise DataError(f"no images in {val_dir}")
    boxes = None
    if solution_csv is not None:
        sol = _parse_loc_solution(Path(solution_csv))
        missing = [p.name for p in files if p.stem not in sol]
        if missing:
            raise DataError(f"{solution_csv} has no label for {len(missing)} images "
                            f"of {val_dir}, e.g. {missing[0]}")
        boxes = {p: sol[p.stem] for p in files}
        wnids = [sol[p.stem][0].name for p in files]
        source = str(solution_csv)
    elif ground_truth is not None:
        if meta is None:
            raise DataError(f"{ground_truth} needs the devkit's meta.mat (ILSVRC2012_ID -> "
                            "wnid)")
        id_map = _read_meta_mat(Path(meta))
        ids = [int(t) for t in Path(ground_truth).read_text().split()]
        if len(ids) != len(files):
            raise DataError(f"{ground_truth} has {len(ids)} labels but {val_dir} has "
                            f"{len(files)} images")
        try:
            wnids = [id_map[i][0] for i in ids]
        except KeyError as e:
            raise DataError(f"{ground_truth}: ILSVRC2012_ID {e} not in {meta}") from None
        if class_names is None:
            class_names = {w: words.split(",")[0].strip() for w, words in id_map.values()}
        source = str(ground_truth)
    else:
        raise DataError(f"{val_dir} is a flat folder of images but no labels were found "
                        "(LOC_val_solution.csv, or the devkit's "
                        "ILSVRC2012_validation_ground_truth.txt + meta.mat)")
    if classes is None:
        classes = sorted(set(wnids))
    pos = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(wnids) - set(pos))
    if unknown:
        raise DataError(f"{source} names classes not in the training set: {unknown[:5]}")
    samples = [(p, pos[w]) for p, w in zip(files, wnids)]
    index = ImageIndex(samples, list(classes), val_dir, class_names, boxes,
                       meta={"layout": "imagenet-flat-val", "labels": source})
    if boxes is not None:
        index.multilabels = [[c] for _, c in samples]
    return index


def index_csv(path: str | Path, root: str | Path | None = None,
              classes: list[str] | None = None) -> ImageIndex:
    """A file list: rows ``path,label`` (an optional header naming ``path``/``label``
    columns; paths relative to ``root``, default the CSV's folder). Labels are class names,
    or integers (then classes are "0".."max"); several labels separated by ``;`` or spaces
    make a multi-label set (the first is the primary label)."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r and not r[0].startswith("#")]
    except OSError as e:
        raise DataError(f"cannot read file list {path}: {e}") from None
    if rows and rows[0][0].strip().lower() in ("path", "file", "filename", "image"):
        rows = rows[1:]
    if not rows:
        raise DataError(f"file list {path} is empty")
    bad = [i for i, r in enumerate(rows) if len(r) < 2 or not r[1].strip()]
    if bad:
        raise DataError(f"{path}: row {bad[0] + 1} needs 'path,label'")
    labels = [re.split(r"[;\s]+", r[1].strip()) for r in rows]
    if classes is None:
        flat = {t for ts in labels for t in ts}
        if all(t.isdigit() for t in flat):
            classes = [str(i) for i in range(max(int(t) for t in flat) + 1)]
        else:
            classes = sorted(flat)
    pos = {c: i for i, c in enumerate(classes)}
    samples, multi = [], []
    for r, ts in zip(rows, labels):
        try:
            ks = [pos[t] for t in ts]
        except KeyError as e:
            raise DataError(f"{path}: unknown label {e} for {r[0]}") from None
        p = Path(r[0].strip())
        samples.append((p if p.is_absolute() else root / p, ks[0]))
        multi.append(sorted(set(ks)))
    index = ImageIndex(samples, list(classes), root, _find_class_names(root, path.parent),
                       meta={"layout": "csv", "file": str(path)})
    if any(len(m) > 1 for m in multi):
        index.multilabels = multi
    return index


def index_voc(root: str | Path, split: str) -> ImageIndex:
    """PASCAL VOC (``root`` = VOCdevkit/VOC2007): JPEGImages + Annotations +
    ImageSets/Main/<split>.txt; multi-label over the object classes found (sorted)."""
    root = Path(root)
    ids_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not ids_file.is_file():
        raise DataError(f"VOC split list not found: {ids_file}")
    ids = [t.split()[0] for t in ids_file.read_text().splitlines() if t.strip()]
    if not ids:
        raise DataError(f"{ids_file} lists no images")
    boxes = {}
    for i in ids:
        boxes[root / "JPEGImages" / f"{i}.jpg"] = read_voc_xml(root / "Annotations" / f"{i}.xml")
    classes = sorted({b.name for bs in boxes.values() for b in bs})
    pos = {c: k for k, c in enumerate(classes)}
    samples, multi = [], []
    for p, bs in boxes.items():
        ks = sorted({pos[b.name] for b in bs})
        samples.append((p, ks[0] if ks else 0))
        multi.append(ks)
    return ImageIndex(samples, classes, root, None, boxes, multi,
                      meta={"layout": "voc", "split": split})


def _first_file(names: tuple[str, ...], dirs: list[Path]) -> Path | None:
    for d in dirs:
        for n in names:
            if (d / n).is_file():
                return d / n
    return None


def _train_classes(data_dir: Path) -> list[str] | None:
    train = data_dir / "train"
    if not train.is_dir():
        return None
    dirs = sorted(d.name for d in train.iterdir() if d.is_dir() and not d.name.startswith("."))
    return dirs or None


def index_split(data_dir: str | Path, split: str = "train",
                classes: list[str] | None = None) -> ImageIndex:
    """Index ``split`` ("train" or "val") of ``data_dir`` in whichever layout it has (see
    the module docstring). Raises DataError naming the path when missing or empty."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"dataset folder not found: {data_dir}")
    if split not in ("train", "val", "test", "trainval"):
        raise DataError(f"unknown split {split!r} (train, val, test or trainval)")
    split_dir = data_dir / split
    ann = data_dir / "annotations" / split
    if classes is None and split != "train":
        classes = _train_classes(data_dir)
    names_dirs = [data_dir, data_dir.parent, data_dir / "devkit" / "data",
                  data_dir / "ILSVRC2012_devkit_t12" / "data", data_dir / "LOC"]
    if split_dir.is_dir():
        has_dirs = any(d.is_dir() and not d.name.startswith(".") for d in split_dir.iterdir())
        if has_dirs:
            index = index_folder(split_dir, classes, ann if ann.is_dir() else None)
        else:
            sol = _first_file((f"LOC_{split}_solution.csv",), names_dirs)
            gt = _first_file((f"ILSVRC2012_{'validation' if split == 'val' else split}"
                              "_ground_truth.txt",), names_dirs)
            meta = _first_file(("meta.mat",), names_dirs)
            names = _find_class_names(*names_dirs)
            index = index_imagenet_val(split_dir, classes=classes, solution_csv=sol,
                                       ground_truth=None if sol else gt, meta=meta,
                                       class_names=names)
            if names is not None:
                index.class_names = names
        if index.class_names is None:
            index.class_names = _find_class_names(*names_dirs)
        return index
    if (data_dir / "ImageSets" / "Main" / f"{split}.txt").is_file():
        return index_voc(data_dir, split)
    if (data_dir / f"{split}.csv").is_file():
        return index_csv(data_dir / f"{split}.csv", data_dir, classes)
    raise DataError(f"no {split} split in {data_dir}: expected {split_dir}/<class>/<image>, "
                    f"a flat {split_dir} with ImageNet labels, a VOC ImageSets/Main/{split}.txt "
                    f"or {data_dir / (split + '.csv')}")
