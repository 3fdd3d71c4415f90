"""Finding image files: folders walked once (symbolic-link cycles cut), files with unknown
extensions sniffed, and what a user names on a command line."""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image

from vgg.data import index_folder
from vgg.data.scan import list_images


def _jpg(p: Path, w: int = 20, h: int = 16) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (10, 20, 30)).save(p)
    return p


def test_symlinked_folders_are_followed_once_and_cycles_skipped(tmp_path: Path,
                                                                caplog) -> None:
    root = tmp_path / "data"
    for c in ("a", "b"):
        for i in range(2):
            _jpg(root / c / f"{i}.jpg")
    outside = tmp_path / "outside"
    _jpg(outside / "x.jpg")
    (root / "a" / "loop").symlink_to(root)                # an ancestor: a cycle
    (root / "a" / "b_again").symlink_to(root / "b")       # another class's folder
    (root / "b" / "ext").symlink_to(outside)              # a new real folder: followed
    (root / "a" / "linked.jpg").symlink_to(outside / "x.jpg")  # a symlinked FILE is fine
    with caplog.at_level(logging.WARNING, logger="vgg.data"):
        idx = index_folder(root)
    got = sorted((str(p.relative_to(root)), c) for p, c in idx.samples)
    assert got == [("a/0.jpg", 0), ("a/1.jpg", 0), ("a/linked.jpg", 0),
                   ("b/0.jpg", 1), ("b/1.jpg", 1), ("b/ext/x.jpg", 1)]
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("loop" in m for m in msgs) == 1 and sum("b_again" in m for m in msgs) == 1
    assert any("cycle" in m for m in msgs if "loop" in m)


def test_images_with_unknown_extensions_are_sniffed(tmp_path: Path, caplog) -> None:
    for c in ("a", "b"):
        _jpg(tmp_path / c / "ok.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "photo.jpg.1", "JPEG")
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "download.jpg_large", "JPEG")
    Image.new("RGB", (8, 8)).save(tmp_path / "b" / "noextension", "PNG")
    Image.new("RGB", (8, 8)).save(tmp_path / "b" / "pic.dat", "BMP")
    (tmp_path / "a" / "notes.txt").write_text("BM is not enough to be a bitmap")
    (tmp_path / "b" / "blob.bin").write_bytes(b"\x00" * 40)
    (tmp_path / "b" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")  # hidden: silent
    with caplog.at_level(logging.WARNING, logger="vgg.data"):
        idx = index_folder(tmp_path)
    names = sorted(p.name for p in idx.paths)
    assert names == ["download.jpg_large", "noextension", "ok.jpg", "ok.jpg", "photo.jpg.1",
                     "pic.dat"]
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "2 files" in msgs[0] and "notes.txt" in msgs[0]
    assert "DS_Store" not in msgs[0]


def test_list_images_reports_what_it_skipped(tmp_path: Path) -> None:
    _jpg(tmp_path / "d" / "a.jpg")
    (tmp_path / "d" / "sub").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "d" / "sub" / "b.jfif", "JPEG")
    (tmp_path / "d" / "readme.md").write_text("# hi")
    Image.new("RGB", (8, 8)).save(tmp_path / "single.image", "PNG")
    (tmp_path / "text.log").write_text("no")
    images, skipped = list_images([tmp_path / "d", tmp_path / "single.image",
                                   tmp_path / "missing.jpg", tmp_path / "text.log"])
    assert [p.relative_to(tmp_path).as_posix() for p in images] == [
        "d/a.jpg", "d/sub/b.jfif", "single.image"]
    why = {p.name: r for p, r in skipped}
    assert set(why) == {"readme.md", "missing.jpg", "text.log"}
    assert "not found" in why["missing.jpg"] and "not an image" in why["text.log"]
