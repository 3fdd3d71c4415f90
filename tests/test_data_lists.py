"""File lists and held-out splits (``vgg.data.sources``, ``index_list``): Caltech-style
``class/file.jpg`` lists and ``path,label`` CSVs relative to the data folder, every listed
file used once, missing / repeated / escaping / unlabelled entries named, the class list
shared by train and val, ``--val-split`` stratified and seeded (the split ``vgg data
split`` writes), and the fingerprint a resumed run is checked against."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from PIL import Image

from vgg.data import DataSpec, eval_index, index_list, index_split, train_val_indexes
from vgg.data.sources import check_same_images, fingerprint
from vgg.data.split import split_folder
from vgg.errors import ConfigError, DataError

CALTECH = {"BACKGROUND_Google": 4, "accordion": 5, "airplanes": 7}


def _jpg(path: Path, shade: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), (shade, 40, 90)).save(path)


def caltech(root: Path) -> tuple[Path, list[str], list[str]]:
    """Caltech-101's layout: ``root/101_ObjectCategories/<class>/image_000N.jpg`` and
    ``root/train.txt`` / ``root/test.txt`` with ``class/image_000N.jpg`` lines (odd
    numbers train, even test, as the course split lists alternate)."""
    cats = root / "101_ObjectCategories"
    train, test = [], []
    for c, n in CALTECH.items():
        for i in range(1, n + 1):
            _jpg(cats / c / f"image_{i:04d}.jpg", i)
            (train if i % 2 else test).append(f"{c}/image_{i:04d}.jpg")
    (root / "train.txt").write_text("\n".join(train) + "\n")
    (root / "test.txt").write_text("\n".join(test) + "\n")
    return cats, train, test


def rel(index, root: Path) -> list[str]:  # noqa: ANN001
    return [p.relative_to(root).as_posix() for p, _ in index.samples]


def test_caltech_lists_use_every_listed_file_once(tmp_path: Path) -> None:
    cats, train_lines, test_lines = caltech(tmp_path)
    _jpg(cats / "accordion" / "not_listed.jpg")  # in the folder, in neither list: unused
    spec = DataSpec(str(cats), train_list=str(tmp_path / "train.txt"),
                    val_list=str(tmp_path / "test.txt"))
    train, val = train_val_indexes(spec)
    assert rel(train, cats) == train_lines and rel(val, cats) == test_lines
    # the class is the first folder; one class list, sorted as class folders are
    assert train.classes == val.classes == sorted(CALTECH)
    for index in (train, val):
        assert all(index.classes[c] == p.parent.name for p, c in index.samples)
    assert not set(rel(train, cats)) & set(rel(val, cats))
    # the list is looked for in the data folder too
    shutil.copy(tmp_path / "train.txt", cats / "train.txt")
    again, _ = train_val_indexes(DataSpec(str(cats), train_list="train.txt",
                                          val_list=str(tmp_path / "test.txt")))
    assert again.samples == train.samples


def test_list_forms_csv_tab_space_integers_and_multilabel(tmp_path: Path) -> None:
    for n in ("a", "b", "c", "d"):
        _jpg(tmp_path / "img" / f"{n}.jpg")
    # a CSV with Excel's byte-order mark, a header, comments and blank lines; labels are
    # not folder names
    (tmp_path / "l.csv").write_text("\ufeffpath,label\n# comment\nimg/a.jpg,cat\n\n"
                                    "img/b.jpg,dog\nimg/c.jpg,cat;dog\n", encoding="utf-8")
    idx = index_list(tmp_path / "l.csv", tmp_path)
    assert idx.classes == ["cat", "dog"] and idx.labels == [0, 1, 0]
    assert idx.multilabels == [[0], [1], [0, 1]]
    # one list may mix 'path<TAB>label', 'path label', 'path,label' and 'class/file'
    (tmp_path / "l.txt").write_text("img/a.jpg\tcat\nimg/b.jpg dog\nimg/c.jpg,owl\n"
                                    "img/d.jpg\n")
    idx = index_list(tmp_path / "l.txt", tmp_path)
    assert idx.classes == ["cat", "dog", "img", "owl"]
    assert [idx.classes[c] for c in idx.labels] == ["cat", "dog", "owl", "img"]
    # integer labels: classes "0".."max"
    (tmp_path / "n.txt").write_text("img/a.jpg 2\nimg/b.jpg 0\n")
    idx = index_list(tmp_path / "n.txt", tmp_path)
    assert idx.classes == ["0", "1", "2"] and idx.labels == [2, 0]


def test_missing_listed_files_are_named(tmp_path: Path) -> None:
    cats, _, _ = caltech(tmp_path)
    (cats / "airplanes" / "image_0003.jpg").unlink()
    (cats / "accordion" / "image_0005.jpg").unlink()
    with pytest.raises(DataError) as e:
        index_list(tmp_path / "train.txt", cats)
    msg = str(e.value)
    assert "2 of the 9 listed files do not exist" in msg and "\n" not in msg
    assert "accordion/image_0005.jpg (line 5)" in msg
    assert "airplanes/image_0003.jpg (line 7)" in msg
    # the wrong data folder: every file is missing, and the folder that has them is named
    with pytest.raises(DataError, match=r"none of the 7 listed files exists .*they are "
                                        r"in .*101_ObjectCategories: give that folder"):
        index_list(tmp_path / "test.txt", tmp_path)


def test_repeats_are_used_once_and_conflicts_refused(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    _jpg(tmp_path / "cat" / "1.jpg")
    _jpg(tmp_path / "dog" / "2.jpg")
    (tmp_path / "r.txt").write_text("cat/1.jpg\ndog/2.jpg\ncat/./1.jpg\ncat/1.jpg cat\n")
    with caplog.at_level(logging.WARNING):
        idx = index_list(tmp_path / "r.txt", tmp_path)
    assert rel(idx, tmp_path) == ["cat/1.jpg", "dog/2.jpg"]
    assert "2 line(s) repeat a file already listed" in caplog.text
    assert "cat/1.jpg (line 3), cat/1.jpg (line 4)" in caplog.text
    (tmp_path / "c.csv").write_text("cat/1.jpg,cat\ndog/2.jpg,dog\ncat/1.jpg,dog\n")
    with pytest.raises(DataError, match=r"listed twice with different labels, e\.g\. "
                                        r"cat/1.jpg: cat \(line 1\) and dog \(line 3\)"):
        index_list(tmp_path / "c.csv", tmp_path)


def test_paths_outside_the_data_folder_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _jpg(data / "cat" / "1.jpg")
    _jpg(tmp_path / "secret" / "x.jpg")
    (tmp_path / "esc.txt").write_text(f"cat/1.jpg\n../secret/x.jpg\n{tmp_path}/secret/x.jpg\n"
                                      "cat/../../secret/x.jpg\n")
    with pytest.raises(DataError) as e:
        index_list(tmp_path / "esc.txt", data)
    assert "3 listed path(s) lead outside the data folder" in str(e.value)
    assert "../secret/x.jpg (line 2)" in str(e.value)
    # an absolute path inside the data folder is the file it names
    (tmp_path / "abs.txt").write_text(f"{data}/cat/1.jpg\n")
    idx = index_list(tmp_path / "abs.txt", data)
    assert rel(idx, data) == ["cat/1.jpg"] and idx.classes == ["cat"]


@pytest.mark.parametrize("text, match", [
    ("", "lists no images"),
    ("# only a comment\n\npath,label\n", "lists no images"),
    ("cat/1.jpg\nlonely.jpg\n", r"1 line\(s\) give neither a label nor a class folder "
                                r"\(write 'class/file' or 'path,label'\): lonely.jpg "
                                r"\(line 2\)"),
])
def test_bad_lists(tmp_path: Path, text: str, match: str) -> None:
    _jpg(tmp_path / "cat" / "1.jpg")
    _jpg(tmp_path / "lonely.jpg")
    (tmp_path / "l.txt").write_text(text)
    with pytest.raises(DataError, match=match):
        index_list(tmp_path / "l.txt", tmp_path)


def test_list_files_not_found_or_unreadable(tmp_path: Path) -> None:
    _jpg(tmp_path / "cat" / "1.jpg")
    with pytest.raises(DataError, match=r"--train-list: file list not found: nope.txt "
                                        r"\(looked in the current folder and in"):
        train_val_indexes(DataSpec(str(tmp_path), train_list="nope.txt", val_split=0.5))
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(DataError, match="cannot read file list"):
        index_list(tmp_path / "bin.txt", tmp_path)
    with pytest.raises(DataError, match="is a folder"):
        train_val_indexes(DataSpec(str(tmp_path), train_list=str(tmp_path / "cat"),
                                   val_split=0.5))


def test_val_labels_must_be_classes_of_the_training_set(tmp_path: Path) -> None:
    cats, _, _ = caltech(tmp_path)
    _jpg(cats / "zebra" / "image_0001.jpg")
    (tmp_path / "test.txt").write_text("accordion/image_0002.jpg\nzebra/image_0001.jpg\n")
    spec = DataSpec(str(cats), train_list=str(tmp_path / "train.txt"),
                    val_list=str(tmp_path / "test.txt"))
    with pytest.raises(DataError, match=r"1 label\(s\) not among the 3 classes of the "
                                        r"training list .*train.txt \(BACKGROUND_Google, "
                                        r"accordion, airplanes\): zebra \(line 2\)"):
        train_val_indexes(spec)
    # evaluation: the labels must be classes of the net
    with pytest.raises(DataError, match="classes of net0"):
        eval_index(DataSpec(str(cats), val_list=str(tmp_path / "test.txt")),
                   classes=sorted(CALTECH), known="net0")


def test_a_file_in_both_sets_is_refused(tmp_path: Path) -> None:
    cats, _, _ = caltech(tmp_path)
    (tmp_path / "test.txt").write_text("accordion/image_0001.jpg\naccordion/image_0002.jpg\n")
    spec = DataSpec(str(cats), train_list=str(tmp_path / "train.txt"),
                    val_list=str(tmp_path / "test.txt"))
    with pytest.raises(DataError, match=r"1 image\(s\) are both training and validation "
                                        r"images \(.*accordion/image_0001.jpg\)"):
        train_val_indexes(spec)


def test_val_split_is_the_split_vgg_data_split_writes(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    for c, n in {"ant": 10, "bee": 5, "cow": 1}.items():
        for i in range(n):
            _jpg(src / c / f"{i:02d}.jpg", i)
    train, val = train_val_indexes(DataSpec(str(src), val_split=0.2, split_seed=3))
    assert train.classes == val.classes == ["ant", "bee", "cow"]
    assert len(train) + len(val) == 16 and not set(rel(train, src)) & set(rel(val, src))
    per_class = [sum(c == k for _, c in val.samples) for k in range(3)]
    assert per_class == [2, 1, 0]  # round(0.2 n), at least 1, none from a class of one
    rec = split_folder(src, tmp_path / "tree", val_fraction=0.2, seed=3, progress=False)
    tree_val = index_split(tmp_path / "tree", "val")
    assert rel(val, src) == rel(tree_val, tmp_path / "tree" / "val") and rec["val"] == 3
    # the same seed gives the same split; another seed another one
    assert train_val_indexes(DataSpec(str(src), val_split=0.2, split_seed=3))[1].samples \
        == val.samples
    others = {tuple(rel(train_val_indexes(DataSpec(str(src), val_split=0.2,
                                                   split_seed=s))[1], src))
              for s in range(4)}
    assert len(others) > 1
    # evaluation scores the same held-out images
    assert eval_index(DataSpec(str(src), val_split=0.2, split_seed=3)).samples == val.samples


def test_val_split_of_a_training_list_and_the_rules(tmp_path: Path) -> None:
    cats, train_lines, _ = caltech(tmp_path)
    spec = DataSpec(str(cats), train_list=str(tmp_path / "train.txt"), val_split=0.5)
    train, val = train_val_indexes(spec)
    assert sorted(rel(train, cats) + rel(val, cats)) == sorted(train_lines)
    assert eval_index(spec).samples == val.samples
    with pytest.raises(ConfigError, match="--val-list or --val-split, not both"):
        DataSpec(str(cats), val_list="x", val_split=0.5)
    with pytest.raises(ConfigError, match=r"val_split \(--val-split\) must be"):
        DataSpec(str(cats), val_split=1.0)
    # a folder with a val split: --val-split would leave it unused
    shapes = tmp_path / "shapes"
    _jpg(shapes / "train" / "a" / "1.jpg")
    _jpg(shapes / "val" / "a" / "2.jpg")
    with pytest.raises(ConfigError, match="has a val split already"):
        train_val_indexes(DataSpec(str(shapes), val_split=0.5))
    # class folders and nothing to validate on: say how to get a val set
    with pytest.raises(DataError, match="no train split in .*give --val-split FRACTION"):
        train_val_indexes(DataSpec(str(cats)))
    with pytest.raises(DataError, match="no validation images: .* --val-list FILE or "
                                        "--val-split FRACTION"):
        train_val_indexes(DataSpec(str(cats), train_list=str(tmp_path / "train.txt")))
    with pytest.raises(ConfigError, match="--split, or --val-list / --val-split"):
        eval_index(DataSpec(str(cats), val_list=str(tmp_path / "test.txt")), split="val")
    with pytest.raises(ConfigError, match="--train-list needs --val-split"):
        eval_index(DataSpec(str(cats), train_list=str(tmp_path / "train.txt")))


def test_fingerprint_follows_the_images_not_the_folder(tmp_path: Path) -> None:
    cats, _, _ = caltech(tmp_path)
    a = index_list(tmp_path / "train.txt", cats)
    moved = tmp_path / "moved"
    shutil.copytree(cats, moved)
    assert fingerprint(index_list(tmp_path / "train.txt", moved)) == fingerprint(a)
    lines = (tmp_path / "train.txt").read_text().splitlines()
    (tmp_path / "fewer.txt").write_text("\n".join(lines[:-1]) + "\n")
    (tmp_path / "reordered.txt").write_text("\n".join(lines[::-1]) + "\n")
    for name in ("fewer.txt", "reordered.txt"):
        other = fingerprint(index_list(tmp_path / name, cats))
        assert other["sha256"] != fingerprint(a)["sha256"]
    fa, fb = fingerprint(a), fingerprint(index_list(tmp_path / "fewer.txt", cats))
    assert fa["images"] == 9 and fb["images"] == 8
    check_same_images({"train": fa}, {"train": fa, "val": fb}, "run")
    check_same_images(None, {"train": fb}, "run")  # runs from before fingerprints
    with pytest.raises(DataError, match=r"training images differ .* \(9 images then, 8 now"):
        check_same_images({"train": fa}, {"train": fb}, "run")
