"""Box annotations for localisation (Appendix A): read the common formats, keep the boxes
that make sense, and name each one that does not, once.

Sources (``load_boxes`` finds one next to the data, or takes the path of one):

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

Coordinates: every source stores VOC numbers, 1-based inclusive pixel indices (ImageNet's
LOC CSV holds the values of its XML files, and a detection CSV made by ``xml_to_csv.py``
those of its XML files). ``Box`` holds 0-based pixel-EDGE coordinates, x1 and y1
exclusive: ``x0 = xmin - 1, y0 = ymin - 1, x1 = xmax, y1 = ymax``; a box covering a whole
W x H image is ``(0, 0, W, H)``.

Bad annotations never stop a run. Each is counted in a ``BoxReport`` and named in one
warning per annotation file (or CSV row): a missing annotation, an unreadable file or
row, a box reaching outside the image (clipped to it; the size comes from the XML
``<size>``, the CSV's width/height, else the image header), a box with no area after
clipping (dropped), a class not in the class list (dropped; ``strict_classes=True`` makes
it a DataError). An image left with no usable box is counted: the localisation trainer
skips it. Past ``MAX_NAMED`` warnings of one kind the rest go to the debug log; the
summary line always gives the totals.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol


from ..errors import BadImageError, DataError
from ..progress import Progress
from .decode import image_size

if TYPE_CHECKING:
    from .folders import ImageIndex

log = logging.getLogger(__name__)

MAX_NAMED = 20      # warnings per kind of problem; further ones are logged at debug level
MAX_EXAMPLES = 10   # messages per kind kept in BoxReport.examples

KINDS = ("missing", "malformed", "clipped", "degenerate", "unknown_class", "no_usable_box",
         "missing_image")


class Box(NamedTuple):
    """One object: class name and 0-based pixel-edge coordinates (x1, y1 exclusive)."""
    name: str
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)


@dataclass
class BoxReport:
    """What loading the boxes of an index found. ``images`` = ``with_boxes`` + ``missing``
    (no annotation) + ``no_usable_box`` (an annotation, but no box survived). Box counts:
    ``boxes`` kept, ``clipped`` (kept, cut to the image), ``degenerate`` / ``unknown_class``
    (dropped); ``malformed``: unreadable files, rows or objects; ``missing_image``:
    annotations naming an image file that does not exist (indexers only); ``unmatched``:
    entries of the source naming no image of this index (not a problem: a CSV of all
    splits)."""

    source: str = ""
    images: int = 0
    with_boxes: int = 0
    boxes: int = 0
    missing: int = 0
    malformed: int = 0
    clipped: int = 0
    degenerate: int = 0
    unknown_class: int = 0
    no_usable_box: int = 0
    missing_image: int = 0
    unmatched: int = 0
    unknown_names: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def problems(self) -> int:
        return sum(getattr(self, k) for k in KINDS)

    def summary(self) -> str:
        s = (f"boxes from {self.source}: {self.with_boxes} of {self.images} images have "
             f"boxes ({_n(self.boxes, 'box', 'boxes')})")
        parts = [_n(n, one, many) for n, one, many in (
            (self.missing, "image without annotation", "images without annotation"),
            (self.no_usable_box, "image with no usable box", "images with no usable box"),
            (self.malformed, "malformed entry", "malformed entries"),
            (self.clipped, "box clipped to the image", "boxes clipped to the image"),
            (self.degenerate, "box without area dropped", "boxes without area dropped"),
            (self.unknown_class, "box of an unknown class dropped",
             "boxes of unknown classes dropped"),
            (self.missing_image, "annotated image file missing",
             "annotated image files missing")) if n]
        if self.unknown_names:
            top = sorted(self.unknown_names.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
            parts.append("unknown classes: " + ", ".join(f"{k} ({v})" for k, v in top))
        if self.unmatched:
            parts.append(_n(self.unmatched, "entry", "entries")
                         + " of the source for images not in this set")
        return s + ("; " + "; ".join(parts) if parts else "; no problems")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _n(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


# ------------------------------------------------------------------ raw annotations

class _Obj(NamedTuple):
    """An object as the source wrote it: VOC numbers (1-based inclusive) or a problem."""
    name: str
    coords: tuple[float, float, float, float] | None
    where: str        # "object 2" / "row 14": where in the file
    problem: str | None = None
    difficult: bool = False  # VOC's <difficult>1</difficult>: ignored when scoring


@dataclass
class _Ann:
    """One image's annotation as found: the file (``where``), the image size it states,
    its objects, or why the whole of it is unreadable (``broken``)."""
    where: str
    size: tuple[int, int] | None = None
    objects: list[_Obj] = field(default_factory=list)
    broken: str | None = None
    per_row: bool = False  # objects are rows of a CSV, each named on its own


def _num(text: str | None) -> float:
    v = float(text) if text is not None else float("nan")
    if not math.isfinite(v):
        raise ValueError(text)
    return v


def parse_voc_xml(path: str | Path) -> _Ann:
    """A VOC / ILSVRC annotation file, never raising: problems are recorded in the result."""
    ann = _Ann(str(path))
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        ann.broken = f"not valid XML ({e})"
        return ann
    except OSError as e:
        ann.broken = f"cannot read ({e.strerror or e})"
        return ann
    size = root.find("size")
    if size is not None:
        try:
            w, h = int(_num(size.findtext("width"))), int(_num(size.findtext("height")))
            ann.size = (w, h) if w > 0 and h > 0 else None
        except (TypeError, ValueError):
            ann.size = None
    for k, obj in enumerate(root.iter("object"), 1):
        name = (obj.findtext("name") or "").strip()
        where = f"object {k}"
        bb = obj.find("bndbox")
        if not name:
            ann.objects.append(_Obj("", None, where, "no <name>"))
            continue
        if bb is None:
            ann.objects.append(_Obj(name, None, where, "no <bndbox>"))
            continue
        try:
            coords = tuple(_num(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            vals = ", ".join(f"{t}={bb.findtext(t)!r}" for t in ("xmin", "ymin", "xmax", "ymax"))
            ann.objects.append(_Obj(name, None, where, f"bad <bndbox> numbers ({vals})"))
            continue
        hard = (obj.findtext("difficult") or "0").strip() in ("1", "true", "True")
        ann.objects.append(_Obj(name, coords, where, None, hard))  # type: ignore[arg-type]
    return ann


def _to_box(name: str, coords: tuple[float, float, float, float]) -> Box:
    xmin, ymin, xmax, ymax = coords
    return Box(name, xmin - 1.0, ymin - 1.0, xmax, ymax)


def read_voc_xml(path: str | Path) -> list[Box]:
    """Objects of a PASCAL VOC / ILSVRC annotation file, 0-based pixel-edge coordinates,
    as written (no clipping). Raises DataError naming the file when it is unreadable or an
    object lacks its name or box numbers (``load_boxes`` counts those instead)."""
    ann = parse_voc_xml(path)
    if ann.broken:
        raise DataError(f"cannot read annotation {path}: {ann.broken}")
    bad = [o for o in ann.objects if o.problem]
    if bad:
        raise DataError(f"bad object in {path}: {bad[0].where}: {bad[0].problem}")
    return [_to_box(o.name, o.coords) for o in ann.objects]  # type: ignore[arg-type]


def write_voc_xml(path: str | Path, filename: str, size: tuple[int, int],
                  boxes: list[Box], folder: str = "",
                  difficult: Sequence[bool] | None = None) -> None:
    """Write a VOC annotation (inverse of ``read_voc_xml``: 1-based inclusive integers);
    ``difficult[i]`` marks box i as VOC's "difficult" (left out of the scores)."""
    lines = ["<annotation>", f"  <folder>{folder}</folder>", f"  <filename>{filename}</filename>",
             f"  <size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"]
    hard = list(difficult) if difficult is not None else [False] * len(boxes)
    for b, d in zip(boxes, hard):
        lines += ["  <object>", f"    <name>{b.name}</name>", "    <pose>Unspecified</pose>",
                  "    <truncated>0</truncated>", f"    <difficult>{int(bool(d))}</difficult>",
                  f"    <bndbox><xmin>{int(round(b.x0)) + 1}</xmin><ymin>{int(round(b.y0)) + 1}"
                  f"</ymin><xmax>{int(round(b.x1))}</xmax><ymax>{int(round(b.y1))}</ymax>"
                  "</bndbox>", "  </object>"]
    lines.append("</annotation>")
    Path(path).write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------ CSV formats

DETECTION_COLUMNS = ("filename", "class", "xmin", "ymin", "xmax", "ymax")
_FILE_COLUMNS = ("filename", "file", "image", "path", "image_path", "imageid")
_CLASS_COLUMNS = ("class", "label", "name", "class_name")


def _header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            row = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    return [c.strip().lower() for c in row]


def csv_kind(path: str | Path) -> str | None:
    """"loc" (ImageNet ``ImageId,PredictionString``), "detection"
    (``filename,...,class,xmin,ymin,xmax,ymax``) or None, from the header."""
    cols = set(_header(Path(path)))
    if {"imageid", "predictionstring"} <= cols:
        return "loc"
    if cols & set(_FILE_COLUMNS) and cols & set(_CLASS_COLUMNS) and \
            {"xmin", "ymin", "xmax", "ymax"} <= cols:
        return "detection"
    return None


def read_loc_csv(path: str | Path) -> dict[str, _Ann]:
    """``LOC_*_solution.csv`` -> {ImageId (file stem): annotation}; a malformed
    PredictionString becomes a recorded problem, not an error."""
    path = Path(path)
    out: dict[str, _Ann] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        cols = [c.strip().lower() for c in next(reader, [])]
        try:
            i_id, i_pred = cols.index("imageid"), cols.index("predictionstring")
        except ValueError:
            raise DataError(f"{path} is not an ImageNet LOC solution file (header "
                            f"{','.join(cols)!r}; expected ImageId,PredictionString)") from None
        for line, row in enumerate(reader, 2):
            if not row or not row[i_id].strip():
                continue
            stem = row[i_id].strip()
            ann = out.setdefault(stem, _Ann(f"{path.name} row {line} ({stem})"))
            toks = row[i_pred].split() if len(row) > i_pred else []
            if not toks or len(toks) % 5:
                ann.objects.append(_Obj(toks[0] if toks else "", None, "",
                                        f"PredictionString has {len(toks)} values, not "
                                        "groups of 5 (wnid xmin ymin xmax ymax)"))
                continue
            for k in range(0, len(toks), 5):
                try:
                    coords = tuple(_num(v) for v in toks[k + 1:k + 5])
                    ann.objects.append(
                        _Obj(toks[k], coords, f"box {k // 5 + 1}"))  # type: ignore[arg-type]
                except ValueError:
                    ann.objects.append(_Obj(toks[k], None, f"box {k // 5 + 1}",
                                            f"bad numbers {' '.join(toks[k + 1:k + 5])!r}"))
    return out


def read_detection_csv(path: str | Path) -> dict[str, _Ann]:
    """An object-detection CSV -> {filename as written: annotation} in row order (one
    object per row; the width/height columns, when present and positive, give the size)."""
    path = Path(path)
    out: dict[str, _Ann] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        cols = [c.strip().lower() for c in next(reader, [])]
        col = {c: i for i, c in enumerate(cols)}
        i_file = next((col[c] for c in _FILE_COLUMNS if c in col), None)
        i_cls = next((col[c] for c in _CLASS_COLUMNS if c in col), None)
        if i_file is None or i_cls is None or not {"xmin", "ymin", "xmax", "ymax"} <= set(col):
            raise DataError(f"{path} is not a detection CSV (header {','.join(cols)!r}; "
                            "expected filename,width,height,class,xmin,ymin,xmax,ymax)")
        for line, row in enumerate(reader, 2):
            if not row or not any(c.strip() for c in row):
                continue
            get = (lambda i: row[i].strip() if i is not None and i < len(row) else "")
            name = get(i_file)
            where = f"row {line}"
            if not name:
                continue
            ann = out.setdefault(name, _Ann(path.name, per_row=True))
            if ann.size is None:
                try:
                    w, h = int(_num(get(col.get("width")))), int(_num(get(col.get("height"))))
                    ann.size = (w, h) if w > 0 and h > 0 else None
                except ValueError:
                    pass
            cls = get(i_cls)
            try:
                coords = tuple(_num(get(col[t])) for t in ("xmin", "ymin", "xmax", "ymax"))
            except ValueError:
                vals = ",".join(get(col[t]) for t in ("xmin", "ymin", "xmax", "ymax"))
                ann.objects.append(_Obj(cls, None, where, f"bad box numbers {vals!r}"))
                continue
            if not cls:
                ann.objects.append(_Obj("", None, where, "empty class"))
                continue
            ann.objects.append(_Obj(cls, coords, where))  # type: ignore[arg-type]
    return out


# ------------------------------------------------------------------ sources

class BoxSource(Protocol):
    """Where an index's annotations come from: ``find(path)`` gives an image's annotation
    (None when it has none), ``missing(path)`` says what was looked for."""

    description: str

    def find(self, path: Path) -> _Ann | None: ...

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

    def find(self, path: Path) -> _Ann | None:
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
                            f"{','.join(_header(self.path))!r}); expected ImageId,"
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

    def image_path(self, key: str, dirs: Sequence[Path] = ()) -> Path | None:
        """The existing image file a detection-CSV filename names, or None."""
        for d in (self.path.parent, self.path.parent / "images", *dirs):
            if (d / key).is_file():
                return d / key
        return None

    def find(self, path: Path) -> _Ann | None:
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


class _Given:
    """Annotations already parsed, keyed by image path (indexers that parse first)."""

    def __init__(self, anns: dict[Path, _Ann], description: str,
                 missing_hint: str = "no annotation") -> None:
        self.anns, self.description, self._hint = anns, description, missing_hint

    def find(self, path: Path) -> _Ann | None:
        return self.anns.get(path)

    def missing(self, path: Path) -> str:
        return self._hint

    def unmatched(self) -> int:
        return 0


def label_dirs(data_dir: Path) -> list[Path]:
    """Where ImageNet label files (LOC CSVs, devkit files, synset lists) are looked for."""
    return [data_dir, data_dir.parent, data_dir / "devkit" / "data",
            data_dir / "ILSVRC2012_devkit_t12" / "data", data_dir / "LOC"]


def find_box_source(index: ImageIndex, split: str | None = None) -> BoxSource:
    """The annotations that go with ``index``, looked for next to its data (see
    ``load_boxes``). Raises DataError listing the places looked at when none is found."""
    data_dir = Path(index.meta.get("data_dir") or index.root or ".")
    split = split or index.meta.get("split") or "train"
    img_root = index.root
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
    if any(p.with_suffix(".xml").is_file() for p in index.paths):
        return XmlTree(None, img_root, split, beside=True)
    raise DataError(f"no box annotations found for {data_dir} (split {split}); looked for "
                    + ", ".join(looked))


def as_box_source(source: str | Path, index: ImageIndex, split: str = "") -> BoxSource:
    """A path given by the user: a CSV file (LOC or detection, by its header) or a folder
    of XML files."""
    p = Path(source)
    if p.is_file():
        if p.suffix.lower() == ".xml":
            raise DataError(f"{p} is one annotation file; give the folder that holds the "
                            "XML files of the images")
        data_dir = Path(index.meta.get("data_dir") or index.root or p.parent)
        return CsvSource(p, None, [data_dir, data_dir / "images"])
    if p.is_dir():
        return XmlTree(p, index.root, split)
    raise DataError(f"annotation source not found: {p}")


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


def check_boxes(ann: _Ann, image: Path, classes: set[str], report: BoxReport,
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
    if size is None and any(o.coords is not None for o in ann.objects):
        try:
            size = image_size(image)
        except BadImageError:
            size = None  # the image itself is bad: the loaders name it; keep boxes unclipped
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
        b = _to_box(o.name, o.coords)
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


def _multilabels(index: ImageIndex) -> list[list[int]] | None:
    """Every class of an image (its label + its boxes' classes), when any image has two."""
    pos = {c: i for i, c in enumerate(index.classes)}
    boxes = index.boxes or {}
    multi = [sorted({c} | {pos[b.name] for b in boxes.get(p, []) if b.name in pos})
             for p, c in index.samples]
    return multi if any(len(m) > 1 for m in multi) else None


def attach_boxes(index: ImageIndex, source: BoxSource, classes: Sequence[str] | None = None,
                 strict_classes: bool = False, quiet: bool = False) -> BoxReport:
    """Fill ``index.boxes``, ``index.box_report`` (and ``index.multilabels`` when images
    hold several classes) from ``source``; log the summary (a warning when something was
    wrong, at debug level otherwise; nothing with ``quiet``)."""
    boxes, report = collect_boxes(index.paths, source,
                                  list(classes) if classes is not None else index.classes,
                                  strict_classes)
    index.boxes = boxes
    index.box_report = report
    multi = _multilabels(index)
    if multi is not None:
        index.multilabels = multi
    if not quiet:
        log.log(logging.WARNING if report.problems else logging.DEBUG, "%s", report.summary())
    return report


def load_boxes(index: ImageIndex, source: str | Path | None = None, split: str | None = None,
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
    src = find_box_source(index, split) if source is None else as_box_source(source, index,
                                                                              split)
    return attach_boxes(index, src, classes, strict_classes, quiet)
