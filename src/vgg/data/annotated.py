"""Datasets labelled by their box annotations: a PASCAL VOC devkit split (multi-label over
the object classes, VOC's "difficult" objects kept apart) and an object-detection CSV
(the raccoon dataset's ``train_labels.csv``; an image's label is the class of its largest
box)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import DataError
from .annotations import attach_boxes
from .box_formats import parse_voc_xml
from .box_sources import CsvSource, GivenAnnotations
from .boxes import MAX_NAMED
from .class_names import find_class_names
from .index import ImageIndex

log = logging.getLogger(__name__)

__all__ = ["index_detection_csv", "index_voc"]


def index_voc(root: str | Path, split: str, classes: list[str] | None = None) -> ImageIndex:
    """PASCAL VOC (``root`` = VOCdevkit/VOC2007): JPEGImages + Annotations +
    ImageSets/Main/<split>.txt; multi-label over the object classes (sorted names found, or
    ``classes``). Bad annotations are counted in ``box_report`` (an image with no usable
    object gets label 0 and an empty label set)."""
    root = Path(root)
    ids_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not ids_file.is_file():
        raise DataError(f"VOC split list not found: {ids_file}")
    ids = [t.split()[0] for t in ids_file.read_text().splitlines() if t.strip()]
    if not ids:
        raise DataError(f"{ids_file} lists no images")
    paths = [root / "JPEGImages" / f"{i}.jpg" for i in ids]
    anns = {}
    for i, p in zip(ids, paths):
        x = root / "Annotations" / f"{i}.xml"
        if x.is_file():
            anns[p] = parse_voc_xml(x)
    if classes is None:
        classes = sorted({o.name for a in anns.values() for o in a.objects
                          if o.name and o.coords is not None})
    index = ImageIndex([(p, 0) for p in paths], list(classes), root, None,
                       meta={"layout": "voc", "split": split, "data_dir": str(root)})
    attach_boxes(index, GivenAnnotations(anns, str(root / "Annotations"),
                                         "no XML in Annotations/ for this image"))
    pos = {c: k for k, c in enumerate(classes)}
    boxes = index.boxes or {}
    present = [sorted({pos[b.name] for b in boxes.get(p, [])}) for p in paths]
    # the VOC devkit's classification labels: an image is a positive of a class when it
    # holds a non-difficult object of it; holding only difficult ones, it is ignored (0)
    easy = [{pos[o.name] for o in anns[p].objects if o.name in pos and o.coords is not None
             and not o.difficult} if p in anns else set() for p in paths]
    multi = [[k for k in ks if k in e] for ks, e in zip(present, easy)]
    index.samples = [(p, ks[0] if ks else (all_[0] if all_ else 0))
                     for p, ks, all_ in zip(paths, multi, present)]
    index.multilabels = multi
    index.difficult = [[k for k in ks if k not in e] for ks, e in zip(present, easy)]
    return index


def index_detection_csv(path: str | Path, root: str | Path | None = None,
                        classes: list[str] | None = None) -> ImageIndex:
    """An object-detection CSV (``filename,width,height,class,xmin,ymin,xmax,ymax``, one
    row per box; the raccoon dataset's ``train_labels.csv``): the images it names (found
    beside the CSV, in ``root`` or ``root/images``), in the order of their first row, with
    their boxes (see ``annotations`` for the coordinates). An image's label is the class of
    its largest usable box (else of its first row of a known class). ``classes``: the class
    list (default: the CSV's class names, sorted). Rows naming a missing image file are
    counted (``box_report.missing_image``) and named in a warning."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    dirs = [root, root / "images"]
    src = CsvSource(path, "detection", dirs)
    if not src.entries:
        raise DataError(f"detection CSV {path} lists no boxes")
    paths: list[Path] = []
    seen: set[str] = set()
    missing: list[str] = []
    for key in src.entries:
        p = src.image_path(key, dirs)
        if p is None:
            missing.append(key)
        elif os.path.abspath(p) not in seen:
            seen.add(os.path.abspath(p))
            paths.append(p)
    if not paths:
        raise DataError(f"none of the {len(src.entries)} images named in {path} exists "
                        f"(looked in {', '.join(str(d) for d in [path.parent, *dirs])})")
    if classes is None:
        classes = src.class_names()
    index = ImageIndex([(p, 0) for p in paths], list(classes), root,
                       find_class_names(root, path.parent),
                       meta={"layout": "detection-csv", "file": str(path)})
    report = attach_boxes(index, src, quiet=True)
    for k, key in enumerate(missing):
        log.log(logging.WARNING if k < MAX_NAMED else logging.DEBUG,
                "annotation %s: image %s not found: its rows are left out", path.name, key)
    report.missing_image = len(missing)
    report.unmatched = max(0, report.unmatched - len(missing))  # counted as missing_image
    if missing:
        report.examples["missing_image"] = [f"{path.name}: {k}" for k in missing[:10]]
    pos = {c: i for i, c in enumerate(classes)}
    boxes = index.boxes or {}
    samples = []
    for p in paths:
        if boxes.get(p):
            samples.append((p, pos[max(boxes[p], key=lambda b: b.area).name]))
            continue
        ann = src.find(p)
        known = [o.name for o in (ann.objects if ann else []) if o.name in pos]
        if not known:
            names = sorted({o.name for o in (ann.objects if ann else [])})
            raise DataError(f"{path}: {p.name} has no box of a known class (its classes: "
                            f"{', '.join(names) or 'none'}; known: {', '.join(classes[:10])})")
        samples.append((p, pos[known[0]]))
    index.samples = samples
    index.multilabels = index.box_multilabels()
    log.log(logging.WARNING if report.problems else logging.DEBUG, "%s", report.summary())
    return index
