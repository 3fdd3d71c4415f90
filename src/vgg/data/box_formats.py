"""The files box annotations come in, read as written (VOC numbers; see ``boxes`` for the
coordinates) and never raising on a bad entry: PASCAL VOC / ILSVRC XML (one file per
image; also written), ImageNet's Kaggle ``LOC_<split>_solution.csv`` and the
object-detection CSV (``filename,width,height,class,xmin,ymin,xmax,ymax``). What is wrong
with an entry is recorded in it for ``annotations.check_boxes`` to count and name.
"""

from __future__ import annotations

import csv
import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ..errors import DataError
from .boxes import Box

class RawObject(NamedTuple):
    """An object as the source wrote it: VOC numbers (1-based inclusive) or a problem."""
    name: str
    coords: tuple[float, float, float, float] | None
    where: str        # "object 2" / "row 14": where in the file
    problem: str | None = None
    difficult: bool = False  # VOC's <difficult>1</difficult>: ignored when scoring
    # VOC-2010+'s <actions> of a person (action classification): each child's text as
    # written, e.g. {"jumping": "0", "phoning": "1"}; None without an <actions> element
    actions: dict[str, str] | None = None


@dataclass
class RawAnnotation:
    """One image's annotation as found: the file (``where``), the image size it states,
    its objects, or why the whole of it is unreadable (``broken``)."""
    where: str
    size: tuple[int, int] | None = None
    objects: list[RawObject] = field(default_factory=list)
    broken: str | None = None
    per_row: bool = False  # objects are rows of a CSV, each named on its own


def _num(text: str | None) -> float:
    v = float(text) if text is not None else float("nan")
    if not math.isfinite(v):
        raise ValueError(text)
    return v


def parse_voc_xml(path: str | Path) -> RawAnnotation:
    """A VOC / ILSVRC annotation file, never raising: problems are recorded in the result."""
    ann = RawAnnotation(str(path))
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
            ann.objects.append(RawObject("", None, where, "no <name>"))
            continue
        if bb is None:
            ann.objects.append(RawObject(name, None, where, "no <bndbox>"))
            continue
        try:
            coords = tuple(_num(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            vals = ", ".join(f"{t}={bb.findtext(t)!r}" for t in ("xmin", "ymin", "xmax", "ymax"))
            ann.objects.append(RawObject(name, None, where, f"bad <bndbox> numbers ({vals})"))
            continue
        hard = (obj.findtext("difficult") or "0").strip() in ("1", "true", "True")
        acts = obj.find("actions")
        actions = None if acts is None else {a.tag: (a.text or "").strip() for a in acts}
        ann.objects.append(RawObject(name, coords, where, None, hard,  # type: ignore[arg-type]
                                     actions))
    return ann


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
    return [Box.from_voc(o.name, o.coords) for o in ann.objects]  # type: ignore[arg-type]


def write_voc_xml(path: str | Path, filename: str, size: tuple[int, int],
                  boxes: list[Box], folder: str = "",
                  difficult: Sequence[bool] | None = None,
                  actions: Sequence[Mapping[str, int] | None] | None = None) -> None:
    """Write a VOC annotation (inverse of ``read_voc_xml``: 1-based inclusive integers);
    ``difficult[i]`` marks box i as VOC's "difficult" (left out of the scores);
    ``actions[i]`` gives box i VOC-2012's ``<actions>`` (each action's 0 / 1 flag)."""
    lines = ["<annotation>", f"  <folder>{folder}</folder>", f"  <filename>{filename}</filename>",
             f"  <size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"]
    hard = list(difficult) if difficult is not None else [False] * len(boxes)
    acts = list(actions) if actions is not None else [None] * len(boxes)
    for b, d, a in zip(boxes, hard, acts):
        lines += ["  <object>", f"    <name>{b.name}</name>", "    <pose>Unspecified</pose>",
                  "    <truncated>0</truncated>", f"    <difficult>{int(bool(d))}</difficult>",
                  f"    <bndbox><xmin>{int(round(b.x0)) + 1}</xmin><ymin>{int(round(b.y0)) + 1}"
                  f"</ymin><xmax>{int(round(b.x1))}</xmax><ymax>{int(round(b.y1))}</ymax>"
                  "</bndbox>"]
        if a is not None:
            lines += ["    <actions>", *(f"      <{k}>{int(v)}</{k}>" for k, v in a.items()),
                      "    </actions>"]
        lines.append("  </object>")
    lines.append("</annotation>")
    Path(path).write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------ CSV formats

DETECTION_COLUMNS = ("filename", "class", "xmin", "ymin", "xmax", "ymax")
_FILE_COLUMNS = ("filename", "file", "image", "path", "image_path", "imageid")
_CLASS_COLUMNS = ("class", "label", "name", "class_name")


def csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            row = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    return [c.strip().lower() for c in row]


def csv_kind(path: str | Path) -> str | None:
    """"loc" (ImageNet ``ImageId,PredictionString``), "detection"
    (``filename,...,class,xmin,ymin,xmax,ymax``) or None, from the header."""
    cols = set(csv_header(Path(path)))
    if {"imageid", "predictionstring"} <= cols:
        return "loc"
    if cols & set(_FILE_COLUMNS) and cols & set(_CLASS_COLUMNS) and \
            {"xmin", "ymin", "xmax", "ymax"} <= cols:
        return "detection"
    return None


def read_loc_csv(path: str | Path) -> dict[str, RawAnnotation]:
    """``LOC_*_solution.csv`` -> {ImageId (file stem): annotation}; a malformed
    PredictionString becomes a recorded problem, not an error."""
    path = Path(path)
    out: dict[str, RawAnnotation] = {}
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
            ann = out.setdefault(stem, RawAnnotation(f"{path.name} row {line} ({stem})"))
            toks = row[i_pred].split() if len(row) > i_pred else []
            if not toks or len(toks) % 5:
                ann.objects.append(RawObject(toks[0] if toks else "", None, "",
                                        f"PredictionString has {len(toks)} values, not "
                                        "groups of 5 (wnid xmin ymin xmax ymax)"))
                continue
            for k in range(0, len(toks), 5):
                try:
                    coords = tuple(_num(v) for v in toks[k + 1:k + 5])
                    ann.objects.append(
                        RawObject(toks[k], coords, f"box {k // 5 + 1}"))  # type: ignore[arg-type]
                except ValueError:
                    ann.objects.append(RawObject(toks[k], None, f"box {k // 5 + 1}",
                                            f"bad numbers {' '.join(toks[k + 1:k + 5])!r}"))
    return out


def read_detection_csv(path: str | Path) -> dict[str, RawAnnotation]:
    """An object-detection CSV -> {filename as written: annotation} in row order (one
    object per row; the width/height columns, when present and positive, give the size)."""
    path = Path(path)
    out: dict[str, RawAnnotation] = {}
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
            ann = out.setdefault(name, RawAnnotation(path.name, per_row=True))
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
                ann.objects.append(RawObject(cls, None, where, f"bad box numbers {vals!r}"))
                continue
            if not cls:
                ann.objects.append(RawObject("", None, where, "empty class"))
                continue
            ann.objects.append(RawObject(cls, coords, where))  # type: ignore[arg-type]
    return out
