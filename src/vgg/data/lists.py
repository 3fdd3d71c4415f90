"""File lists: one image per line, with its label or in a class folder (``index_list``;
``vgg train --train-list`` / ``--val-list``, ``DIR/<split>.csv`` / ``DIR/<split>.txt``)."""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .class_names import find_class_names
from .decode import has_image_extension
from .index import ImageIndex

log = logging.getLogger(__name__)

__all__ = ["LIST_HEADERS", "index_csv", "index_list"]


LIST_HEADERS = ("path", "file", "filename", "image", "img", "filepath")


@dataclass
class _ListEntry:
    """One image line of a file list: its line number, the path as written and its
    labels (None: the class is the path's first folder)."""

    line: int
    path: str
    labels: list[str] | None


def _listed(items: Sequence[tuple[str, int]], n: int = 5) -> str:
    """``a.jpg (line 3), b.jpg (line 9) and 4 more``."""
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(f"{t} (line {k})" for t, k in items[:n]) + more


def _label_token(text: str) -> bool:
    """Whether the last field of a list line is a label rather than part of the path."""
    return bool(text) and "/" not in text and "\\" not in text and not has_image_extension(text)


def _split_list_line(line: str) -> list[str]:
    """``path``, ``path<TAB>label``, ``path,label`` or ``path label`` -> [path(, label)].
    A last field that looks like a file name (an image extension) belongs to the path."""
    if "\t" in line:
        return [t.strip() for t in line.split("\t", 1)]
    if "," in line:
        head, tail = line.rsplit(",", 1)
        if _label_token(tail.strip()):
            return [head.strip(), tail.strip()]
    parts = line.rsplit(None, 1)
    if len(parts) == 2 and _label_token(parts[1]):
        return parts
    return [line]


def _read_list(path: Path) -> list[_ListEntry]:
    """The image lines of a list file (blank lines, ``#`` comments and a header row
    naming the path column are skipped). ``.csv``: CSV rows ``path[,label]`` (further
    columns ignored); any other name: lines ``path``, ``path<TAB>label``, ``path,label``
    or ``path label``. Labels ``a;b`` (and, in a CSV, ``a b``) are several labels."""
    csv_file = path.suffix.lower() == ".csv"
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's BOM
            if csv_file:
                reader = csv.reader(f)
                rows = [(reader.line_num, r) for r in reader]
            else:
                rows = [(k, _split_list_line(line.strip())) for k, line in enumerate(f, 1)]
    except FileNotFoundError:
        raise DataError(f"file list not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"file list {path} is a folder, not a file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read file list {path}: {e}") from None
    rows = [(k, r) for k, r in rows if r and r[0].strip() and not r[0].lstrip().startswith("#")]
    if rows and rows[0][1][0].strip().lower() in LIST_HEADERS:
        rows = rows[1:]
    sep = r"[;\s]+" if csv_file else r"\s*;\s*"
    out = []
    for k, r in rows:
        label = r[1].strip() if len(r) > 1 else ""
        labels = [t for t in re.split(sep, label) if t] if label else None
        out.append(_ListEntry(k, r[0].strip(), labels))
    return out


def _under(root: Path, text: str) -> str | None:
    """``text`` (relative to ``root``, or absolute) as a normalised path relative to
    ``root``; None when it leads outside ``root`` (``..``, or an absolute path elsewhere).
    Lexical: a symbolic link inside ``root`` may point anywhere."""
    full = os.path.normpath(os.path.join(root, text))  # join keeps an absolute ``text``
    rel = os.path.relpath(full, root)
    if rel == "." or rel == ".." or rel.startswith(".." + os.sep):
        return None
    return rel


def _root_hint(root: Path, rels: Sequence[str]) -> str:
    """When listed files are missing from ``root``: the sub-folder (or parent) of
    ``root`` that holds them, as a hint for --data."""
    probe = rels[:20]
    candidates = [root.parent] + ([d for d in sorted(root.iterdir()) if d.is_dir()]
                                  if root.is_dir() else [])
    for d in candidates:
        if all(os.path.isfile(d / r) for r in probe):
            return (f"; they are in {d}: give that folder as the data folder (--data), "
                    f"with this list as --train-list or --val-list")
    return ""


def index_list(path: str | Path, root: str | Path | None = None,
               classes: list[str] | None = None, known: str = "the class list given"
               ) -> ImageIndex:
    """A file list: one image per line, as ``path`` (the class is the path's first
    folder, as in Caltech-101's ``train.txt``: ``accordion/image_0002.jpg``), or with its
    label: ``path,label`` (a ``.csv`` file, optional header naming the ``path`` column;
    any extension takes ``path,label``, ``path<TAB>label`` or ``path label`` lines).

    Paths are relative to ``root`` (default: the list's folder); an absolute path must
    lie inside ``root``. Labels are class names, or integers (then classes are
    "0".."max"); ``a;b`` is several labels (multi-label; the first is the primary
    label). ``classes`` (e.g. the training set's, or a net's; ``known`` names them in
    messages) fixes the label numbering; otherwise the labels found, sorted.

    Every listed file is used once: an exact repeat (same path, same labels) is dropped
    with one warning; a DataError, naming the lines, for a path listed with two
    different labels, a path leading outside ``root``, a line with no label and no class
    folder, a label not in ``classes``, an empty list, and listed files that do not
    exist (all of them named, with the folder that holds them when that is a sub-folder
    or the parent of ``root``)."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root} (the paths of {path} are "
                        "relative to it)")
    entries = _read_list(path)
    if not entries:
        raise DataError(f"file list {path} lists no images")
    root_abs = Path(os.path.abspath(root))
    outside, no_class, conflicts, repeats = [], [], [], []
    seen: dict[str, tuple[int, list[str]]] = {}
    items: list[tuple[str, list[str], int]] = []
    for e in entries:
        rel = _under(root_abs, e.path)
        if rel is None:
            outside.append((e.path, e.line))
            continue
        labels = e.labels
        if labels is None:
            parts = Path(rel).parts
            if len(parts) < 2:
                no_class.append((e.path, e.line))
                continue
            labels = [parts[0]]
        if rel in seen:
            first, had = seen[rel]
            (repeats if had == labels else conflicts).append((rel, e.line, first, had, labels))
            continue
        seen[rel] = (e.line, labels)
        items.append((rel, labels, e.line))
    if outside:
        raise DataError(f"{path}: {len(outside)} listed path(s) lead outside the data folder "
                        f"{root} (paths are relative to it): {_listed(outside)}")
    if no_class:
        raise DataError(f"{path}: {len(no_class)} line(s) give neither a label nor a class "
                        f"folder (write 'class/file' or 'path,label'): {_listed(no_class)}")
    if conflicts:
        rel, k, first, had, labels = conflicts[0]
        raise DataError(f"{path}: {len(conflicts)} file(s) listed twice with different "
                        f"labels, e.g. {rel}: {';'.join(had)} (line {first}) and "
                        f"{';'.join(labels)} (line {k})")
    if repeats:
        log.warning("%s: %d line(s) repeat a file already listed with the same label: each "
                    "file is used once (%s)", path, len(repeats),
                    _listed([(r[0], r[1]) for r in repeats]))
    missing = [(rel, k) for rel, _, k in items if not os.path.isfile(root_abs / rel)]
    if missing:
        what = (f"none of the {len(items)} listed files exists" if len(missing) == len(items)
                else f"{len(missing)} of the {len(items)} listed files do not exist")
        raise DataError(f"{path}: {what} in {root}: {_listed(missing)}"
                        f"{_root_hint(root_abs, [r for r, _ in missing])}")
    if classes is None:
        flat = {t for _, ts, _ in items for t in ts}
        if all(t.isdigit() for t in flat):
            classes = [str(i) for i in range(max(int(t) for t in flat) + 1)]
        else:
            classes = sorted(flat)
    pos = {c: i for i, c in enumerate(classes)}
    unknown = [(t, k) for _, ts, k in items for t in ts if t not in pos]
    if unknown:
        names = sorted({t for t, _ in unknown})
        shown = ", ".join(classes[:5]) + (" ..." if len(classes) > 5 else "")
        raise DataError(f"{path}: {len(names)} label(s) not among the {len(classes)} classes "
                        f"of {known} ({shown}): {_listed(unknown)}")
    samples = [(root / rel, pos[ts[0]]) for rel, ts, _ in items]
    multi = [sorted({pos[t] for t in ts}) for _, ts, _ in items]
    index = ImageIndex(samples, list(classes), root, find_class_names(root, path.parent),
                       meta={"layout": "list", "file": str(path), "data_dir": str(root)})
    if any(len(m) > 1 for m in multi):
        index.multilabels = multi
    return index


index_csv = index_list  # the earlier name
