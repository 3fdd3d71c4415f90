"""Indexing datasets as users have them: (path, label) lists plus class names (folder
names, wnids, XML or CSV class names), optional boxes and multi-label vectors.

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

Walking folders: every real folder is walked once. A symbolic link to a folder is
followed unless it points at a folder already walked or at one of its own ancestors (a
cycle): that link is skipped with one warning naming it. Symbolic links to files are
images like any other. Files are images by their extension (``IMAGE_EXTENSIONS``) or, with
any other extension, by their first bytes; hidden files and folders are ignored; the other
files are named in one summary warning per dataset (XML files beside images with the same
stem are annotations, not reported).

Boxes (see ``annotations``): ``index_split`` attaches the XML beside the images or in
``DIR/annotations/<split>/`` and the boxes of the layouts that define them (LOC CSV, VOC,
detection CSV); ``load_boxes(index)`` finds the other sources (ILSVRC bbox folders, ...).
Human-readable class names come from ``LOC_synset_mapping.txt`` / ``synset_words.txt``
("n01440764 tench, Tinca tinca") when one is found next to the data.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from .annotations import (MAX_NAMED, Box, BoxReport, CsvSource, XmlTree, _Given, _multilabels,
                          attach_boxes, csv_kind, label_dirs, load_boxes, parse_voc_xml,
                          read_voc_xml, write_voc_xml)
from .decode import IMAGE_EXTENSIONS, has_image_extension, sniff_image_format

log = logging.getLogger(__name__)

NAME_FILES = ("LOC_synset_mapping.txt", "synset_words.txt", "class_names.txt")

__all__ = ["IMAGE_EXTENSIONS", "Box", "BoxReport", "FileScan", "ImageIndex", "index_csv",
           "index_list", "index_detection_csv", "index_folder", "index_imagenet_val", "index_split",
           "has_split",
           "index_voc", "is_image_file", "list_images", "load_boxes", "read_class_names",
           "read_voc_xml", "scan_images", "write_voc_xml"]


@dataclass
class ImageIndex:
    """A dataset's files. ``samples[i] = (path, label)``; ``classes[label]`` is the class
    name (folder name / wnid / annotation class); ``class_names`` maps them to
    human-readable names; ``boxes`` maps a path to its usable objects and ``box_report``
    says what loading them found; ``multilabels[i]`` lists every class index present in
    image i (multi-label sets only); ``difficult[i]`` the classes image i holds only as
    VOC "difficult" objects (neither positive nor negative when scoring; VOC sets)."""

    samples: list[tuple[Path, int]]
    classes: list[str]
    root: Path | None = None
    class_names: dict[str, str] | None = None
    boxes: dict[Path, list[Box]] | None = None
    multilabels: list[list[int]] | None = None
    meta: dict[str, str] = field(default_factory=dict)
    box_report: BoxReport | None = None
    difficult: list[list[int]] | None = None

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
        """The images ``indices`` with the same classes (``box_report``, which describes
        the whole index, is not carried over)."""
        idx = [int(i) for i in indices]
        samples = [self.samples[i] for i in idx]
        boxes = None if self.boxes is None else {
            p: self.boxes[p] for p, _ in samples if p in self.boxes}
        ml = None if self.multilabels is None else [self.multilabels[i] for i in idx]
        hard = None if self.difficult is None else [self.difficult[i] for i in idx]
        return ImageIndex(samples, list(self.classes), self.root, self.class_names, boxes,
                          ml, dict(self.meta), difficult=hard)


# ------------------------------------------------------------------ finding image files

def is_image_file(path: Path) -> bool:
    """By the name alone: a known image extension and not hidden."""
    return has_image_extension(path) and not path.name.startswith(".")


@dataclass
class FileScan:
    """What ``scan_images`` found: ``images[k]`` under ``tops[k]`` (walk order), files that
    are not images, and ``skipped`` (path, why) for symbolic links not followed, broken
    links and unreadable folders; ``sidecar_xml`` counts XML files beside an image of the
    same stem."""

    images: list[list[Path]]
    not_images: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    sidecar_xml: int = 0


def _dir_key(d: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(d)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def scan_images(tops: Sequence[Path], recursive: bool = True) -> FileScan:
    """Image files under each folder of ``tops``: sorted, a folder's files before its
    sub-folders'; each real folder walked once over all ``tops`` (symbolic links to
    folders are followed after the real folders, unless they lead to a folder already
    walked or to an ancestor); hidden entries ignored; files with an unknown extension
    sniffed. Logs nothing: callers report ``not_images`` and ``skipped``."""
    scan = FileScan([[] for _ in tops])
    visited: dict[tuple[int, int], Path] = {}
    deferred: list[tuple[int, Path, tuple[tuple[int, int], ...]]] = []

    def key_of(p: Path) -> tuple[int, int] | None:
        try:
            st = os.stat(p)
        except OSError as e:
            scan.skipped.append((p, f"cannot read ({e.strerror or e})"))
            return None
        return st.st_dev, st.st_ino

    def walk(k: int, d: Path, chain: tuple[tuple[int, int], ...]) -> None:
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            scan.skipped.append((d, f"cannot read folder ({e.strerror or e})"))
            return
        files: list[Path] = []
        dirs: list[os.DirEntry] = []
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                if e.is_dir():
                    if not recursive:
                        continue
                    if e.is_symlink():
                        deferred.append((k, Path(e.path), chain))
                    else:
                        dirs.append(e)
                elif e.is_file():
                    files.append(Path(e.path))
                elif e.is_symlink():
                    scan.skipped.append((Path(e.path), "broken symbolic link"))
            except OSError as err:
                scan.skipped.append((Path(e.path), f"cannot read ({err.strerror or err})"))
        images, xmls = [], []
        for f in files:
            if has_image_extension(f):
                images.append(f)
            elif f.suffix.lower() == ".xml":
                xmls.append(f)
            elif sniff_image_format(f) is not None:
                images.append(f)
            else:
                scan.not_images.append(f)
        stems = {f.stem for f in images}
        for x in xmls:
            if x.stem in stems:
                scan.sidecar_xml += 1
            else:
                scan.not_images.append(x)
        scan.images[k].extend(images)
        for e in dirs:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError as err:
                scan.skipped.append((Path(e.path), f"cannot read ({err.strerror or err})"))
                continue
            key = (st.st_dev, st.st_ino)
            if key in visited:  # a bind mount or a hard-linked folder
                scan.skipped.append((Path(e.path), f"the same folder as {visited[key]}, "
                                                   "already walked: not followed"))
                continue
            visited[key] = Path(e.path)
            walk(k, Path(e.path), chain + (key,))

    for k, top in enumerate(tops):
        key = key_of(top)
        if key is None:
            continue
        if key in visited:
            scan.skipped.append((top, f"the same folder as {visited[key]}, already walked: "
                                      "not followed"))
            continue
        visited[key] = top
        # The top's ancestors count as its chain: a link back to any of them is a cycle.
        above = tuple(k2 for k2 in (_dir_key(d) for d in Path(os.path.realpath(top)).parents)
                      if k2 is not None)
        walk(k, top, above + (key,))
    while deferred:
        k, link, chain = deferred.pop(0)
        key = key_of(link)
        if key is None:
            continue
        target = os.path.realpath(link)
        if key in chain:
            scan.skipped.append((link, f"symbolic link to {target}, a folder that contains "
                                       "it (a cycle): not followed"))
        elif key in visited:
            scan.skipped.append((link, f"symbolic link to {target}, already walked as "
                                       f"{visited[key]}: not followed"))
        else:
            visited[key] = link
            walk(k, link, chain + (key,))
    return scan


def _names(paths: Sequence[Path], root: Path, n: int = 5) -> str:
    def rel(p: Path) -> str:
        try:
            return str(p.relative_to(root))
        except ValueError:
            return str(p)
    more = f" and {len(paths) - n} more" if len(paths) > n else ""
    return ", ".join(rel(p) for p in paths[:n]) + more


def _report_scan(scan: FileScan, root: Path) -> None:
    """One warning per symbolic link not followed; one summary per kind of skipped file."""
    for p, why in scan.skipped:
        if why.startswith(("symbolic link", "the same folder")):
            log.warning("%s: skipping %s: %s", root, p, why)
    other = [(p, why) for p, why in scan.skipped
             if not why.startswith(("symbolic link", "the same folder"))]
    if scan.not_images:
        n = len(scan.not_images)
        log.warning("%s: skipped %d file%s that %s not images: %s", root, n,
                    "s" if n > 1 else "", "are" if n > 1 else "is",
                    _names(scan.not_images, root))
    if other:
        log.warning("%s: skipped %d unreadable entr%s: %s", root, len(other),
                    "ies" if len(other) > 1 else "y",
                    "; ".join(f"{_names([p], root)} ({why})" for p, why in other[:5])
                    + (f" and {len(other) - 5} more" if len(other) > 5 else ""))


def list_images(paths: Iterable[str | os.PathLike[str]]
                ) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The images among files and folders given by a user: files in the order given,
    folders expanded recursively (as ``scan_images``: sorted, symbolic-link cycles cut,
    hidden entries ignored). Returns ``(images, skipped)`` where ``skipped`` holds
    ``(path, why)``: not found, broken link, not an image, symbolic link not followed,
    unreadable. A file with an image extension is listed without being opened (a broken
    one fails when decoded)."""
    images: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            scan = scan_images([p])
            images.extend(scan.images[0])
            skipped.extend((f, "not an image (unknown extension, no image signature)")
                           for f in scan.not_images)
            skipped.extend(scan.skipped)
        elif p.is_file():
            if has_image_extension(p) or sniff_image_format(p) is not None:
                images.append(p)
            else:
                skipped.append((p, "not an image (unknown extension, no image signature)"))
        elif p.is_symlink():
            skipped.append((p, "broken symbolic link"))
        else:
            skipped.append((p, "not found"))
    return images, skipped


# ------------------------------------------------------------------ class names

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


# ------------------------------------------------------------------ layouts

def _subdirs(d: Path) -> list[str]:
    return sorted(e.name for e in d.iterdir() if e.is_dir() and not e.name.startswith("."))


def index_folder(root: str | Path, classes: list[str] | None = None,
                 annotations: str | Path | None = None) -> ImageIndex:
    """ImageFolder layout ``root/<class>/**/<image>``; classes sorted (or given: then every
    folder must be one of them). Boxes from VOC XML beside the images or in the parallel
    tree ``annotations``. Raises DataError naming ``root`` when missing or empty."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    dirs = _subdirs(root)
    if not dirs:
        raise DataError(f"no class folders in {root} (expected {root}/<class>/<image>)")
    if classes is None:
        classes = dirs
    else:
        unknown = sorted(set(dirs) - set(classes))
        if unknown:
            raise DataError(f"{root} has class folders not among the {len(classes)} known "
                            f"classes: {', '.join(unknown[:5])}")
    loose = [p for p in root.iterdir() if p.is_file() and is_image_file(p)]
    if loose:
        log.warning("%s: %d image%s directly in the folder belong%s to no class folder: "
                    "ignored (%s)", root, len(loose), "s" if len(loose) > 1 else "",
                    "" if len(loose) > 1 else "s", _names(sorted(loose), root))
    scan = scan_images([root / d for d in dirs])
    _report_scan(scan, root)
    pos = {c: i for i, c in enumerate(classes)}
    samples = [(p, pos[d]) for d, imgs in zip(dirs, scan.images) for p in imgs]
    if not samples:
        other = (f"; {len(scan.not_images)} other files, e.g. "
                 f"{_names(scan.not_images, root, 3)}" if scan.not_images else "")
        raise DataError(f"no image files under {root} (extensions: "
                        f"{', '.join(sorted(IMAGE_EXTENSIONS))}, or image content{other})")
    index = ImageIndex(samples, list(classes), root,
                       _find_class_names(root, root.parent), meta={"layout": "folders"})
    if annotations is not None or scan.sidecar_xml:
        attach_boxes(index, XmlTree(None if annotations is None else Path(annotations),
                                    root, "", beside=True))
    return index


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


def index_imagenet_val(val_dir: str | Path, *, classes: list[str] | None = None,
                       solution_csv: str | Path | None = None,
                       ground_truth: str | Path | None = None, meta: str | Path | None = None,
                       class_names: dict[str, str] | None = None) -> ImageIndex:
    """ILSVRC-2012 flat val (``ILSVRC2012_val_*.JPEG``) labelled by ``LOC_val_solution.csv``
    (its first wnid per image; its boxes become ``boxes``) or by the devkit ground truth
    (1-based ILSVRC2012_IDs in file order) + ``meta.mat``. ``classes`` (the training wnids,
    sorted) fix the label numbering; without them the wnids found are sorted."""
    val_dir = Path(val_dir)
    scan = scan_images([val_dir], recursive=False)
    _report_scan(scan, val_dir)
    files = scan.images[0]
    if not files:
        raise DataError(f"no images in {val_dir}")
    source = None
    if solution_csv is not None:
        source = CsvSource(solution_csv, "loc")
        wnid = {k: a.objects[0].name for k, a in source.entries.items()
                if a.objects and a.objects[0].name}
        missing = [p.name for p in files if p.stem not in wnid]
        if missing:
            raise DataError(f"{solution_csv} has no label for {len(missing)} images "
                            f"of {val_dir}, e.g. {missing[0]}")
        wnids = [wnid[p.stem] for p in files]
        label_file = str(solution_csv)
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
        label_file = str(ground_truth)
    else:
        raise DataError(f"{val_dir} is a flat folder of images but no labels were found "
                        "(LOC_val_solution.csv, or the devkit's "
                        "ILSVRC2012_validation_ground_truth.txt + meta.mat)")
    if classes is None:
        classes = sorted(set(wnids))
    pos = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(wnids) - set(pos))
    if unknown:
        raise DataError(f"{label_file} names classes not in the training set: {unknown[:5]}")
    samples = [(p, pos[w]) for p, w in zip(files, wnids)]
    index = ImageIndex(samples, list(classes), val_dir, class_names,
                       meta={"layout": "imagenet-flat-val", "labels": label_file})
    if source is not None:
        attach_boxes(index, source)
    return index


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
    index = ImageIndex(samples, list(classes), root, _find_class_names(root, path.parent),
                       meta={"layout": "list", "file": str(path), "data_dir": str(root)})
    if any(len(m) > 1 for m in multi):
        index.multilabels = multi
    return index


index_csv = index_list  # the earlier name


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
    attach_boxes(index, _Given(anns, str(root / "Annotations"),
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
        classes = sorted({o.name for a in src.entries.values() for o in a.objects if o.name})
    index = ImageIndex([(p, 0) for p in paths], list(classes), root,
                       _find_class_names(root, path.parent),
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
    index.multilabels = _multilabels(index)
    log.log(logging.WARNING if report.problems else logging.DEBUG, "%s", report.summary())
    return index


# ------------------------------------------------------------------ index_split

def _first_file(names: tuple[str, ...], dirs: list[Path]) -> Path | None:
    for d in dirs:
        for n in names:
            if (d / n).is_file():
                return d / n
    return None


def _csv_classes(path: Path) -> list[str] | None:
    try:
        entries = CsvSource(path, "detection").entries
    except DataError:
        return None
    return sorted({o.name for a in entries.values() for o in a.objects if o.name}) or None


def _train_classes(data_dir: Path) -> list[str] | None:
    """The class names of DIR's train split (class folders, or a detection CSV)."""
    train = data_dir / "train"
    if train.is_dir():
        return _subdirs(train) or None
    f = data_dir / "train_labels.csv"
    if f.is_file() and csv_kind(f) == "detection":
        return _csv_classes(f)
    return None


_NOT_SPLITS = {"annotations", "Annotations", "ImageSets", "JPEGImages", "images",
               "SegmentationClass", "SegmentationObject", "devkit", "LOC"}


def _what_is_there(data_dir: Path) -> str:
    folders = [d for d in _subdirs(data_dir) if d not in _NOT_SPLITS]
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
        if _subdirs(split_dir):
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
