"""VOC-2012 action classification data (Table 12): the devkit's ImageSets/Action lists and
<actions> flags read on a hand-written fragment, and the generated voc-action layout."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from vgg.cli import main
from vgg.data.actions import ACTIONS, action_splits, folder_actions, read_actions
from vgg.data.box_formats import parse_voc_xml
from vgg.data.boxes import Box
from vgg.errors import DataError

FLAGS_1 = {"phoning": 1}                      # image 1, object 1
FLAGS_3 = {"walking": 1, "running": 1}        # image 1, object 3: two actions


def _obj(name: str, box: str, actions: dict[str, int] | None, skip: str = "") -> str:
    acts = "" if actions is None else "<actions>" + "".join(
        f"<{a}>{actions.get(a, 0)}</{a}>" for a in ACTIONS if a != skip) + "</actions>"
    return f"<object><name>{name}</name><bndbox>{box}</bndbox>{acts}</object>"


def _box(x0: object, y0: object, x1: object, y1: object) -> str:
    return f"<xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax>"


@pytest.fixture()
def fragment(tmp_path: Path) -> Path:
    """Two images, three usable persons, a bicycle between two of them, one person with a
    broken box; flags in the per-action lists of 'train' (jumping not labelled for one
    person, a bad line in one list) and in the XML."""
    root = tmp_path / "VOC2012"
    (root / "Annotations").mkdir(parents=True)
    adir = root / "ImageSets" / "Action"
    adir.mkdir(parents=True)
    (root / "Annotations" / "2010_000001.xml").write_text(
        "<annotation><size><width>60</width><height>40</height></size>"
        + _obj("person", _box(1, 1, 20, 40), FLAGS_1)
        + _obj("bicycle", _box(20, 10, 40, 40), None)
        + _obj("person", _box(41, 2, 60, 39), FLAGS_3, skip="jumping")
        + "</annotation>")
    (root / "Annotations" / "2010_000002.xml").write_text(
        "<annotation><size><width>50</width><height>50</height></size>"
        + _obj("person", _box("abc", 1, 10, 10), {"reading": 1})      # broken
        + _obj("person", _box(5, 5, 70, 50), {"other": 1})            # reaches outside
        + "</annotation>")
    (adir / "train.txt").write_text("2010_000001\n2010_000002\n")
    persons = {("2010_000001", 1): FLAGS_1, ("2010_000001", 3): FLAGS_3,
               ("2010_000002", 1): {"reading": 1}, ("2010_000002", 2): {}}
    for a in ACTIONS:
        lines = [f"{i} {k} {1 if f.get(a) else -1:2d}" for (i, k), f in persons.items()
                 if not (a == "jumping" and k == 3)]
        if a == "jumping":
            lines.append("2010_000001 3  0")      # the devkit's 0: not labelled
        if a == "reading":
            lines.append("2010_000001 x 1")       # unreadable
        (adir / f"{a}_train.txt").write_text("\n".join(lines) + "\n")
    return root


def test_reader_on_a_devkit_fragment(fragment: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        s = read_actions(fragment, "train")
    assert s.source == "lists" and s.actions == list(ACTIONS)
    assert s.ids == ["2010_000001#1", "2010_000001#3", "2010_000002#2"]  # 1-based, all objects
    assert s.persons[0].box == Box("person", 0, 0, 20, 40)                # VOC -> pixel edges
    assert s.persons[2].box == Box("person", 4, 4, 50, 50)                # clipped to 50x50
    col = {a: k for k, a in enumerate(ACTIONS)}
    assert s.flags[0].tolist() == [1 if a == "phoning" else -1 for a in ACTIONS]
    assert s.flags[1, col["walking"]] == s.flags[1, col["running"]] == 1
    assert s.flags[1, col["jumping"]] == 0 and s.ignore[1, col["jumping"]]
    assert (s.flags[2] == -1).all()                  # 'other': a negative of all ten
    assert s.targets.sum() == 3 and s.image_ids == ["2010_000001", "2010_000002"]
    r = s.report
    assert (r.listed, r.persons, r.images) == (4, 3, 2)
    assert (r.boxes.malformed, r.boxes.clipped, r.bad_line) == (1, 1, 1)
    assert r.problems == 3 and "1 list lines unreadable" in r.summary()
    # each problem named once, the broken object by its file and index
    broken = [m for m in caplog.messages if "object 1" in m and "abc" in m]
    assert len(broken) == 1 and "2010_000002.xml" in broken[0]
    assert sum("line 5" in m for m in caplog.messages) == 1
    # the descriptors' inputs: images once, a Region per person
    assert len(s.image_index()) == 2 and [p.stem for p in s.image_index().paths] == [
        "2010_000001", "2010_000002"]
    region = s.box_index().samples[1][0]
    assert region.box == (41 - 1, 2 - 1, 60, 39) and region.path.name == "2010_000001.jpg"


def test_flags_from_the_xml_without_lists_and_disagreements(fragment: Path) -> None:
    adir = fragment / "ImageSets" / "Action"
    phoning = (adir / "phoning_train.txt").read_text()
    (adir / "phoning_train.txt").write_text(phoning.replace("2010_000001 1  1",
                                                            "2010_000001 1 -1"))
    s = read_actions(fragment, "train")
    assert s.report.disagree == 1 and s.flags[0, ACTIONS.index("phoning")] == -1  # the list's
    for a in ACTIONS:
        (adir / f"{a}_train.txt").unlink()
    x = read_actions(fragment, "train")
    assert x.source == "xml" and x.ids == ["2010_000001#1", "2010_000001#3",
                                          "2010_000002#2"]
    assert x.flags[1, ACTIONS.index("jumping")] == 0 and x.report.unlisted == 1
    assert x.flags[0, ACTIONS.index("phoning")] == 1 and x.targets.sum() == 3
    # an index that the file does not have, and a bad flag value
    (adir / "train.txt").write_text("2010_000001 7\n2010_000001 1\n")
    xml = fragment / "Annotations" / "2010_000001.xml"
    xml.write_text(xml.read_text().replace("<phoning>1</phoning>", "<phoning>yes</phoning>",
                                           1))
    y = read_actions(fragment, "train")
    assert y.report.no_object == 1 and y.report.bad_flag == 1 and y.ids == ["2010_000001#1"]
    assert y.flags[0, ACTIONS.index("phoning")] == 0


def test_splits_and_refusals(fragment: Path) -> None:
    with pytest.raises(DataError, match="no labelled train and val"):
        action_splits(fragment)
    adir = fragment / "ImageSets" / "Action"
    for a in ACTIONS:
        (adir / f"{a}_val.txt").write_text((adir / f"{a}_train.txt").read_text())
        (adir / f"{a}_test.txt").write_text("2010_000001 1 0\n")   # released unlabelled
    train, test, notes = action_splits(fragment)
    assert (train, test) == ("train", "val") and "no action labels" in notes[0]
    assert folder_actions(fragment) == list(ACTIONS)
    with pytest.raises(DataError, match="no action list for split 'trainval'"):
        read_actions(fragment, "trainval")
    with pytest.raises(DataError, match="no ImageSets/Action"):
        read_actions(fragment.parent, "train")
    (fragment / "Annotations" / "2010_000001.xml").unlink()
    (fragment / "Annotations" / "2010_000002.xml").write_text("<annotation><oops")
    with pytest.raises(DataError, match="no usable person"):
        read_actions(fragment, "train")


def test_synth_voc_action_layout(tmp_path: Path) -> None:
    out = tmp_path / "VOCaction"
    assert main(["data", "synth", str(out), "--layout", "voc-action", "--classes", "3",
                 "--train-per-class", "5", "--val-per-class", "2", "--min-side", "48",
                 "--max-side", "64", "--workers", "0"]) == 0
    assert action_splits(out) == ("trainval", "test", [])
    assert folder_actions(out) == list(ACTIONS[:3])
    tv = read_actions(out, "trainval", ACTIONS[:3])
    assert len(tv.image_ids) == 15 and not tv.report.problems and tv.source == "lists"
    # the first person of every image does the action it was made for; the others differ
    per_image: dict[str, list[np.ndarray]] = {}
    for p, f in zip(tv.persons, tv.flags):
        per_image.setdefault(p.image, []).append(f)
    for flags in per_image.values():
        assert (flags[0] == 1).sum() == 1
        pos = [int(np.argmax(f)) for f in flags if (f == 1).any()]
        assert len(pos) == len(set(pos))
    # the XML's <actions> agree with the lists, "other" included
    objs = parse_voc_xml(out / "Annotations" / f"{tv.persons[0].image}.xml").objects
    assert objs[0].actions is not None and set(objs[0].actions) == {*ACTIONS[:3], "other"}
    train = read_actions(out, "train", ACTIONS[:3])
    val = read_actions(out, "val", ACTIONS[:3])
    assert sorted(train.image_ids + val.image_ids) == sorted(tv.image_ids)
    assert main(["data", "synth", str(tmp_path / "x"), "--layout", "voc-action",
                 "--classes", "11"]) == 2
