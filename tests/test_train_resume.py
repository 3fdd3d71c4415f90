"""Runs that survive: a run killed with SIGKILL mid-epoch and resumed ends with the same
weights as an uninterrupted one; SIGTERM finishes the step, saves and exits; 2 processes
with DDP (gloo) reach the weights of 1 process with the same global batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from vgg.checkpoint import load_checkpoint
from vgg.data.synthetic import make_shapes_dataset
from vgg.train import TrainConfig, resume, train

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    return make_shapes_dataset(out, classes=3, train_per_class=8, val_per_class=2,
                               min_side=40, max_side=64, workers=0)


def flags(data: Path, out: Path, **extra: Any) -> list[str]:
    kw: dict[str, Any] = dict(data=data, out=out, arch="A", width=0.0625, fc_width=32, crop=32,
                              scale="40-48", batch=8, workers=0, stats_limit=8, lr=0.05,
                              seed=3)
    kw.update(extra)
    argv = []
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return argv + ["--no-tensorboard", "--no-plot", "--no-progress", "--deterministic"]


def cfg_of(argv: list[str]) -> TrainConfig:
    from vgg.cli import build_parser
    from vgg.cli.train import given_settings
    from vgg.train import resolve

    return resolve({}, given_settings(build_parser().parse_args(["train", *argv])))


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = SRC + os.pathsep + e.get("PYTHONPATH", "")
    e["OMP_NUM_THREADS"] = "1"
    return e


def assert_same_weights(a: Path, b: Path, atol: float = 0.0) -> None:
    wa, wb = load_checkpoint(a).state_dict, load_checkpoint(b).state_dict
    assert wa.keys() == wb.keys()
    for k in wa:
        if atol:
            torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=atol)
        else:
            assert torch.equal(wa[k], wb[k]), k


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(data: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    epochs = 3
    ref = train(cfg_of(flags(data, tmp_path / "ref", epochs=epochs)))
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "vgg", "train",
                             *flags(data, run, epochs=epochs, save_every_steps=1)],
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = run / "last.pt"
    deadline = time.monotonic() + 120
    # kill as soon as a mid-epoch checkpoint exists (after the 2nd optimizer step)
    while time.monotonic() < deadline and proc.poll() is None:
        if last.is_file():
            try:
                ts = load_checkpoint(last).train_state
            except Exception:  # being replaced right now: look again
                ts = None
            if ts and ts["global_step"] >= 2:
                break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    saved = load_checkpoint(last).train_state
    assert saved["global_step"] < epochs * 3  # really interrupted
    res = resume(run, progress=False)
    assert res.stopped == "epochs" and len(res.history) == epochs
    assert_same_weights(ref.last_path, res.last_path)
    assert [h["val_top1_err"] for h in res.history] == [h["val_top1_err"]
                                                       for h in ref.history]
    assert res.history[-1]["train_loss"] == pytest.approx(ref.history[-1]["train_loss"])
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == list(range(1, epochs + 1))


@pytest.mark.slow
def test_sigterm_finishes_step_saves_and_exits(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "vgg", "train",
                             *flags(data, run, epochs=50, save_every_steps=1)],
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run / "last.pt").is_file():
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert "--resume" in err.decode()
    ts = load_checkpoint(run / "last.pt").train_state
    assert ts["global_step"] >= 1
    # it resumes from there
    res = resume(run, epochs=ts["epoch"] + 1, progress=False)
    assert len(res.history) == ts["epoch"] + 1


@pytest.mark.slow
def test_ddp_two_processes_equal_one(data: Path, tmp_path: Path) -> None:
    """Same weights as one process; every image counted once: a rank whose share of the
    validation set is empty (or unreadable) adds nothing, and the unreadable images of
    all ranks are summed."""
    import shutil

    torch.set_num_threads(1)
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    cls = sorted(p for p in (copy / "train").iterdir() if p.is_dir())
    (cls[0] / "zz_bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (cls[1] / "zz_bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    val = sorted((copy / "val").rglob("*.jpg"))
    for p in val[1:]:  # one readable validation image and one unreadable one
        p.unlink()
    (val[0].parent / "zz_bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    common = dict(epochs=1, dropout=0.0, micro_batch=2)
    one = train(cfg_of(flags(copy, tmp_path / "one", **common)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc-per-node", "2", "-m", "vgg", "train",
           *flags(copy, tmp_path / "two", **common)]
    p = subprocess.run(cmd, env=env(), capture_output=True, timeout=240)
    assert p.returncode == 0, p.stderr.decode()[-3000:]
    assert_same_weights(one.last_path, tmp_path / "two" / "last.pt", atol=1e-6)
    two = load_checkpoint(tmp_path / "two" / "last.pt").train_state["history"][0]
    h1 = one.history[0]
    assert two["train_images"] == h1["train_images"] == 24
    assert two["train_bad"] == h1["train_bad"] == 2
    assert two["val_images"] == h1["val_images"] == 1
    assert two["val_bad"] == h1["val_bad"] == 1
    assert two["val_top1_err"] == h1["val_top1_err"]


@pytest.mark.slow
def test_two_runs_on_one_folder_the_second_refuses(data: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from vgg.cli import main

    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "vgg", "train",
                             *flags(data, run, epochs=50, save_every_steps=1)],
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (run / "last.pt").is_file():
            time.sleep(0.02)
        assert main(["train", *flags(data, run, epochs=1)]) == 2
        err = capsys.readouterr().err
        assert f"in use by another vgg run (pid {proc.pid}" in err
        assert main(["train", "--resume", str(run), "--no-progress"]) == 2
        assert f"pid {proc.pid}" in capsys.readouterr().err
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert load_checkpoint(run / "last.pt").train_state["global_step"] >= 1


def test_resume_with_more_epochs_does_not_make_the_cosine_rate_jump(
        data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 24 item 7: a finished 2-epoch cosine run extended to 4 epochs goes on at the
    rate it ended with (near 0, said in a warning), instead of jumping back up to the
    middle of a recomputed 4-epoch curve."""
    import logging

    run = tmp_path / "run"
    train(cfg_of(flags(data, run, epochs=2, schedule="cosine")))
    with caplog.at_level(logging.INFO, logger="vgg"):
        res = resume(run, epochs=4, progress=False)
    lrs = [h["lr"] for h in res.history]
    assert len(lrs) == 4 and lrs[2] <= lrs[1] and lrs[3] <= lrs[1]  # main: 0.0125 > 0.0033
    assert "--epochs 4 changes the run's end" in caplog.text
    assert "annealed to under 1% of --lr" in caplog.text
