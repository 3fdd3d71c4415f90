"""The checkpoint file: round trip, atomic writes, safe loading, clear errors."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import pytest
import torch

from vgg import load_checkpoint, load_model
from vgg.checkpoint import atomic_write, save_checkpoint
from vgg.errors import CheckpointError
from vgg.model import build
from vgg.preprocess import Preprocess

SMALL = dict(width=1 / 16, fc_width=32, crop=64, num_classes=3)


def small_model(**kw: object) -> torch.nn.Module:
    return build("B", init="kaiming", classes=["cat", "dog", "owl"],
                 preprocess=Preprocess.paper((120.0, 110.0, 100.0)),
                 **{**SMALL, **kw})


def test_round_trip(tmp_path: Path) -> None:
    m = small_model(batch_norm=True).eval()
    meta = {"train_scale": [256, 512], "epoch": 3, "val_top1_err": 0.25,
            "stats": {"mean_rgb": [1.0, 2.0, 3.0]}}
    train_state = {"optimizer": {"lr": 0.01, "momentum": torch.zeros(3)}, "step": 7}
    path = save_checkpoint(tmp_path / "sub" / "m.pt", m, meta=meta, train_state=train_state)
    ck = load_checkpoint(path)
    assert ck.config == m.config and ck.classes == ["cat", "dog", "owl"]
    assert ck.preprocess == m.preprocess and ck.meta == meta and ck.path == path
    assert ck.train_state["step"] == 7
    assert torch.equal(ck.train_state["optimizer"]["momentum"], torch.zeros(3))
    m2 = load_model(path)
    assert not m2.training
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(m2(x), m(x), rtol=0, atol=0)
    # Loaded weights keep the fast layout and are trainable.
    assert m2.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(p.requires_grad for p in m2.parameters())
    assert not list(tmp_path.glob("sub/.*tmp"))


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.pt"
    save_checkpoint(path, small_model())
    good = path.read_bytes()

    def broken_save(obj: object, f: object) -> None:
        f.write(b"half a checkpoint")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(CheckpointError, match="No space left"):
        save_checkpoint(path, small_model(width=1 / 8))
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]

    def dies(f: object) -> None:
        f.write(b"x")  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, dies)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


class Payload:
    """Unpickling this would run a shell command that creates a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    zipped = tmp_path / "evil.pt"
    torch.save({"format": "vgg-checkpoint", "state_dict": Payload(marker)}, zipped)
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps({"format": "vgg-checkpoint", "x": Payload(marker)}, protocol=2))
    for path in (zipped, raw):
        with pytest.raises(CheckpointError, match="refusing to load"):
            load_checkpoint(path)
        assert not marker.exists()


def test_missing_empty_corrupt_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt"):
        load_checkpoint(empty)
    good = save_checkpoint(tmp_path / "good.pt", small_model())
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_checkpoint(truncated)
    garbage = tmp_path / "garbage.pt"
    rng = random.Random(0)
    for _ in range(50):  # random bytes make the unpickler raise all sorts of exceptions
        garbage.write_bytes(bytes(rng.getrandbits(8) for _ in range(4096)))
        with pytest.raises(CheckpointError, match="garbage.pt") as e:
            load_checkpoint(garbage)
        # the message says what is wrong with the file, not the unpickler's internals
        msg = str(e.value)
        assert "corrupt" in msg or "possible code" in msg, msg
        assert not any(x in msg for x in ("KeyError", "IndexError", "EOFError", ": 101"))
    bare = tmp_path / "bare.pt"
    torch.save(small_model().state_dict(), bare)
    with pytest.raises(CheckpointError, match="not a vgg checkpoint"):
        load_checkpoint(bare, convert=False)
    # by default a bare torchvision-layout state dict is converted on the fly
    assert load_checkpoint(bare).meta["converted_from"] == "torchvision"
    torch.save({"epoch": 3, "weights": [1, 2]}, bare)  # a dict that is no state dict
    with pytest.raises(CheckpointError, match="bare.pt: entries that are not tensors"):
        load_checkpoint(bare)
    folder = tmp_path / "dir.pt"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(folder)


def test_non_finite_weights_are_refused_naming_the_file(tmp_path: Path) -> None:
    model = small_model()
    with torch.no_grad():
        model.classifier[3].weight[0, 0] = float("nan")
        model.features[0].bias[1] = float("inf")
    path = save_checkpoint(tmp_path / "diverged.pt", model)
    with pytest.raises(CheckpointError, match=r"diverged\.pt holds non-finite weights .*"
                                              r"features\.0\.bias, classifier\.3\.weight"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="non-finite"):
        load_model(path)
    ck = load_checkpoint(path, allow_nonfinite=True)  # for inspecting a broken run
    assert torch.isnan(ck.state_dict["classifier.3.weight"]).any()


def test_newer_format_and_malformed_header(tmp_path: Path) -> None:
    from vgg.checkpoint import checkpoint_dict

    d = checkpoint_dict(small_model())
    torch.save({**d, "version": 99}, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(tmp_path / "new.pt")
    torch.save({**d, "config": {**d["config"], "depth": 3}}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="malformed"):
        load_checkpoint(tmp_path / "bad.pt")


def test_wrong_net_weights_name_the_keys(tmp_path: Path) -> None:
    from vgg.checkpoint import checkpoint_dict

    d = checkpoint_dict(small_model())
    d["state_dict"] = small_model(width=1 / 8).state_dict()  # B at another width
    torch.save(d, tmp_path / "wrong.pt")
    ck = load_checkpoint(tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match=r"do not fit B: size mismatch for features\.0"):
        ck.build_model()
    d["state_dict"] = build("D", **SMALL).state_dict()
    torch.save(d, tmp_path / "deeper.pt")
    with pytest.raises(CheckpointError, match="Unexpected key"):
        load_model(tmp_path / "deeper.pt")


def test_saved_files_get_the_usual_mode(tmp_path: Path) -> None:
    """mkstemp creates 0600 files; a checkpoint gets 0666 minus the umask like any file."""
    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "m.pt", small_model())
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_progress_prints_lines_when_not_on_a_terminal(caplog) -> None:
    """A log file gets plain progress lines (no bar, never empty for minutes)."""
    import logging

    from vgg.progress import Progress

    with caplog.at_level(logging.INFO, logger="vgg.progress"):
        with Progress(100, "dense Q=256", "img", tty=False, interval=0.0) as bar:
            for _ in range(3):
                bar.update(10)
    lines = [r.getMessage() for r in caplog.records]
    assert lines and lines[0].startswith("dense Q=256: 10/100 (10.0%)") and "img/s" in lines[0]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vgg.progress"):
        with Progress(100, "x", tty=False, interval=0.0, enabled=False) as bar:
            bar.update(50)
    assert not caplog.records  # --no-progress: nothing
