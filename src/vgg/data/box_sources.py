"""Where the box annotations of a set of images are: a ``BoxSource`` gives each image's
annotation as written (``box_formats``), found by the image's path. Sources: VOC XML
beside the images or in a folder tree (synth's parallel tree, VOC devkits, ILSVRC bbox
folders), a LOC solution CSV or a detection CSV, or annotations already parsed by an
indexer. ``find_box_source`` looks for one next to the data; ``as_box_source`` takes the
path a user gave.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from ..errors import DataError
from .box_formats import (RawAnnotation, csv_header, csv_kind, parse_voc_xml,
                          read_detection_csv, read_loc_csv)


class BoxSource(Protocol):
    """Where an index's annotations come from: ``find(path)`` gives an image's annotation
    (None when it has none), ``missing(path)`` says what was looked for."""

    description: str

    def find(self, path: Path) -> RawAnnotation | None: ...

    def missing(self, path: Path) -> str: ...

    def unmatched(self) -> int: ...


class XmlTree:
    """One VOC XML file per image: beside it, and/or under ``root`` at the image's relative
    path, ``<split>/<relative path>``, ``<class folder>/<stem>``, ``<stem>`` or
    ``Annotations/<stem>`` (covers synth, VOC devkits and the ILSVRC bbox folders)."""

    def __init__(self, root: Path | None, img_root: Path | None, split: str = "",
                 beside: bool = False) -> None:
        self.root, self.img_root, self.split, self.beside = root, img_root, split, beside
        where = [str(root)] if root is not None else []
        if beside:
            where.append("XML beside each image")
        self.description = " + ".join(where)

    def candidates(self, p: Path) -> list[Path]:
        out = [p.with_suffix(".xml")] if self.beside else []
        r = self.root
        if r is not None:
            stem = p.stem + ".xml"
            rel = None
            if self.img_root is not None:
                try:
                    rel = p.relative_to(self.img_root).with_suffix(".xml")
                except ValueError:
                    rel = None
            subs = [r] + ([r / self.split] if self.split else [])
            for s in subs:
                if rel is not None:
                    out.append(s / rel)
                out += [s / p.parent.name / stem, s / stem]
            out.append(r / "Annotations" / stem)
        return list(dict.fromkeys(out))  # without repeats, in order

    def find(self, path: Path) -> RawAnnotation | None:
        for c in self.candidates(path):
            if c.is_file():
                return parse_voc_xml(c)
        return None

    def missing(self, path: Path) -> str:
        c = self.candidates(path)
        shown = ", ".join(str(x) for x in c[:3])
        return f"no annotation XML (looked for {shown}{' ...' if len(c) > 3 else ''})"

    def unmatched(self) -> int:
        return 0


class CsvSource:
    """A LOC solution CSV (matched by file stem) or a detection CSV (matched by path, the
    CSV's filename resolved against its folder and ``images/``, else by unique name)."""

    def __init__(self, path: str | Path, kind: str | None = None,
                 image_dirs: Sequence[Path] = ()) -> None:
        self.path = Path(path)
        self.kind = kind or csv_kind(self.path)
        if self.kind is None:
            raise DataError(f"{self.path}: unknown CSV annotation format (header "
                            f"{','.join(csv_header(self.path))!r}); expected ImageId,"
                            "PredictionString or filename,width,height,class,xmin,ymin,xmax,ymax")
        self.description = str(self.path)
        self.entries = (read_loc_csv(self.path) if self.kind == "loc"
                        else read_detection_csv(self.path))
        self._used: set[str] = set()
        self._by_path: dict[str, str] = {}
        self._by_name: dict[str, str | None] = {}
        if self.kind == "detection":
            dirs = [self.path.parent, self.path.parent / "images", *image_dirs]
            for key in self.entries:
                for d in dirs:
                    self._by_path.setdefault(os.path.abspath(d / key), key)
                name = Path(key).name
                self._by_name[name] = None if name in self._by_name else key

    def class_names(self) -> list[str]:
        """The class names of its boxes, sorted."""
        return sorted({o.name for a in self.entries.values() for o in a.objects if o.name})

    def image_path(self, key: str, dirs: Sequence[Path] = ()) -> Path | None:
        """The existing image file a detection-CSV filename names, or None."""
        for d in (self.path.parent, self.path.parent / "images", *dirs):
            if (d / key).is_file():
                return d / key
        return None

    def find(self, path: Path) -> RawAnnotation | None:
        if self.kind == "loc":
            key: str | None = path.stem if path.stem in self.entries else None
        else:
            key = self._by_path.get(os.path.abspath(path))
            if key is None:
                key = self._by_name.get(path.name)
        if key is None:
            return None
        self._used.add(key)
        return self.entries[key]

    def missing(self, path: Path) -> str:
        what = path.stem if self.kind == "loc" else path.name
        return f"not in {self.path.name} ({what})"

    def unmatched(self) -> int:
        return len(self.entries) - len(self._used)


class GivenAnnotations:
    """Annotations already parsed, keyed by image path (indexers that parse first)."""

    def __init__(self, anns: dict[Path, RawAnnotation], description: str,
                 missing_hint: str = "no annotation") -> None:
        self.anns, self.description, self._hint = anns, description, missing_hint

    def find(self, path: Path) -> RawAnnotation | None:
        return self.anns.get(path)

    def missing(self, path: Path) -> str:
        return self._hint

    def unmatched(self) -> int:
        return 0


def label_dirs(data_dir: Path) -> list[Path]:
    """Where ImageNet label files (LOC CSVs, devkit files, synset lists) are looked for."""
    return [data_dir, data_dir.parent, data_dir / "devkit" / "data",
            data_dir / "ILSVRC2012_devkit_t12" / "data", data_dir / "LOC"]


def find_box_source(data_dir: Path | None, split: str, img_root: Path | None,
                    paths: Sequence[Path]) -> BoxSource:
    """The annotations that go with the images ``paths`` (under ``img_root``) of split
    ``split`` of ``data_dir``, looked for next to the data (see ``load_boxes``). Raises
    DataError listing the places looked at when none is found."""
    data_dir = Path(data_dir or img_root or ".")
    looked: list[str] = []

    def tree(d: Path, beside: bool = False) -> XmlTree | None:
        looked.append(str(d))
        return XmlTree(d, img_root, split, beside) if d.is_dir() else None

    src: BoxSource | None = tree(data_dir / "annotations" / split, beside=True)
    if src is not None:
        return src
    for d in label_dirs(data_dir):
        f = d / f"LOC_{split}_solution.csv"
        looked.append(str(f))
        if f.is_file():
            return CsvSource(f, "loc")
    for b in [data_dir, data_dir.parent]:
        # the official folders first (ILSVRC2012_bbox_train_dogs is a subset)
        found = [b / f"ILSVRC2012_bbox_{split}_v{v}" for v in (2, 3)]
        found += sorted(b.glob(f"ILSVRC20*_bbox_{split}_*")) if b.is_dir() else []
        for d in found:
            if d.is_dir():
                return XmlTree(d, img_root, split)
        looked.append(str(b / f"ILSVRC2012_bbox_{split}_*"))
    for b in [data_dir, data_dir / "ILSVRC", data_dir.parent, data_dir.parent.parent]:
        src = tree(b / "Annotations" / "CLS-LOC" / split)
        if src is not None:
            return src
    f = data_dir / f"{split}_labels.csv"
    looked.append(str(f))
    if f.is_file() and csv_kind(f) == "detection":
        return CsvSource(f, "detection", [data_dir, data_dir / "images"])
    for name in ("Annotations", "annotations"):
        src = tree(data_dir / name)
        if src is not None:
            return src
    looked.append("XML beside the images")
    if any(p.with_suffix(".xml").is_file() for p in paths):
        return XmlTree(None, img_root, split, beside=True)
    raise DataError(f"no box annotations found for {data_dir} (split {split}); looked for "
                    + ", ".join(looked))


def as_box_source(source: str | Path, data_dir: Path | None, img_root: Path | None,
                  split: str = "") -> BoxSource:
    """A path given by the user: a CSV file (LOC or detection, by its header; its images
    looked for in ``data_dir``, default ``img_root``) or a folder of XML files."""
    p = Path(source)
    if p.is_file():
        if p.suffix.lower() == ".xml":
            raise DataError(f"{p} is one annotation file; give the folder that holds the "
                            "XML files of the images")
        data_dir = Path(data_dir or img_root or p.parent)
        return CsvSource(p, None, [data_dir, data_dir / "images"])
    if p.is_dir():
        return XmlTree(p, img_root, split)
    raise DataError(f"annotation source not found: {p}")
