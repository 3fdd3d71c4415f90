"""``vgg data split`` and ``vgg data boxes`` (the ``data`` command's parser on its own)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from PIL import Image

from vgg.cli import data
from vgg.errors import DataError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vgg")
    data.register(parser.add_subparsers(dest="command"))
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return args.func(args)


def _classes(root: Path, sizes: dict[str, int]) -> Path:
    for c, n in sizes.items():
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (i, 9, 9)).save(root / c / f"{i}.jpg")
    return root


def test_split_help_explains(capsys) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["data", "split", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in ("OUT/train/<class>/", "stratified", "--seed", "at least one val and one "
                  "train image", "symbolic links to the absolute source paths",
                  "split.json", "must not exist", "--val-per-class", "hardlink", "--copy"):
        assert words in text, words


def test_split_command(tmp_path: Path, capsys) -> None:
    src = _classes(tmp_path / "src", {"cat": 5, "dog": 4})
    assert _run(["data", "split", str(src), str(tmp_path / "out"), "--val-per-class", "2",
                 "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "cat" in out and "total" in out and "split.json" in out
    rec = json.loads((tmp_path / "out" / "split.json").read_text())
    assert rec["classes"] == {"cat": {"train": 3, "val": 2}, "dog": {"train": 2, "val": 2}}
    assert rec["seed"] == 3 and rec["mode"] == "symlink" and rec["val_per_class"] == 2
    assert _run(["data", "split", str(src), str(tmp_path / "copy"), "--copy"]) == 0
    assert json.loads((tmp_path / "copy" / "split.json").read_text())["mode"] == "copy"
    with pytest.raises(DataError, match="not an empty folder"):
        _run(["data", "split", str(src), str(tmp_path / "out")])
    for bad in (["--val-fraction", "0"], ["--val-fraction", "1.5"],
                ["--val-fraction", "0.2", "--val-per-class", "3"],
                ["--copy", "--link", "hardlink"], ["--link", "move"]):
        with pytest.raises(SystemExit):
            _parser().parse_args(["data", "split", str(src), str(tmp_path / "x"), *bad])


def test_boxes_command(tmp_path: Path, capsys) -> None:
    (tmp_path / "images").mkdir()
    for n in ("a.jpg", "b.jpg"):
        Image.new("RGB", (50, 40)).save(tmp_path / "images" / n)
    (tmp_path / "train_labels.csv").write_text(
        "filename,width,height,class,xmin,ymin,xmax,ymax\n"
        "a.jpg,50,40,fox,1,1,60,40\nb.jpg,50,40,fox,3,3,20,20\n")
    assert _run(["data", "boxes", str(tmp_path), "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 images have boxes" in out and "1 box clipped" in out and "a.jpg" in out
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["clipped"] == 1 and rep["boxes"] == 2
    (tmp_path / "xml").mkdir()
    (tmp_path / "xml" / "a.xml").write_text(
        "<annotation><object><name>owl</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
        "<xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>")
    assert _run(["data", "boxes", str(tmp_path), "--source", str(tmp_path / "xml")]) == 0
    out = capsys.readouterr().out
    assert "0 of 2 images have boxes" in out and "owl (1)" in out
    with pytest.raises(DataError, match="owl"):
        _run(["data", "boxes", str(tmp_path), "--source", str(tmp_path / "xml"),
              "--strict-classes"])
