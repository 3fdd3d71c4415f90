"""Dataset layouts: class folders, ILSVRC flat val (devkit / LOC csv), CSV lists, VOC XML."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vgg.data import (ImageDataset, RescaleTransform, index_csv, index_folder, index_split,
                      read_voc_xml)
from vgg.data.box_formats import write_voc_xml
from vgg.data.boxes import Box
from vgg.errors import DataError

WNIDS = ["n01440764", "n01443537", "n01484850"]


def _jpg(p: Path, w: int = 20, h: int = 16) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (10, 20, 30)).save(p)
    return p


def _imagenet(root: Path) -> list[str]:
    for w in WNIDS:
        for i in range(2):
            _jpg(root / "train" / w / f"{w}_{i}.JPEG")
    val_wnids = [WNIDS[2], WNIDS[0], WNIDS[1], WNIDS[0]]
    for i in range(len(val_wnids)):
        _jpg(root / "val" / f"ILSVRC2012_val_{i + 1:08d}.JPEG")
    (root / "LOC_synset_mapping.txt").write_text(
        "".join(f"{w} name{k}, synonym\n" for k, w in enumerate(WNIDS)))
    return val_wnids


def test_class_folders_sorted_and_val_uses_train_classes(tmp_path: Path) -> None:
    for c in ("dog", "cat", "bee"):
        _jpg(tmp_path / "train" / c / "x.jpg")
    _jpg(tmp_path / "val" / "dog" / "y.png")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    tr = index_split(tmp_path, "train")
    va = index_split(tmp_path, "val")
    assert tr.classes == ["bee", "cat", "dog"] and len(tr) == 3
    assert va.classes == tr.classes and va.samples[0][1] == 2


def test_missing_and_empty_splits_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        index_split(tmp_path / "nope", "train")
    with pytest.raises(DataError, match="no train split"):
        index_split(tmp_path, "train")
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no image files"):
        index_split(tmp_path, "train")
    _jpg(tmp_path / "train" / "a" / "x.jpg")
    _jpg(tmp_path / "val" / "zzz" / "x.jpg")
    with pytest.raises(DataError, match="zzz"):
        index_split(tmp_path, "val")


def test_imagenet_flat_val_with_loc_solution_csv(tmp_path: Path) -> None:
    val_wnids = _imagenet(tmp_path)
    rows = ["ImageId,PredictionString"] + [
        f"ILSVRC2012_val_{i + 1:08d},{w} 1 2 10 12 {w} 3 4 8 9"
        for i, w in enumerate(val_wnids)]
    (tmp_path / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    va = index_split(tmp_path, "val")
    assert va.classes == WNIDS
    assert [c for _, c in va.samples] == [WNIDS.index(w) for w in val_wnids]
    # LOC CSV values are VOC numbers (1-based inclusive), like the XML files they come from
    assert va.boxes[va.samples[0][0]][1] == Box(val_wnids[0], 2, 3, 8, 9)
    assert va.display_names() == ["name0", "name1", "name2"]
    assert va.meta["layout"] == "imagenet-flat-val"


def test_imagenet_flat_val_with_devkit(tmp_path: Path) -> None:
    sio = pytest.importorskip("scipy.io")
    val_wnids = _imagenet(tmp_path)
    (tmp_path / "LOC_synset_mapping.txt").unlink()
    data = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    # devkit ids are in its own order (not sorted wnids); one non-leaf synset
    ids = {WNIDS[2]: 1, WNIDS[0]: 2, WNIDS[1]: 3}
    dt = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    syn = np.array([(ids[w], w, f"words of {w}, x", 0) for w in WNIDS]
                   + [(1001, "n00000001", "entity", 5)], dtype=dt)
    sio.savemat(data / "meta.mat", {"synsets": syn})
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text(
        "".join(f"{ids[w]}\n" for w in val_wnids))
    va = index_split(tmp_path, "val")
    assert [va.classes[c] for _, c in va.samples] == val_wnids
    assert va.class_names[WNIDS[0]] == f"words of {WNIDS[0]}"
    # a wrong number of labels is an error naming the file
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n2\n")
    with pytest.raises(DataError, match="ground_truth"):
        index_split(tmp_path, "val")


def test_flat_val_without_labels_is_an_error(tmp_path: Path) -> None:
    _imagenet(tmp_path)
    with pytest.raises(DataError, match="no labels"):
        index_split(tmp_path, "val")


def test_csv_file_list(tmp_path: Path) -> None:
    for n in ("a.jpg", "b.jpg", "c.jpg"):
        _jpg(tmp_path / "img" / n)
    (tmp_path / "train.csv").write_text("path,label\nimg/a.jpg,cat\nimg/b.jpg,dog\n"
                                        "img/c.jpg,cat;dog\n")
    idx = index_split(tmp_path, "train")
    assert idx.classes == ["cat", "dog"] and [c for _, c in idx.samples] == [0, 1, 0]
    assert idx.multilabels == [[0], [1], [0, 1]]
    assert idx.label_matrix().tolist() == [[1, 0], [0, 1], [1, 1]]
    (tmp_path / "ints.csv").write_text(f"{tmp_path / 'img/a.jpg'},2\nimg/b.jpg,0\n")
    idx = index_csv(tmp_path / "ints.csv")
    assert idx.classes == ["0", "1", "2"] and idx.samples[0] == (tmp_path / "img/a.jpg", 2)
    (tmp_path / "bad.csv").write_text("path,label\nimg/a.jpg\nb.jpg\n")  # b: no class
    with pytest.raises(DataError, match=r"neither a label nor a class folder .*b.jpg \(line 3\)"):
        index_csv(tmp_path / "bad.csv")


def test_voc_xml_roundtrip_and_parallel_annotation_tree(tmp_path: Path) -> None:
    boxes = [Box("cat", 0.0, 1.0, 10.0, 12.0), Box("dog", 4.0, 5.0, 20.0, 16.0)]
    write_voc_xml(tmp_path / "a.xml", "a.jpg", (20, 16), boxes)
    assert read_voc_xml(tmp_path / "a.xml") == boxes
    assert "<xmin>1</xmin>" in (tmp_path / "a.xml").read_text()  # VOC is 1-based
    _jpg(tmp_path / "d" / "train" / "cat" / "a.jpg")
    _jpg(tmp_path / "d" / "train" / "dog" / "b.jpg")
    ann = tmp_path / "d" / "annotations" / "train"
    (ann / "cat").mkdir(parents=True)
    write_voc_xml(ann / "cat" / "a.xml", "a.jpg", (20, 16), boxes)
    idx = index_split(tmp_path / "d", "train")
    assert idx.boxes == {idx.samples[0][0]: boxes}
    assert idx.multilabels == [[0, 1], [1]]
    (tmp_path / "broken.xml").write_text("<annotation><object>")
    with pytest.raises(DataError, match="broken.xml"):
        read_voc_xml(tmp_path / "broken.xml")


def test_voc_layout_multilabel(tmp_path: Path) -> None:
    for i, objs in enumerate([["person", "dog"], ["car"], ["dog"]]):
        _jpg(tmp_path / "JPEGImages" / f"{i:06d}.jpg")
        (tmp_path / "Annotations").mkdir(exist_ok=True)
        write_voc_xml(tmp_path / "Annotations" / f"{i:06d}.xml", f"{i:06d}.jpg", (20, 16),
                      [Box(o, 0, 0, 5, 5) for o in objs])
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "trainval.txt").write_text("000000\n000001\n000002\n")
    idx = index_split(tmp_path, "trainval")
    assert idx.classes == ["car", "dog", "person"]
    assert idx.label_matrix().tolist() == [[0, 1, 1], [1, 0, 0], [0, 1, 0]]
    ds = ImageDataset(idx, RescaleTransform(8))
    assert ds[0]["labels"].tolist() == [0, 1, 1]


def test_subset_keeps_metadata(tmp_path: Path) -> None:
    for c in ("a", "b"):
        for i in range(3):
            _jpg(tmp_path / c / f"{i}.jpg")
    idx = index_folder(tmp_path)
    sub = idx.subset([5, 0])
    assert [c for _, c in sub.samples] == [1, 0] and sub.classes == idx.classes


# ------------------------------------------------------------------ review fixes (B)

def test_one_list_of_image_extensions() -> None:
    from vgg.data import decode, folders

    assert folders.IMAGE_EXTENSIONS is decode.IMAGE_EXTENSIONS
    assert {".jpg", ".jpeg", ".png", ".webp", ".tif", ".bmp", ".gif", ".ppm"} <= set(
        decode.IMAGE_EXTENSIONS)


def test_any_split_folder_name_and_error_lists_what_is_there(tmp_path: Path) -> None:
    for split in ("training", "validation"):
        for c in ("x", "y"):
            _jpg(tmp_path / split / c / "0.jpg")
    idx = index_split(tmp_path, "validation")
    assert idx.classes == ["x", "y"] and len(idx) == 2
    with pytest.raises(DataError) as e:
        index_split(tmp_path, "val")
    assert "training" in str(e.value) and "validation" in str(e.value)


def test_other_splits_take_the_train_class_names(tmp_path: Path) -> None:
    for c in ("ant", "bee", "cat"):
        _jpg(tmp_path / "train" / c / "0.jpg")
    _jpg(tmp_path / "holdout" / "cat" / "1.jpg")
    idx = index_split(tmp_path, "holdout")
    assert idx.classes == ["ant", "bee", "cat"] and idx.samples[0][1] == 2
    assert all(isinstance(c, str) for c in idx.classes)
