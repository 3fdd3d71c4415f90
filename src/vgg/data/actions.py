"""PASCAL VOC-2012 action classification (the data of Table 12): the persons of a split,
each with its box and a flag per action, read as the devkit lays them out.

The devkit (``VOCinit.m``, ``VOCreadrecxml.m``, ``example_action.m``,
``VOCevalaction.m``)::

    ImageSets/Action/<split>.txt            the images of the split, one id a line
    ImageSets/Action/<action>_<split>.txt   "<image id> <object index> <flag>" a line:
                                            every person of the split, flag 1 / -1
                                            (0: not labelled for this action: ignored)
    Annotations/<image id>.xml              each person an <object> with its <bndbox> and
                                            <actions><jumping>0</jumping>...</actions>

The object index is 1-based and counts every ``<object>`` of the file, in order. The
ten actions are :data:`ACTIONS`; the 2011+ releases add ``other`` (a person doing none
of them): such persons are kept as negatives of all ten (the devkit's distractors), and
``other`` itself is neither trained nor scored, as ``example_action.m`` skips it and the
challenge's mAP is over the ten.

Where the flags come from: the per-action lists when the split has any (they are what
the devkit trains and scores by); a flag of the XML that contradicts its list is named
and the list's is used. A split without per-action lists is read from ``<split>.txt``
(an image id a line; an optional second column names one object) and the ``<actions>``
of its objects: ``1`` positive, ``0`` negative, an action missing from ``<actions>``
not labelled (ignored for that action).

Bad and partial annotations never stop a run; each is named once (at most ``MAX_NAMED``
warnings of one kind, the rest at debug level) and counted in the split's
:class:`ActionReport`: a list line that does not parse, a person without annotation
file, an object index the file does not have, a person's box (malformed, reaching
outside the image: clipped, without area: dropped; :func:`.annotations.check_boxes`),
an ``<actions>`` flag neither 0 nor 1, a person missing from one action's list (ignored
for that action), a person labelled for no action at all (dropped).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .annotations import check_boxes
from .box_formats import RawAnnotation, RawObject, parse_voc_xml
from .boxes import MAX_EXAMPLES, MAX_NAMED, Box, BoxReport
from .decode import Region
from .index import ImageIndex

log = logging.getLogger(__name__)

__all__ = ["ACTIONS", "OTHER", "PERSON", "ActionReport", "ActionSet", "Person",
           "action_splits", "folder_actions", "is_action_folder", "read_actions"]

ACTIONS = ("jumping", "phoning", "playinginstrument", "reading", "ridingbike",
           "ridinghorse", "running", "takingphoto", "usingcomputer", "walking")
OTHER = "other"          # VOC-2011+: none of the ten; kept as a negative, not scored
PERSON = "person"        # the class of the objects the lists name
SPLITS = ("train", "val", "trainval", "test")
# the kinds of problem an ActionReport counts beside its BoxReport's
KINDS = ("bad_line", "no_object", "no_actions", "bad_flag", "disagree", "unlisted",
         "unlabelled")


def action_dir(root: str | Path) -> Path:
    return Path(root) / "ImageSets" / "Action"


def is_action_folder(root: str | Path) -> bool:
    """Whether ``root`` is a VOC year folder with the action task's lists."""
    d = action_dir(root)
    return d.is_dir() and any(d.glob("*.txt"))


def folder_actions(root: str | Path) -> list[str]:
    """The actions of a VOC year folder: those of :data:`ACTIONS` with a list
    (``<action>_<split>.txt``) for some split, in the devkit's order; all ten when it has
    no per-action list (the flags then come from the XML)."""
    d = action_dir(root)
    found = [a for a in ACTIONS if any(d.glob(f"{a}_*.txt"))]
    return found or list(ACTIONS)


@dataclass
class Person:
    """One annotated person: the image (``image`` id, ``path``), its 1-based object
    index in the annotation file (the devkit's), and its box (0-based pixel edges,
    clipped to the image)."""

    image: str
    index: int
    path: Path
    box: Box

    @property
    def id(self) -> str:
        return f"{self.image}#{self.index}"


@dataclass
class ActionReport:
    """What reading one split found. ``listed``: persons the split names; ``persons``:
    kept. ``boxes``: the persons' annotation and box problems (as for any box source);
    the rest are the action lists' own: ``bad_line`` (unparsable list lines),
    ``no_object`` (an index the annotation file does not have), ``no_actions`` (a named
    object without ``<actions>``), ``bad_flag`` (an ``<actions>`` value neither 0 nor
    1), ``disagree`` (the XML's flag contradicts the list's; the list's is used),
    ``unlisted`` ((person, action) pairs with no flag: ignored for that action),
    ``unlabelled`` (persons with no flag for any action: dropped); ``missing_lists``:
    actions without a ``<action>_<split>.txt`` while others have one."""

    source: str = ""
    listed: int = 0
    persons: int = 0
    images: int = 0
    boxes: BoxReport = field(default_factory=BoxReport)
    bad_line: int = 0
    no_object: int = 0
    no_actions: int = 0
    bad_flag: int = 0
    disagree: int = 0
    unlisted: int = 0
    unlabelled: int = 0
    missing_lists: list[str] = field(default_factory=list)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def problems(self) -> int:
        return self.boxes.problems + sum(getattr(self, k) for k in KINDS) + \
            len(self.missing_lists)

    def summary(self) -> str:
        s = (f"persons from {self.source}: {self.persons} of {self.listed} listed persons "
             f"kept, in {self.images} images")
        parts = [f"{n} {what}" for n, what in (
            (self.boxes.missing, "without annotation file"),
            (self.boxes.malformed, "unreadable (file or object)"),
            (self.boxes.unknown_class, "not a person"),
            (self.boxes.degenerate, "boxes without area dropped"),
            (self.boxes.clipped, "boxes clipped to the image"),
            (self.bad_line, "list lines unreadable"),
            (self.no_object, "object indices not in their file"),
            (self.no_actions, "objects without <actions>"),
            (self.bad_flag, "<actions> flags neither 0 nor 1"),
            (self.disagree, "XML flags contradicting the list (the list's used)"),
            (self.unlisted, "(person, action) pairs unlabelled: ignored"),
            (self.unlabelled, "persons labelled for no action: dropped")) if n]
        if self.missing_lists:
            parts.append("no list for " + ", ".join(self.missing_lists))
        return s + ("; " + "; ".join(parts) if parts else "; no problems")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Named:
    """One warning per problem, at most MAX_NAMED per kind (the rest at debug level);
    MAX_EXAMPLES messages per kind kept in the report."""

    def __init__(self, report: ActionReport) -> None:
        self.report = report
        self.count: dict[str, int] = {}

    def __call__(self, kind: str, where: str, msg: str) -> None:
        n = self.count.get(kind, 0)
        self.count[kind] = n + 1
        ex = self.report.examples.setdefault(kind, [])
        if len(ex) < MAX_EXAMPLES:
            ex.append(f"{where}: {msg}")
        log.log(logging.WARNING if n < MAX_NAMED else logging.DEBUG, "action annotation "
                "%s: %s", where, msg)


@dataclass
class ActionSet:
    """The persons of one split and their flags: ``flags`` (P, A) int8, 1 positive,
    -1 negative, 0 not labelled (neither, for that action: the devkit's 0)."""

    root: Path
    split: str
    actions: list[str]
    persons: list[Person]
    flags: np.ndarray
    report: ActionReport
    source: str  # "lists" (the per-action lists) or "xml" (<split>.txt + <actions>)

    def __len__(self) -> int:
        return len(self.persons)

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.persons]

    @property
    def targets(self) -> np.ndarray:
        """(P, A) uint8: 1 where the person does the action."""
        return (self.flags > 0).astype(np.uint8)

    @property
    def ignore(self) -> np.ndarray:
        """(P, A) bool: not labelled for that action (left out of its SVM and AP)."""
        return self.flags == 0

    @property
    def image_ids(self) -> list[str]:
        """The distinct images of the persons, in order."""
        return list(dict.fromkeys(p.image for p in self.persons))

    def image_index(self) -> ImageIndex:
        """The persons' images, each once (ids: :attr:`image_ids`), for whole-image
        descriptors."""
        paths = {p.image: p.path for p in self.persons}
        return ImageIndex([(paths[i], 0) for i in self.image_ids], list(self.actions),
                          self.root, meta=self._meta())

    def box_index(self) -> ImageIndex:
        """One sample per person: its box as a ``Region`` of its image (ids: :attr:`ids`),
        for box descriptors (the region rescaled like a whole image)."""
        return ImageIndex([(Region(p.path, (p.box.x0, p.box.y0, p.box.x1, p.box.y1)), 0)
                           for p in self.persons], list(self.actions), self.root,
                          meta=self._meta())

    def _meta(self) -> dict[str, str]:
        return {"layout": "voc-action", "split": self.split, "data_dir": str(self.root)}


# ------------------------------------------------------------------ the lists

def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read the action list {path}: {e}") from None


def _positive_int(text: str) -> int | None:
    try:
        v = int(text)
    except ValueError:
        return None
    return v if v >= 1 else None


def _read_flag_list(path: Path, named: _Named, report: ActionReport
                   ) -> dict[tuple[str, int], int]:
    """``<action>_<split>.txt`` -> {(image id, object index): flag}; a line that is not
    "id index flag" (flag 1, -1 or 0) is named and counted."""
    out: dict[tuple[str, int], int] = {}
    for n, line in enumerate(_read_lines(path), 1):
        tok = line.split()
        if not tok:
            continue
        idx = _positive_int(tok[1]) if len(tok) == 3 else None
        flag = tok[2] if len(tok) == 3 else ""
        if idx is None or flag not in ("1", "-1", "0"):
            report.bad_line += 1
            named("bad_line", f"{path.name} line {n}", f"{line.strip()!r} is not "
                  "'<image id> <object index (1-based)> <flag 1/-1/0>': left out")
            continue
        out[(tok[0], idx)] = int(flag)
    return out


def _read_set_list(path: Path, named: _Named, report: ActionReport
                  ) -> list[tuple[str, int | None]]:
    """``<split>.txt`` -> [(image id, object index or None)]: the devkit's lists hold an
    image id a line; a second column, when present, names one object (1-based)."""
    out: list[tuple[str, int | None]] = []
    for n, line in enumerate(_read_lines(path), 1):
        tok = line.split()
        if not tok:
            continue
        if len(tok) == 1:
            out.append((tok[0], None))
            continue
        idx = _positive_int(tok[1])
        if len(tok) > 2 or idx is None:
            report.bad_line += 1
            named("bad_line", f"{path.name} line {n}", f"{line.strip()!r} is not "
                  "'<image id> [<object index (1-based)>]': left out")
            continue
        out.append((tok[0], idx))
    return out


# ------------------------------------------------------------------ reading a split

def _xml_flag(obj: RawObject, action: str, where: str, named: _Named,
              report: ActionReport) -> int:
    """The flag of ``action`` in the object's ``<actions>``: 1, -1, or 0 (absent or
    unreadable, the latter named)."""
    text = (obj.actions or {}).get(action)
    if text is None:
        return 0
    if text in ("0", "1"):
        return 1 if text == "1" else -1
    report.bad_flag += 1
    named("bad_flag", where, f"<{action}>{text}</{action}> is neither 0 nor 1: not labelled "
          "for this action")
    return 0


def read_actions(root: str | Path, split: str, actions: list[str] | tuple[str, ...]
                 = ACTIONS) -> ActionSet:
    """The persons of ``split`` of a VOC year folder (``VOCdevkit/VOC2012``) with their
    boxes and flags (see the module docstring). Raises DataError when the folder has no
    action lists for ``split`` or no usable person is left."""
    root = Path(root)
    adir = action_dir(root)
    if not adir.is_dir():
        raise DataError(f"{root} has no ImageSets/Action/: not a VOC-2010+ folder with the "
                        f"action task (VOCdevkit/VOC2012)")
    actions = list(actions)
    lists = {a: adir / f"{a}_{split}.txt" for a in actions}
    have = {a: p for a, p in lists.items() if p.is_file()}
    set_file = adir / f"{split}.txt"
    report = ActionReport(source=f"{root.name} {split} (ImageSets/Action)")
    named = _Named(report)
    anns: dict[str, RawAnnotation | None] = {}

    def annotation(image: str) -> RawAnnotation | None:
        if image not in anns:
            x = root / "Annotations" / f"{image}.xml"
            anns[image] = parse_voc_xml(x) if x.is_file() else None
        return anns[image]

    # who: (image, index) pairs, and the flags the lists give them
    listed: dict[tuple[str, int], dict[str, int]] = {}
    if have:
        source = "lists"
        report.missing_lists = [a for a in actions if a not in have]
        for a in report.missing_lists:
            named("missing_list", str(lists[a]), f"no list for {a!r}: it is not scored")
        for a, p in have.items():
            for key, flag in _read_flag_list(p, named, report).items():
                listed.setdefault(key, {})[a] = flag
    elif set_file.is_file():
        source = "xml"
        for image, idx in _read_set_list(set_file, named, report):
            ann = annotation(image)
            if idx is not None:
                listed.setdefault((image, idx), {})  # checked (and named) below
            elif ann is None:
                report.boxes.missing += 1
                named("missing", str(root / "Annotations" / f"{image}.xml"),
                      f"no annotation file for {image}: its persons are left out")
            elif ann.broken:
                report.boxes.malformed += 1
                named("malformed", ann.where, f"{ann.broken}: its persons are left out")
            else:
                for k, o in enumerate(ann.objects, 1):
                    if o.actions is not None:
                        listed.setdefault((image, k), {})
    else:
        raise DataError(f"no action list for split {split!r} in {adir} (looked for "
                        f"{set_file.name} and <action>_{split}.txt)")
    report.listed = len(listed)

    persons: list[Person] = []
    rows: list[list[int]] = []
    for (image, idx), given in sorted(listed.items()):
        where = f"{image}.xml object {idx}"
        ann = annotation(image)
        path = root / "JPEGImages" / f"{image}.jpg"
        if ann is None:
            report.boxes.missing += 1
            named("missing", str(root / "Annotations" / f"{image}.xml"),
                  f"no annotation file for person {idx} of {image}: left out")
            continue
        if ann.broken:
            report.boxes.malformed += 1
            named("malformed", ann.where, f"{ann.broken}: its persons are left out")
            continue
        if idx > len(ann.objects):
            report.no_object += 1
            named("no_object", ann.where, f"the list names object {idx}, the file has "
                  f"{len(ann.objects)}: left out")
            continue
        obj = ann.objects[idx - 1]
        if source == "xml" and obj.actions is None:
            report.no_actions += 1
            named("no_actions", where, "has no <actions>: left out")
            continue
        probs: list[tuple[str, str, str]] = []
        one = RawAnnotation(ann.where, ann.size, [obj])
        boxes = check_boxes(one, path, {PERSON}, report.boxes, problems=probs)
        for w, kind, msg in probs:
            named(kind, w, msg)
        if not boxes:
            continue
        flags = []
        for a in actions:
            if source == "lists":
                f = given.get(a, 0) if a in have else 0
                if a in have and a not in given:
                    report.unlisted += 1
                    named("unlisted", where, f"not in {a}_{split}.txt: not labelled for "
                          f"{a!r}")
                if f and obj.actions is not None and obj.actions.get(a) in ("0", "1") \
                        and (obj.actions[a] == "1") != (f > 0):
                    report.disagree += 1
                    named("disagree", where, f"<{a}>{obj.actions[a]}</{a}> but "
                          f"{a}_{split}.txt says {f}: the list's flag is used")
            else:
                f = _xml_flag(obj, a, where, named, report)
                if f == 0 and a not in (obj.actions or {}):
                    report.unlisted += 1
                    named("unlisted", where, f"no <{a}> in <actions>: not labelled for "
                          f"{a!r}")
            flags.append(f)
        if not any(flags):
            report.unlabelled += 1
            named("unlabelled", where, "labelled for none of the actions: left out")
            continue
        persons.append(Person(image, idx, path, boxes[0]))
        rows.append(flags)
    report.persons = len(persons)
    report.images = len({p.image for p in persons})
    log.log(logging.WARNING if report.problems else logging.DEBUG, "%s", report.summary())
    if not persons:
        ex = next((e[0] for e in report.examples.values() if e), None)
        raise DataError(f"no usable person in split {split!r} of {root}"
                        + (f" (e.g. {ex})" if ex else ""))
    flags_a = np.array(rows, np.int8).reshape(len(persons), len(actions))
    return ActionSet(root, split, actions, persons, flags_a, report, source)


def _labelled(root: Path, split: str, actions: list[str] | tuple[str, ...]) -> bool:
    """Whether ``split`` has action labels: a per-action list with a 1 or -1 flag, or
    (without lists) objects of its images with an ``<actions>`` flag of 1."""
    adir = action_dir(root)
    lists = [adir / f"{a}_{split}.txt" for a in actions]
    if any(p.is_file() for p in lists):
        for p in lists:
            if p.is_file() and any(len(t) == 3 and t[2] in ("1", "-1") for t in
                                   (line.split() for line in _read_lines(p))):
                return True
        return False
    set_file = adir / f"{split}.txt"
    if not set_file.is_file():
        return False
    for line in _read_lines(set_file):
        tok = line.split()
        x = root / "Annotations" / f"{tok[0]}.xml" if tok else None
        if x is not None and x.is_file():
            if any(o.actions and "1" in o.actions.values()
                   for o in parse_voc_xml(x).objects):
                return True
    return False


def action_splits(root: str | Path, actions: list[str] | tuple[str, ...] = ACTIONS
                  ) -> tuple[str, str, list[str]]:
    """(train split, test split, notes): trainval / test when the test persons are
    labelled, else train / val (VOC-2012: its test annotations were never released)."""
    root = Path(root)
    if not action_dir(root).is_dir():
        raise DataError(f"{root} has no ImageSets/Action/: give a VOC-2010+ year folder "
                        f"with the action task (e.g. VOCdevkit/VOC2012)")
    if _labelled(root, "test", actions) and _labelled(root, "trainval", actions):
        return "trainval", "test", []
    if not (_labelled(root, "train", actions) and _labelled(root, "val", actions)):
        raise DataError(f"{action_dir(root)}: no labelled train and val (or trainval and "
                        f"test) action lists")
    return "train", "val", ["the test persons have no action labels (as for VOC-2012): "
                            "trained on train, tested on val"]
