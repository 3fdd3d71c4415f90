"""The one reader of the .npz files vgg takes in (vgg.npz): every broken or foreign file
(missing, a folder, empty, truncated, not a zip, pickled objects, a missing key, a wrong
dtype or shape, arrays that do not fit together) is one line naming the file, exit 2,
for posteriors (`vgg fuse`), boxes (`vgg localize fuse`) and features (`vgg transfer`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vgg.cli import main
from vgg.errors import DataError
from vgg.eval import Posteriors
from vgg.npz import Array, read_npz
from vgg.transfer.features import Features

SPEC = {"X": Array("f", ("N", "D")), "ids": Array("U", ("N",)),
        "meta": Array("U", (), required=False)}


def good(tmp_path: Path) -> Path:
    p = tmp_path / "good.npz"
    np.savez(p, X=np.zeros((3, 4), np.float32), ids=np.array(["a", "b", "c"]))
    return p


def test_reads_a_good_file(tmp_path: Path) -> None:
    d = read_npz(good(tmp_path), SPEC, "features")
    assert d["X"].shape == (3, 4) and d["ids"].tolist() == ["a", "b", "c"]


@pytest.mark.parametrize("make,message", [
    (lambda p: None, "features file not found: {p}"),
    (lambda p: p.mkdir(), "{p} is a folder, not a features file"),
    (lambda p: p.write_bytes(b""), "features file {p} is empty (0 bytes)"),
    (lambda p: p.write_text("X,ids\n1,a\n"), "{p} is not a features file: not an .npz"),
    (lambda p: p.write_bytes(p.with_name("good.npz").read_bytes()[:300]),
     "features file {p} is truncated or corrupt (BadZipFile"),
    (lambda p: np.savez(p, X=np.zeros((3, 4)), ids=np.array([1, "a", None], object)),
     "{p} holds Python objects (pickled)"),
    (lambda p: np.savez(p, X=np.zeros((3, 4))), "{p} is not a vgg features file (no 'ids' "
                                                "array)"),
    (lambda p: np.savez(p, X=np.zeros(3), ids=np.array(["a", "b", "c"])),
     "features file {p}: 'X' is a 1-D float64 array of shape (3,), expected a 2-D float "
     "array (N, D)"),
    (lambda p: np.savez(p, X=np.zeros((3, 4), int), ids=np.array(["a", "b", "c"])),
     "'X' is a 2-D int64 array of shape (3, 4), expected a 2-D float array"),
    (lambda p: np.savez(p, X=np.zeros((3, 4)), ids=np.array(["a", "b"])),
     "features file {p}: 'ids' has 2 along N (shape (2,)) but 'X' has 3"),
    (lambda p: np.savez(p, X=np.zeros((3, 4)), ids=np.array(["a", "b", "c"]),
                        meta=np.array(["x"])), "'meta' is a 1-D"),
])
def test_every_broken_file_is_one_data_error_naming_it(tmp_path: Path, make, message) -> None:
    good(tmp_path)
    p = tmp_path / "f.npz"
    make(p)
    with pytest.raises(DataError) as e:
        read_npz(p, SPEC, "features")
    assert message.format(p=p) in str(e.value) and "\n" not in str(e.value)


def test_a_corrupt_member_is_named(tmp_path: Path) -> None:
    p = tmp_path / "c.npz"
    np.savez_compressed(p, X=np.arange(4000, dtype=np.float32).reshape(1000, 4),
                        ids=np.array(["a"] * 1000))
    raw = bytearray(p.read_bytes())
    raw[200:260] = bytes(60)  # inside the compressed X
    p.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=f"features file {p} is (truncated or )?corrupt"):
        read_npz(p, SPEC, "features")


def _posteriors(tmp_path: Path, p: np.ndarray, name: str = "p.npz") -> Path:
    return Posteriors(image_ids=[f"i{i}" for i in range(len(p))], classes=["a", "b"],
                      labels=np.zeros(len(p), int), posteriors=p).save(tmp_path / name)


@pytest.mark.parametrize("command", [["fuse"], ["localize", "fuse"], ["transfer"]])
@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"\x93NUMPY not npz"])
def test_cli_empty_or_truncated_npz_is_one_line(tmp_path: Path, capsys, command, content
                                                ) -> None:
    """Issue 24 items 14 and 17: `vgg fuse post/empty.npz`, `vgg localize fuse` and `vgg
    transfer F.npz` on an empty or truncated file: one line naming it, exit 2."""
    f = tmp_path / "empty.npz"
    f.write_bytes(content)
    assert main([*command, str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and str(f) in err, err


def test_transfer_on_features_with_1d_x_is_one_line(tmp_path: Path, capsys) -> None:
    feats = Features(X=np.eye(4, dtype=np.float32), ids=list("abcd"),
                     targets=np.eye(4, 2, dtype=np.uint8), classes=["x", "y"])
    feats.save(tmp_path / "ok.npz")
    with np.load(tmp_path / "ok.npz") as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(tmp_path / "flat.npz", **(arrays | {"X": np.zeros(4, np.float32)}))
    assert main(["transfer", str(tmp_path / "flat.npz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "flat.npz: 'X' is a 1-D float32 array" in err, err
    np.savez(tmp_path / "short.npz", **(arrays | {"targets": arrays["targets"][:3]}))
    assert main(["transfer", str(tmp_path / "short.npz")]) == 2
    assert "'targets' has 3 along N" in capsys.readouterr().err


@pytest.mark.parametrize("scale,shift,expect", [
    (5.0, 0.0, "values in [0, 1] summing to 1"),   # x5
    (1.0, -0.7, "not probabilities"),               # negative
    (0.5, 0.0, "sum 0.5"),                          # rows summing to 0.5
])
def test_fuse_refuses_posteriors_that_are_not_probabilities(tmp_path: Path, capsys, scale,
                                                            shift, expect) -> None:
    """Issue 24 item 22b: hand-made posteriors (x5, negative) are refused with one line."""
    p = np.array([[0.25, 0.75], [0.9, 0.1], [0.5, 0.5]], np.float32)
    ok = _posteriors(tmp_path, p, "ok.npz")
    bad = _posteriors(tmp_path, p * scale + shift, "bad.npz")
    assert main(["fuse", str(ok)]) == 0
    capsys.readouterr()
    assert main(["fuse", str(ok), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and expect in err, err


def test_saved_boxes_with_wrong_shapes_are_one_line(tmp_path: Path, capsys) -> None:
    n = 2
    arrays = dict(image_ids=np.array(["a", "b"]), classes=np.array(["x", "y"]),
                  labels=np.zeros(n, np.int64), sizes=np.ones((n, 2), np.float32),
                  gt_image=np.array([0, 5]), gt_class=np.array([0, 1]),
                  gt_boxes=np.zeros((2, 4), np.float32), guess_class=np.zeros((n, 1), int),
                  guess_score=np.zeros((n, 1), np.float32),
                  guess_boxes=np.zeros((n, 1, 4), np.float32), meta=np.array("{}"))
    np.savez(tmp_path / "b.npz", **(arrays | {"guess_boxes": np.zeros((n, 4), np.float32)}))
    assert main(["localize", "fuse", str(tmp_path / "b.npz")]) == 2
    assert "'guess_boxes' is a 2-D float32 array" in capsys.readouterr().err
    np.savez(tmp_path / "c.npz", **arrays)
    assert main(["localize", "fuse", str(tmp_path / "c.npz")]) == 2
    assert "'gt_image' holds values outside 0..1" in capsys.readouterr().err
