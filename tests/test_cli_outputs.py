"""The output rule of every command that writes files (issue 24 item 19): an output that is
one of the command's inputs is refused (even with --overwrite); an output that exists is
replaced only with --overwrite; both checked before any work, one line naming the flag and
the file, exit 2, the file untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _eval_util import make_images, save_net

from vgg.cli import main
from vgg.eval import Posteriors


@pytest.fixture
def net(tmp_path: Path) -> Path:
    return save_net(tmp_path / "m.pt", train_scale=[32, 48])


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_images(tmp_path / "ds", sizes=[(40, 40), (48, 40)])


def posteriors(tmp_path: Path, name: str) -> Path:
    p = np.array([[0.25, 0.75], [0.9, 0.1]], np.float32)
    return Posteriors(image_ids=["a", "b"], classes=["x", "y"], labels=np.zeros(2, int),
                      posteriors=p).save(tmp_path / name)


def refused(argv: list[str], capsys: pytest.CaptureFixture, *expect: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for e in expect:
        assert e in err, err
    return err


def test_features_out_equal_to_its_checkpoint_is_refused(net: Path, data: Path, capsys
                                                         ) -> None:
    before = net.read_bytes()
    argv = ["features", str(net), "--data", str(data), "--out", str(net), "--workers", "0"]
    refused(argv, capsys, f"--out {net} is an input of this command")
    assert net.read_bytes() == before  # main: the net was replaced by its features
    refused([*argv, "--overwrite"], capsys, "is an input")


def test_evaluate_outputs(net: Path, data: Path, tmp_path: Path, capsys) -> None:
    before = net.read_bytes()
    refused(["evaluate", str(net), "--data", str(data), "--workers", "0",
             "--save-posteriors", str(net)], capsys, "--save-posteriors", "is an input")
    assert net.read_bytes() == before
    old = tmp_path / "r.json"
    old.write_text("{}")
    refused(["evaluate", str(net), "--data", str(data), "--workers", "0", "--json", str(old)],
            capsys, f"--json {old} already exists; pass --overwrite")
    assert old.read_text() == "{}"
    refused(["evaluate", str(net), "--data", str(data), "--workers", "0", "--json",
             str(tmp_path / "x"), "--save-posteriors", str(tmp_path / "x")], capsys,
            "--save-posteriors and --json name the same file")
    assert main(["evaluate", str(net), "--data", str(data), "--workers", "0", "--method",
                 "center", "--json", str(old), "--overwrite"]) == 0
    assert "top1_err" in old.read_text()


def test_convert_over_an_existing_checkpoint_needs_overwrite(net: Path, tmp_path: Path,
                                                              capsys) -> None:
    import torch

    from vgg.checkpoint import load_checkpoint

    src = tmp_path / "tv.pth"
    torch.save(load_checkpoint(net).state_dict, src)
    before = net.read_bytes()
    refused(["convert", str(src), "--out", str(net)], capsys,
            f"--out {net} already exists; pass --overwrite")
    assert net.read_bytes() == before
    refused(["convert", str(src), "--out", str(src), "--overwrite"], capsys, "is an input")


def test_fuse_outputs(tmp_path: Path, capsys) -> None:
    a, b = posteriors(tmp_path, "a.npz"), posteriors(tmp_path, "b.npz")
    before = a.read_bytes()
    refused(["fuse", str(a), str(b), "--save", str(a), "--overwrite"], capsys,
            f"--save {a} is an input of this command")
    refused(["fuse", str(a), str(b), "--json", str(b)], capsys, "--json", "is an input")
    assert a.read_bytes() == before
    out = tmp_path / "f.json"
    assert main(["fuse", str(a), str(b), "--json", str(out)]) == 0
    refused(["fuse", str(a), "--json", str(out)], capsys, "already exists")
    assert main(["fuse", str(a), "--json", str(out), "--overwrite"]) == 0


def test_transfer_json_equal_to_its_input_is_refused(tmp_path: Path, capsys) -> None:
    from vgg.transfer.features import Features

    f = Features(X=np.eye(4, dtype=np.float32), ids=list("abcd"),
                 targets=np.eye(4, 2, dtype=np.uint8), classes=["x", "y"]).save(
        tmp_path / "F.npz")
    before = f.read_bytes()
    refused(["transfer", str(f), "--json", str(f), "--overwrite"], capsys, "is an input")
    assert f.read_bytes() == before


def test_localize_outputs(net: Path, tmp_path: Path, capsys) -> None:
    before = net.read_bytes()
    refused(["localize", "evaluate", str(net), "--data", str(tmp_path), "--protocol",
             "simple", "--save-boxes", str(net)], capsys, "--save-boxes", "is an input")
    refused(["localize", "evaluate", str(net), "--data", str(tmp_path), "--classifier",
             str(tmp_path / "c.pt"), "--json", str(tmp_path / "c.pt")], capsys, "is an input")
    assert net.read_bytes() == before
    boxes = tmp_path / "b.npz"
    boxes.write_bytes(b"")
    refused(["localize", "fuse", str(boxes), "--save", str(boxes), "--overwrite"], capsys,
            "is an input")
    draw = tmp_path / "pics"
    make_images(draw, classes=["c"], sizes=[(40, 40)])
    refused(["localize", "predict", str(net), str(draw / "c" / "0.png"), "--classifier",
             str(net), "--draw", str(draw), "--overwrite"], capsys, "holds the input")
    (tmp_path / "drawn").mkdir()
    (tmp_path / "drawn" / "0.png").write_bytes(b"x")
    refused(["localize", "predict", str(net), str(draw), "--classifier", str(net), "--draw",
             str(tmp_path / "drawn")], capsys, "already holds pictures; pass --overwrite")


def test_export_and_data_outputs(net: Path, data: Path, tmp_path: Path, capsys) -> None:
    refused(["export", str(net), "--safetensors", str(net), "--overwrite"], capsys,
            "is an input")
    stats = tmp_path / "stats.json"
    stats.write_text("{}")
    refused(["data", "stats", str(data), "--out", str(stats)], capsys, "already exists")
    refused(["data", "boxes", str(data), "--json", str(stats)], capsys, "already exists")
    assert stats.read_text() == "{}"


def test_data_synth_replaces_an_earlier_set_only_with_overwrite(tmp_path: Path, capsys
                                                                 ) -> None:
    out = tmp_path / "s"
    small = ["--train-per-class", "2", "--val-per-class", "1", "--workers", "0",
             "--no-progress", "--min-side", "32", "--max-side", "40"]
    assert main(["data", "synth", str(out), "--classes", "4", *small]) == 0
    refused(["data", "synth", str(out), "--classes", "3", *small], capsys,
            "already holds a shapes dataset; pass --overwrite")
    assert main(["data", "synth", str(out), "--classes", "3", "--overwrite", *small]) == 0
    assert len(list((out / "train").iterdir())) == 3  # main: 4 (two sets mixed)
    other = tmp_path / "photos"
    other.mkdir()
    (other / "mine.jpg").write_bytes(b"x")
    refused(["data", "synth", str(other), "--overwrite", *small], capsys,
            "is not a shapes dataset")
    assert (other / "mine.jpg").read_bytes() == b"x"
