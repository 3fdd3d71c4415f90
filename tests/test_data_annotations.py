"""Box annotations (Appendix A): every source format, the coordinate convention, and each
kind of bad annotation counted and named once."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image

from vgg.data import Box, index_folder, index_split, load_boxes
from vgg.data.box_formats import csv_kind, parse_voc_xml
from vgg.errors import DataError


def _img(p: Path, w: int = 40, h: int = 30) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (90, 120, 30)).save(p)
    return p


def _xml(p: Path, objects: list[tuple], size: tuple[int, int] | None = (40, 30)) -> Path:
    """VOC XML with the numbers written exactly as given (strings allowed: malformed)."""
    p.parent.mkdir(parents=True, exist_ok=True)
    s = ["<annotation>"]
    if size is not None:
        s.append(f"<size><width>{size[0]}</width><height>{size[1]}</height>"
                 "<depth>3</depth></size>")
    for name, *c in objects:
        box = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), c))
        s.append(f"<object><name>{name}</name><bndbox>{box}</bndbox></object>")
    p.write_text("".join(s) + "</annotation>\n")
    return p


def _messages(caplog, needle: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and needle in r.getMessage()]


# ------------------------------------------------------------------ coordinates

def test_voc_numbers_become_pixel_edges(tmp_path: Path) -> None:
    # a box over the whole 40 x 30 image is written 1,1,40,30 (1-based inclusive)
    _img(tmp_path / "train" / "cat" / "a.jpg")
    _xml(tmp_path / "train" / "cat" / "a.xml", [("cat", 1, 1, 40, 30), ("cat", 11, 6, 20, 15)])
    idx = index_split(tmp_path, "train")
    assert idx.boxes[idx.paths[0]] == [Box("cat", 0, 0, 40, 30), Box("cat", 10, 5, 20, 15)]
    assert idx.box_report.problems == 0 and idx.box_report.clipped == 0


def test_loc_and_detection_csv_use_the_xml_numbers(tmp_path: Path) -> None:
    """The three formats holding the same numbers give the same boxes."""
    _img(tmp_path / "train" / "n01" / "n01_7.jpg")
    _xml(tmp_path / "xml" / "n01" / "n01_7.xml", [("n01", 3, 4, 25, 30)])
    (tmp_path / "LOC_train_solution.csv").write_text(
        "ImageId,PredictionString\nn01_7,n01 3 4 25 30 \n")
    (tmp_path / "det.csv").write_text("filename,width,height,class,xmin,ymin,xmax,ymax\n"
                                      "train/n01/n01_7.jpg,40,30,n01,3,4,25,30\n")
    assert csv_kind(tmp_path / "LOC_train_solution.csv") == "loc"
    assert csv_kind(tmp_path / "det.csv") == "detection"
    idx = index_split(tmp_path, "train")
    want = {idx.paths[0]: [Box("n01", 2, 3, 25, 30)]}
    for source in (tmp_path / "xml", tmp_path / "LOC_train_solution.csv", tmp_path / "det.csv"):
        load_boxes(idx, source)
        assert idx.boxes == want, source
    load_boxes(idx)  # found by itself: LOC_train_solution.csv next to the data
    assert idx.boxes == want and idx.box_report.source.endswith("LOC_train_solution.csv")


# ------------------------------------------------------------------ sources

def test_xml_beside_the_images(tmp_path: Path, caplog) -> None:
    _img(tmp_path / "dog" / "a.jpg")
    _xml(tmp_path / "dog" / "a.xml", [("dog", 5, 5, 20, 20)])
    _img(tmp_path / "dog" / "b.jpg")                       # no XML
    _img(tmp_path / "cat" / "c.png")
    _xml(tmp_path / "cat" / "c.xml", [("cat", 1, 1, 10, 10), ("dog", 20, 10, 30, 20)])
    with caplog.at_level(logging.WARNING, logger="vgg.data"):
        idx = index_folder(tmp_path)
    a, b, c = (tmp_path / "dog" / "a.jpg", tmp_path / "dog" / "b.jpg", tmp_path / "cat" / "c.png")
    assert set(idx.boxes) == {a, c} and idx.boxes[c][1] == Box("dog", 19, 9, 30, 20)
    r = idx.box_report
    assert (r.images, r.with_boxes, r.boxes, r.missing) == (3, 2, 3, 1)
    assert idx.multilabels == [[0, 1], [1], [1]]  # c.png holds a dog too
    # the sidecar XML files are annotations, not "files that are not images"
    assert not _messages(caplog, "not images")
    assert len(_messages(caplog, "b.jpg")) == 1


def test_parallel_tree_is_found_by_load_boxes(tmp_path: Path) -> None:
    _img(tmp_path / "val" / "cat" / "a.jpg")
    _img(tmp_path / "val" / "cat" / "b.jpg")
    idx = index_split(tmp_path, "val")
    assert idx.boxes is None
    _xml(tmp_path / "annotations" / "val" / "cat" / "a.xml", [("cat", 2, 2, 9, 9)])
    _xml(tmp_path / "annotations" / "val" / "cat" / "b.xml", [("cat", 3, 3, 9, 9)])
    r = load_boxes(idx)
    assert r.with_boxes == 2 and idx.boxes[idx.paths[1]] == [Box("cat", 2, 2, 9, 9)]


def test_ilsvrc_bbox_folders(tmp_path: Path) -> None:
    for split, stem in (("train", "n02_1"), ("val", "ILSVRC2012_val_00000001")):
        _img(tmp_path / split / "n02" / f"{stem}.JPEG")
    _xml(tmp_path / "ILSVRC2012_bbox_train_v2" / "n02" / "n02_1.xml", [("n02", 1, 2, 30, 20)])
    _xml(tmp_path / "ILSVRC2012_bbox_val_v3" / "val" / "ILSVRC2012_val_00000001.xml",
         [("n02", 4, 4, 8, 8)])
    tr, va = index_split(tmp_path, "train"), index_split(tmp_path, "val")
    assert load_boxes(tr).with_boxes == 1 and tr.boxes[tr.paths[0]] == [Box("n02", 0, 1, 30, 20)]
    assert load_boxes(va).with_boxes == 1 and va.boxes[va.paths[0]] == [Box("n02", 3, 3, 8, 8)]
    # Kaggle's layout: ILSVRC/Data/CLS-LOC/<split>/... + ILSVRC/Annotations/CLS-LOC/<split>/...
    k = tmp_path / "kaggle" / "ILSVRC"
    _img(k / "Data" / "CLS-LOC" / "train" / "n03" / "n03_5.JPEG")
    _xml(k / "Annotations" / "CLS-LOC" / "train" / "n03" / "n03_5.xml", [("n03", 1, 1, 5, 5)])
    kt = index_split(k / "Data" / "CLS-LOC", "train")
    assert load_boxes(kt).boxes == 1 and kt.boxes[kt.paths[0]] == [Box("n03", 0, 0, 5, 5)]


def test_detection_csv_layout(tmp_path: Path) -> None:
    """The raccoon layout: images/ + annotations/ + <split>_labels.csv."""
    header = "filename,width,height,class,xmin,ymin,xmax,ymax\n"
    for n in ("r1.jpg", "r2.jpg", "r3.jpg"):
        _img(tmp_path / "images" / n, 60, 40)
    (tmp_path / "train_labels.csv").write_text(
        header + "r2.jpg,60,40,raccoon,1,1,60,40\n"
                 "r1.jpg,60,40,dog,1,1,10,10\n"            # small dog ...
                 "r1.jpg,60,40,raccoon,5,5,50,35\n")       # ... large raccoon: label raccoon
    (tmp_path / "test_labels.csv").write_text(header + "r3.jpg,60,40,dog,2,2,30,30\n")
    _xml(tmp_path / "annotations" / "r3.xml", [("dog", 2, 2, 30, 30)], size=(60, 40))
    tr = index_split(tmp_path, "train")
    assert tr.classes == ["dog", "raccoon"] and [p.name for p in tr.paths] == ["r2.jpg", "r1.jpg"]
    assert tr.labels == [1, 1] and tr.multilabels == [[1], [0, 1]]
    assert tr.boxes[tmp_path / "images" / "r1.jpg"] == [Box("dog", 0, 0, 10, 10),
                                                        Box("raccoon", 4, 4, 50, 35)]
    assert tr.meta["layout"] == "detection-csv" and tr.box_report.boxes == 3
    te = index_split(tmp_path, "test")          # class list from train_labels.csv
    assert te.classes == ["dog", "raccoon"] and te.labels == [0]
    csv_boxes = dict(te.boxes)
    load_boxes(te, tmp_path / "annotations")    # the XML folder agrees with the CSV
    assert te.boxes == csv_boxes


def test_voc_devkit_with_bad_annotations(tmp_path: Path) -> None:
    for i in range(4):
        _img(tmp_path / "JPEGImages" / f"{i:06d}.jpg")
    _xml(tmp_path / "Annotations" / "000000.xml", [("person", 1, 1, 10, 10), ("dog", 5, 5, 9, 9)])
    _xml(tmp_path / "Annotations" / "000001.xml", [("car", 1, 1, "x", 9)])  # malformed
    (tmp_path / "Annotations" / "000002.xml").write_text("<annotation><object>")  # broken
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "val.txt").write_text("000000\n000001\n000002\n000003\n")
    idx = index_split(tmp_path, "val")
    r = idx.box_report
    assert idx.classes == ["dog", "person"]
    assert (r.with_boxes, r.malformed, r.missing, r.no_usable_box) == (1, 2, 1, 2)
    assert idx.multilabels == [[0, 1], [], [], []]


# ------------------------------------------------------------------ bad annotations

def test_each_bad_annotation_is_counted_and_named_once(tmp_path: Path, caplog) -> None:
    d = tmp_path / "train" / "cat"
    ann = tmp_path / "annotations" / "train" / "cat"
    for n in "abcdefg":
        _img(d / f"{n}.jpg", 40, 30)
    _xml(ann / "a.xml", [("cat", 1, 1, 40, 30)])                            # fine
    # b: no XML at all (missing)
    (ann / "c.xml").write_text("<annotation><object><name>cat</name>")       # parse error
    _xml(ann / "d.xml", [("cat", 1, 1, "", 9), ("cat", 2, 2, 9, 9)])        # no xmax number
    _xml(ann / "e.xml", [("cat", -4, 3, 45, 20)])                           # outside: clipped
    _xml(ann / "f.xml", [("cat", 50, 3, 60, 20), ("cat", 9, 9, 8, 20)])     # no area: dropped
    _xml(ann / "g.xml", [("zebra", 1, 1, 9, 9), ("cat", 2, 2, 5, 5)])       # unknown class
    with caplog.at_level(logging.WARNING, logger="vgg.data"):
        idx = index_split(tmp_path, "train")
    r = idx.box_report
    assert (r.images, r.with_boxes, r.missing, r.no_usable_box) == (7, 4, 1, 2)
    assert (r.malformed, r.clipped, r.degenerate, r.unknown_class) == (2, 1, 2, 1)
    assert r.boxes == 4 and r.unknown_names == {"zebra": 1}
    assert idx.boxes[d / "e.jpg"] == [Box("cat", 0, 2, 40, 20)]
    assert idx.boxes[d / "d.jpg"] == [Box("cat", 1, 1, 9, 9)]
    assert d / "c.jpg" not in idx.boxes and d / "f.jpg" not in idx.boxes
    for name in ("b.jpg", "c.xml", "d.xml", "e.xml", "f.xml", "g.xml"):
        assert len(_messages(caplog, name)) == 1, name  # one warning per file
    assert len(_messages(caplog, "boxes from")) == 1    # plus one summary line
    assert "no usable box" in _messages(caplog, "f.xml")[0]
    assert set(r.examples) == {"missing", "malformed", "clipped", "degenerate",
                               "unknown_class", "no_usable_box"}
    s = r.summary()
    assert "4 of 7 images have boxes" in s and "zebra (1)" in s
    assert r.to_dict()["clipped"] == 1
    # strict classes: the unknown class is an error naming it and the file
    with pytest.raises(DataError, match="zebra.*|g.xml"):
        load_boxes(idx, tmp_path / "annotations", strict_classes=True)


def test_image_size_from_the_header_when_the_xml_has_none(tmp_path: Path) -> None:
    _img(tmp_path / "train" / "cat" / "a.jpg", 40, 30)
    _xml(tmp_path / "train" / "cat" / "a.xml", [("cat", 10, 10, 100, 100)], size=None)
    idx = index_split(tmp_path, "train")
    assert idx.boxes[idx.paths[0]] == [Box("cat", 9, 9, 40, 30)]
    assert idx.box_report.clipped == 1
    assert parse_voc_xml(tmp_path / "train" / "cat" / "a.xml").size is None


def test_bad_csv_rows_are_named_once_each(tmp_path: Path, caplog) -> None:
    _img(tmp_path / "images" / "a.jpg", 60, 40)
    _img(tmp_path / "images" / "b.jpg", 60, 40)
    (tmp_path / "train_labels.csv").write_text(
        "filename,width,height,class,xmin,ymin,xmax,ymax\n"
        "a.jpg,60,40,raccoon,1,1,30,30\n"
        "a.jpg,60,40,raccoon,1,1,oops,30\n"         # row 3: malformed
        "b.jpg,60,40,raccoon,61,1,70,30\n"          # row 4: no area inside the image
        "gone.jpg,60,40,raccoon,1,1,5,5\n")         # row 5: no such image file
    with caplog.at_level(logging.WARNING, logger="vgg.data"):
        idx = index_split(tmp_path, "train")
    r = idx.box_report
    assert [p.name for p in idx.paths] == ["a.jpg", "b.jpg"] and idx.labels == [0, 0]
    assert (r.with_boxes, r.malformed, r.degenerate, r.no_usable_box, r.missing_image) == \
        (1, 1, 1, 1, 1)
    assert len(_messages(caplog, "row 3")) == 1 and len(_messages(caplog, "row 4")) == 1
    assert len(_messages(caplog, "gone.jpg")) == 1


def test_malformed_loc_prediction_string(tmp_path: Path) -> None:
    for s in ("n01_1", "n01_2"):
        _img(tmp_path / "train" / "n01" / f"{s}.JPEG")
    (tmp_path / "LOC_train_solution.csv").write_text(
        "ImageId,PredictionString\nn01_1,n01 1 1 9\nn01_2,n01 1 1 9 9 n01 a b c d\n")
    idx = index_split(tmp_path, "train")
    r = load_boxes(idx)
    assert (r.with_boxes, r.malformed, r.no_usable_box, r.boxes) == (1, 2, 1, 1)


def test_no_source_found_lists_where_it_looked(tmp_path: Path) -> None:
    _img(tmp_path / "train" / "cat" / "a.jpg")
    idx = index_split(tmp_path, "train")
    with pytest.raises(DataError, match="no box annotations found.*LOC_train_solution.csv"):
        load_boxes(idx)
    with pytest.raises(DataError, match="not found"):
        load_boxes(idx, tmp_path / "nope")
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="x.csv"):
        load_boxes(idx, tmp_path / "x.csv")


def test_a_stated_size_that_is_not_the_images_is_named_and_its_boxes_scaled(
        tmp_path: Path, caplog) -> None:
    """Issue 24 item 22a: a VOC <size> of 5000x5000 on an 82x111 image is reported once
    (BoxReport.wrong_size) and its boxes are taken from the stated frame to the image's
    (scaled), so the mean-box baseline is not distorted (main: boxes used in the wrong
    frame, unclipped: a mean box 20.7 image widths wide)."""
    from vgg.localize.data import mean_box

    d = tmp_path / "train" / "cat"
    ann = tmp_path / "annotations" / "train" / "cat"
    _img(d / "a.jpg", 82, 111)
    _xml(ann / "a.xml", [("cat", 1, 1, 5000, 5000)], size=(5000, 5000))  # whole image
    _img(d / "b.jpg", 40, 30)
    _xml(ann / "b.xml", [("cat", 1, 1, 20, 15)], size=(80, 60))  # resized by half
    _img(d / "c.jpg", 40, 30)
    _xml(ann / "c.xml", [("cat", 1, 1, 20, 15)])  # right size: as it is
    with caplog.at_level(logging.WARNING, logger="vgg.data"):
        idx = index_split(tmp_path, "train")
    r = idx.box_report
    w, h = mean_box(idx)
    assert w == pytest.approx((1 + 0.25 + 0.5) / 3) and h == pytest.approx(w)
    assert r.wrong_size == 2 and r.clipped == 0 and r.with_boxes == 3
    assert idx.boxes[d / "a.jpg"] == [Box("cat", 0.0, 0.0, 82.0, 111.0)]
    assert idx.boxes[d / "b.jpg"] == [Box("cat", 0.0, 0.0, 10.0, 7.5)]
    assert idx.boxes[d / "c.jpg"] == [Box("cat", 0.0, 0.0, 20.0, 15.0)]
    msgs = _messages(caplog, "a.xml")
    assert len(msgs) == 1 and "states a 5000x5000 image but a.jpg is 82x111" in msgs[0]
    assert "annotations stating another image size (boxes scaled)" in r.summary()
