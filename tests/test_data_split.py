"""``split_folder``: a stratified, seeded train/val split of a folder of class folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from vgg.data import index_split
from vgg.data.split import split_folder, val_count
from vgg.errors import ConfigError, DataError


def _src(root: Path, sizes: dict[str, int]) -> Path:
    for c, n in sizes.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(root / c / f"{c}_{i:03d}.jpg")
    return root


def _files(out: Path, split: str) -> set[str]:
    return {str(p.relative_to(out / split)) for p in (out / split).rglob("*") if p.is_symlink()
            or p.is_file()}


def test_val_count_rules() -> None:
    assert [val_count(n, 0.2, None) for n in (0, 1, 2, 3, 10, 12, 13)] == [0, 0, 1, 1, 2, 2, 3]
    assert [val_count(n, None, 5) for n in (1, 2, 4, 6, 100)] == [0, 1, 3, 5, 5]
    assert val_count(10, 0.99, None) == 9


def test_split_is_stratified_deterministic_and_indexable(tmp_path: Path) -> None:
    src = _src(tmp_path / "src", {"ant": 10, "bee": 2, "cow": 1, "dog": 7})
    (src / "dog" / "more").mkdir()
    Image.new("RGB", (8, 8)).save(src / "dog" / "more" / "deep.jpg")   # nested: kept
    rec = split_folder(src, tmp_path / "out", val_fraction=0.2, seed=1, progress=False)
    out = tmp_path / "out"
    assert rec["classes"] == {"ant": {"train": 8, "val": 2}, "bee": {"train": 1, "val": 1},
                              "cow": {"train": 1, "val": 0}, "dog": {"train": 6, "val": 2}}
    assert (rec["train"], rec["val"]) == (16, 5)
    assert json.loads((out / "split.json").read_text()) == rec
    tr, va = _files(out, "train"), _files(out, "val")
    assert not tr & va and len(tr | va) == 21 and "dog/more/deep.jpg" in tr | va
    link = next((out / "train" / "ant").iterdir())
    assert link.is_symlink() and os.path.isabs(os.readlink(link))
    assert Path(os.readlink(link)) == (src / "ant" / link.name).absolute()
    # the split indexes as any dataset: class names agree, the cow class has no val folder
    itr, iva = index_split(out, "train"), index_split(out, "val")
    assert itr.classes == iva.classes == ["ant", "bee", "cow", "dog"] and len(iva) == 5
    assert all(iva.classes[c] == p.parent.name or p.parent.name == "more"
               for p, c in iva.samples)
    # same seed, same split; another seed, another split
    split_folder(src, tmp_path / "again", val_fraction=0.2, seed=1, progress=False)
    assert _files(tmp_path / "again", "val") == va
    split_folder(src, tmp_path / "other", val_fraction=0.2, seed=2, progress=False)
    assert _files(tmp_path / "other", "val") != va


def test_a_class_split_does_not_depend_on_the_other_classes(tmp_path: Path) -> None:
    a = _src(tmp_path / "a", {"ant": 20, "bee": 5})
    b = _src(tmp_path / "b", {"ant": 20, "zebra": 9, "yak": 3})
    split_folder(a, tmp_path / "oa", val_per_class=4, progress=False)
    split_folder(b, tmp_path / "ob", val_per_class=4, progress=False)
    va = {f for f in _files(tmp_path / "oa", "val") if f.startswith("ant/")}
    vb = {f for f in _files(tmp_path / "ob", "val") if f.startswith("ant/")}
    assert va == vb and len(va) == 4


@pytest.mark.parametrize("mode", ["copy", "hardlink"])
def test_copy_and_hardlink(tmp_path: Path, mode: str) -> None:
    src = _src(tmp_path / "src", {"a": 3, "b": 3})
    split_folder(src, tmp_path / "out", mode=mode, progress=False)
    f = next((tmp_path / "out" / "train" / "a").iterdir())
    assert f.is_file() and not f.is_symlink()
    same = os.stat(f).st_ino == os.stat(src / "a" / f.name).st_ino
    assert same == (mode == "hardlink")


def test_sidecar_xml_travels_with_its_image(tmp_path: Path) -> None:
    src = _src(tmp_path / "src", {"a": 2})
    (src / "a" / "a_000.xml").write_text(
        "<annotation><size><width>8</width><height>8</height></size><object><name>a</name>"
        "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>4</xmax><ymax>4</ymax></bndbox></object>"
        "</annotation>")
    split_folder(src, tmp_path / "out", progress=False)
    xml = list((tmp_path / "out").rglob("a_000.xml"))
    assert len(xml) == 1 and xml[0].with_suffix(".jpg").exists()


def test_refusals(tmp_path: Path) -> None:
    src = _src(tmp_path / "src", {"a": 3, "b": 3})
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(DataError, match="not an empty folder"):
        split_folder(src, tmp_path / "full")
    assert (tmp_path / "full" / "x").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    split_folder(src, tmp_path / "empty", progress=False)      # an empty OUT is fine
    with pytest.raises(DataError, match="inside"):
        split_folder(src, src / "split")
    with pytest.raises(DataError, match="not found"):
        split_folder(tmp_path / "nope", tmp_path / "o1")
    with pytest.raises(ConfigError, match="not both"):
        split_folder(src, tmp_path / "o2", val_fraction=0.1, val_per_class=2)
    with pytest.raises(ConfigError, match=r"\(0, 1\)"):
        split_folder(src, tmp_path / "o3", val_fraction=1.0)
    with pytest.raises(ConfigError, match="mode"):
        split_folder(src, tmp_path / "o4", mode="move")
    done = tmp_path / "done"
    _src(done / "train", {"a": 2})
    _src(done / "val", {"a": 2})
    with pytest.raises(DataError, match="split already"):
        split_folder(done, tmp_path / "o5")
    assert not any(p.name.startswith((".o", "o")) for p in tmp_path.iterdir()
                   if p.name not in ("src", "full", "empty", "done"))
