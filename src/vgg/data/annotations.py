"""Box annotations for localisation (Appendix A): keep the boxes that make sense, name
each one that does not, once, and return the usable ones keyed by image path
(``collect_boxes``). The index takes them (``ImageIndex.set_boxes``); ``load_boxes`` and
``attach_boxes`` do both for anything shaped like an index (``BoxTarget``).

Sources (``load_boxes`` finds one next to the data, or takes the path of one; see
``box_sources``, and ``box_formats`` for the files):

- PASCAL VOC XML beside each image (``a.jpg`` + ``a.xml``), in a parallel tree
  ``DIR/annotations/<split>/<rel path>.xml`` (what ``vgg data synth`` writes), in a VOC
  devkit (``DIR/Annotations/<id>.xml``) or in a flat ``DIR/annotations/`` folder;
- ILSVRC's per-image XML folders (same format, with ``<size>``):
  ``ILSVRC2012_bbox_train_v2/<wnid>/<stem>.xml``, ``ILSVRC2012_bbox_val_v3/val/<stem>.xml``,
  Kaggle's ``ILSVRC/Annotations/CLS-LOC/{train,val}/...``;
- ImageNet's Kaggle ``LOC_<split>_solution.csv``: ``ImageId,PredictionString`` with
  ``PredictionString = "wnid xmin ymin xmax ymax wnid ..."`` and ``ImageId`` the file stem;
- the object-detection CSV (TensorFlow Object Detection API, Roboflow, ...):
  header ``filename,width,height,class,xmin,ymin,xmax,ymax``, one row per box.

Coordinates: see ``boxes`` (VOC numbers in the files, 0-based pixel edges in ``Box``).

Bad annotations never stop a run. Each is counted in a ``BoxReport`` and named in one
warning per annotation file (or CSV row): a missing annotation, an unreadable file or
row, an annotation whose stated size (the XML ``<size>``, the CSV's width/height)
differs from the image's (read from its header): the stated size is the frame its boxes
were drawn in (the image was resized since), so they are scaled by real / stated size on
each axis, never used in the wrong frame; a box reaching outside the image (clipped to
it), a box with no area after clipping (dropped), a class not in the class list (dropped; ``strict_classes=True`` makes
it a DataError). An image left with no usable box is counted: the localisation trainer
skips it. Past ``MAX_NAMED`` warnings of one kind the rest go to the debug log; the
summary line always gives the totals.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from ..errors import BadImageError, DataError
from ..progress import Progress
from .box_formats import RawAnnotation, csv_kind, parse_voc_xml, read_voc_xml, write_voc_xml
from .box_sources import BoxSource, CsvSource, XmlTree, as_box_source, find_box_source
from .boxes import KINDS, MAX_EXAMPLES, MAX_NAMED, Box, BoxReport
from .decode import image_size

__all__ = ["MAX_NAMED", "Box", "BoxReport", "BoxSource", "BoxTarget", "CsvSource", "XmlTree",
           "attach_boxes", "check_boxes", "collect_boxes", "csv_kind", "load_boxes",
           "parse_voc_xml", "read_voc_xml", "write_voc_xml"]

log = logging.getLogger(__name__)


class BoxTarget(Protocol):
    """What ``attach_boxes`` and ``load_boxes`` need of an index (``ImageIndex``): its
    images and classes, where they came from (``root``, ``meta["data_dir"]``,
    ``meta["split"]``), and ``set_boxes`` to take the boxes found."""

    root: Path | None
    classes: list[str]
    meta: dict[str, str]

    @property
    def paths(self) -> list[Path]: ...

    def set_boxes(self, boxes: dict[Path, list[Box]], report: BoxReport) -> None: ...


# ------------------------------------------------------------------ checking boxes

class _Log:
    """One warning per annotation file / row, at most MAX_NAMED per kind; examples kept."""

    def __init__(self, report: BoxReport) -> None:
        self.report = report
        self.named = dict.fromkeys(KINDS, 0)

    def emit(self, where: str, items: list[tuple[str, str]]) -> None:
        if not items:
            return
        loud = False
        for kind, msg in items:
            ex = self.report.examples.setdefault(kind, [])
            if len(ex) < MAX_EXAMPLES:
                ex.append(f"{where}: {msg}")
            if self.named[kind] < MAX_NAMED:
                loud = True
            self.named[kind] += 1
        log.log(logging.WARNING if loud else logging.DEBUG, "annotation %s: %s", where,
                "; ".join(m for _, m in items))


def _fmt(coords: tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in coords)


def check_boxes(ann: RawAnnotation, image: Path, classes: set[str], report: BoxReport,
                strict_classes: bool = False,
                problems: list[tuple[str, str, str]] | None = None) -> list[Box]:
    """The usable boxes of one image's annotation (converted, clipped), counting what was
    wrong in ``report``; ``problems`` gets ``(where, kind, message)`` items."""
    probs: list[tuple[str, str, str]] = [] if problems is None else problems
    if ann.broken:
        report.malformed += 1
        probs.append((ann.where, "malformed", ann.broken))
        return []
    size = ann.size
    scale: tuple[float, float] | None = None
    if any(o.coords is not None for o in ann.objects):
        try:
            real = image_size(image)
        except BadImageError:
            real = None  # the image itself is bad: the loaders name it
        if size is not None and real is not None and tuple(size) != tuple(real):
            scale = (real[0] / size[0], real[1] / size[1])
            report.wrong_size += 1
            probs.append((f"{ann.where} ({image.name})" if ann.per_row else ann.where,
                          "wrong_size", f"states a {size[0]}x{size[1]} image but "
                          f"{image.name} is {real[0]}x{real[1]}: its boxes are scaled by "
                          f"{scale[0]:.4g} x {scale[1]:.4g}"))
        size = real or size  # unclipped when neither is known
    out: list[Box] = []
    for o in ann.objects:
        where = f"{ann.where} {o.where} ({image.name})" if ann.per_row else ann.where
        label = (o.name or "?") if ann.per_row else \
            f"{o.where} ({o.name or '?'})" if o.where else ""
        if o.problem is not None or o.coords is None:
            report.malformed += 1
            probs.append((where, "malformed", f"{label}: {o.problem}" if label else
                          str(o.problem)))
            continue
        if o.name not in classes:
            if strict_classes:
                raise DataError(f"{where}: class {o.name!r} is not one of the "
                                f"{len(classes)} classes of the dataset")
            report.unknown_class += 1
            report.unknown_names[o.name] = report.unknown_names.get(o.name, 0) + 1
            probs.append((where, "unknown_class", f"{label}: class {o.name!r} is not in the "
                                                  "class list: dropped"))
            continue
        b = Box.from_voc(o.name, o.coords)
        if scale is not None:  # from the stated frame to the image's
            b = Box(b.name, b.x0 * scale[0], b.y0 * scale[1], b.x1 * scale[0],
                    b.y1 * scale[1])
        clipped = False
        if size is not None:
            w, h = size
            c = Box(b.name, min(max(b.x0, 0.0), w), min(max(b.y0, 0.0), h),
                    min(max(b.x1, 0.0), w), min(max(b.y1, 0.0), h))
            clipped, b = c != b, c
        if b.x1 <= b.x0 or b.y1 <= b.y0:
            report.degenerate += 1
            inside = f" inside the {size[0]}x{size[1]} image" if clipped and size else ""
            probs.append((where, "degenerate", f"{label} box {_fmt(o.coords)} has no "
                                               f"area{inside}: dropped"))
            continue
        if clipped and size is not None:
            report.clipped += 1
            probs.append((where, "clipped", f"{label} box {_fmt(o.coords)} reaches outside "
                                            f"the {size[0]}x{size[1]} image: clipped"))
        out.append(b)
    return out


def collect_boxes(paths: Iterable[Path], source: BoxSource, classes: Sequence[str],
                  strict_classes: bool = False, progress: bool = True
                  ) -> tuple[dict[Path, list[Box]], BoxReport]:
    """Usable boxes per image of ``paths`` from ``source`` and the report (warnings
    logged). Images without a usable box are absent from the dict."""
    paths = list(paths)
    report = BoxReport(source=source.description, images=len(paths))
    logger = _Log(report)
    names = set(classes)
    boxes: dict[Path, list[Box]] = {}
    bar = Progress(len(paths), "boxes", "img", enabled=progress and len(paths) >= 5000)
    for p in paths:
        bar.update(1)
        ann = source.find(p)
        if ann is None:
            report.missing += 1
            logger.emit(str(p), [("missing", source.missing(p))])
            continue
        probs: list[tuple[str, str, str]] = []
        bs = check_boxes(ann, p, names, report, strict_classes, probs)
        if bs:
            boxes[p] = bs
            report.with_boxes += 1
            report.boxes += len(bs)
        else:
            report.no_usable_box += 1
            # named with the file's (or the image's last CSV row's) other problems
            where = probs[-1][0] if probs else (f"{ann.where} ({p.name})" if ann.per_row
                                                else ann.where)
            probs.append((where, "no_usable_box",
                          "no usable box: the localisation trainer skips " + p.name))
        groups: dict[str, list[tuple[str, str]]] = {}
        for where, kind, msg in probs:
            groups.setdefault(where, []).append((kind, msg))
        for where, items in groups.items():
            logger.emit(where, items)
    report.unmatched = source.unmatched()
    bar.close()
    return boxes, report


# ------------------------------------------------------------------ giving them to an index

def attach_boxes(index: BoxTarget, source: BoxSource, classes: Sequence[str] | None = None,
                 strict_classes: bool = False, quiet: bool = False) -> BoxReport:
    """Give ``index`` its boxes from ``source`` (``index.set_boxes``: ``index.boxes``,
    ``index.box_report``, and ``index.multilabels`` when images hold several classes);
    log the summary (a warning when something was wrong, at debug level otherwise;
    nothing with ``quiet``)."""
    boxes, report = collect_boxes(index.paths, source,
                                  list(classes) if classes is not None else index.classes,
                                  strict_classes)
    index.set_boxes(boxes, report)
    if not quiet:
        log.log(logging.WARNING if report.problems else logging.DEBUG, "%s", report.summary())
    return report


def load_boxes(index: BoxTarget, source: str | Path | None = None, split: str | None = None,
               classes: list[str] | None = None, strict_classes: bool = False,
               quiet: bool = False) -> BoxReport:
    """Load the boxes of ``index`` (Appendix A's localisation targets) into
    ``index.boxes`` {image path: [Box, ...]} (images with at least one usable box) and
    ``index.box_report``; returns the report.

    ``source``: a folder of VOC/ILSVRC XML files or a CSV (LOC solution or detection);
    None looks next to the data, in this order: ``DIR/annotations/<split>/`` (+ XML beside
    the images), ``LOC_<split>_solution.csv`` (in DIR, its parent, the devkit folders,
    ``DIR/LOC``), ``ILSVRC2012_bbox_<split>_*`` folders, Kaggle's
    ``Annotations/CLS-LOC/<split>``, ``DIR/<split>_labels.csv``, ``DIR/Annotations/``,
    ``DIR/annotations/``, XML beside the images. ``split`` defaults to the index's.
    ``classes`` (default the index's): boxes of other classes are dropped and counted, or
    a DataError with ``strict_classes``. Each bad annotation is logged as it is found;
    the summary line too unless ``quiet`` (a warning when something was wrong)."""
    split = split or index.meta.get("split") or "train"
    data_dir = Path(index.meta["data_dir"]) if index.meta.get("data_dir") else None
    src = (find_box_source(data_dir, split, index.root, index.paths) if source is None
           else as_box_source(source, data_dir, index.root, split))
    return attach_boxes(index, src, classes, strict_classes, quiet)
