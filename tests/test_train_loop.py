"""End-to-end training on tiny nets and tiny generated data: checkpoints usable for
evaluation, gradient accumulation equal to the whole batch, non-finite loss, unwritable
or full output folders, initialisation from A and fine-tuning."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import vgg.train.checkpoint as run_ckpt
from vgg.checkpoint import load_checkpoint, load_model, save_checkpoint
from vgg.cli import build_parser, main
from vgg.cli.train import config_from_args
from vgg.data.folders import index_split
from vgg.data.synthetic import make_shapes_dataset
from vgg.errors import CheckpointError, ConfigError
from vgg.model import build
from vgg.preprocess import Preprocess
from vgg.train import (TrainConfig, TrainingDiverged, load_yaml, resolve, resume,
                       resume_config, train)
from vgg.train.build import param_groups
from vgg.train.task import ClassificationTask, shard


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    return make_shapes_dataset(out, classes=3, train_per_class=8, val_per_class=2,
                               min_side=40, max_side=64, workers=0)


def tiny(data: Path, out: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(data=str(data), out=str(out), arch="A", width=1 / 16,
                                fc_width=32, crop=32, scale=(40, 48), epochs=1, batch=8,
                                workers=0, stats_limit=8, tensorboard=False, plot=False,
                                progress=False, lr=0.05)
    base.update(kw)
    return TrainConfig(**base)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).state_dict


def test_run_writes_usable_checkpoints_and_logs(data: Path, tmp_path: Path) -> None:
    seen: list[dict] = []
    r = train(tiny(data, tmp_path / "run", epochs=2, plot=True), callback=seen.append)
    assert r.stopped == "epochs" and len(r.history) == 2 and seen == r.history
    assert r.best_path == tmp_path / "run" / "best.pt" and r.last_path.is_file()
    model = load_model(r.best_path)  # what `vgg evaluate` / `vgg predict` do
    assert model.classes == index_split(data, "train").classes and len(model.classes) == 3
    ck = load_checkpoint(r.last_path)
    assert ck.meta["train_scale"] == [40, 48] and ck.meta["epoch"] == 2
    assert set(ck.meta["stats"]) >= {"mean_rgb", "eigval", "eigvec"}
    assert ck.preprocess.mean == pytest.approx(tuple(ck.meta["stats"]["mean_rgb"]))
    assert ck.train_state["epoch"] == 2 and ck.train_state["step"] == 0
    assert ck.train_state["global_step"] == 6  # 24 images / batch 8, two epochs
    best = load_checkpoint(r.best_path)
    assert best.train_state is None and best.meta["val_top1_err"] == r.best_top1_err
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    assert [x["epoch"] for x in recs] == [1, 2]
    assert {"train_loss", "val_top1_err", "val_top5_err", "lr", "train_bad",
            "img_per_s"} <= set(recs[0])
    assert recs[0]["train_images"] == 24 and recs[0]["val_images"] == 6
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    assert "arch: A" in (tmp_path / "run" / "config.yaml").read_text()


def test_accumulation_equals_whole_batch(data: Path, tmp_path: Path) -> None:
    kw = dict(dropout=0.0, epochs=1, deterministic=True)
    whole = train(tiny(data, tmp_path / "whole", **kw))
    split = train(tiny(data, tmp_path / "split", micro_batch=3, **kw))  # 3 + 3 + 2
    a, b = weights(whole.last_path), weights(split.last_path)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert whole.history[0]["train_loss"] == pytest.approx(split.history[0]["train_loss"],
                                                           rel=1e-5)


def test_training_changes_weights_and_biases_not_decayed(data: Path, tmp_path: Path) -> None:
    # a real run changes every layer
    r = train(tiny(data, tmp_path / "run", init="kaiming"))
    init = build("A", width=1 / 16, fc_width=32, crop=32, num_classes=3, init="kaiming",
                 generator=torch.Generator().manual_seed(0)).state_dict()
    after = weights(r.last_path)
    for k in init:
        if k.endswith("weight"):
            assert not torch.equal(init[k], after[k]), f"{k} did not change"
    # weight decay alone (zero gradient): weights shrink by lr * wd, biases do not move
    model = build("A", width=1 / 16, fc_width=32, crop=32, num_classes=3, init="kaiming")
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.fill_(1.0)
    old = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(param_groups(model, 0.5, decay_biases=False), lr=0.1)
    (sum(p.sum() for p in model.parameters()) * 0.0).backward()
    opt.step()
    for n, p in model.named_parameters():
        if p.dim() == 1:
            assert torch.equal(p, old[n]), f"bias {n} was decayed"
        else:
            torch.testing.assert_close(p, old[n] * (1 - 0.1 * 0.5))
    opt = torch.optim.SGD(param_groups(model, 0.5, decay_biases=True), lr=0.1)
    b = model.classifier[0].bias.detach().clone()
    opt.zero_grad()
    (sum(p.sum() for p in model.parameters()) * 0.0).backward()
    opt.step()
    torch.testing.assert_close(model.classifier[0].bias, b * 0.95)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = ClassificationTask.loss
    calls = {"n": 0}

    def poisoned(self, out, batch):  # noqa: ANN001, ANN202
        calls["n"] += 1
        loss, right, n = real(self, out, batch)
        return (loss * float("nan") if calls["n"] == 5 else loss), right, n  # epoch 2, step 2

    monkeypatch.setattr(ClassificationTask, "loss", poisoned)
    cfg = tiny(data, tmp_path / "run", epochs=3)
    with pytest.raises(TrainingDiverged, match=r"nan at epoch 2, step 2") as e:
        train(cfg)
    assert "last.pt" in str(e.value)
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck.train_state["epoch"] == 1 and ck.train_state["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in ck.state_dict.values() if v.is_floating_point())


def test_non_finite_weights_are_never_saved(data: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The loss of the last step of an epoch is finite, but its update makes a weight
    NaN: the epoch's checkpoints must not be written as good ones."""
    real = torch.optim.SGD.step
    calls = {"n": 0}

    def step(self, *a, **kw):  # noqa: ANN001, ANN202
        out = real(self, *a, **kw)
        calls["n"] += 1
        if calls["n"] == 6:  # the last step of epoch 2
            with torch.no_grad():
                self.param_groups[0]["params"][0][0, 0, 0, 0] = float("nan")
        return out

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    with pytest.raises(TrainingDiverged, match="weights became non-finite") as e:
        train(tiny(data, tmp_path / "run", epochs=3))
    assert "features.0.weight" in str(e.value)
    ck = load_checkpoint(tmp_path / "run" / "last.pt")  # refuses NaN weights by default
    assert ck.train_state["epoch"] == 1
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1  # the diverged epoch is not logged as done


def test_nan_settings_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("weight_decay: .nan\n")
    with pytest.raises(ConfigError, match=r"weight_decay \(--weight-decay\) must be a finite"):
        resolve(load_yaml(f), {"data": "d"})
    for key in ("lr", "momentum", "colour_std", "init_std", "save_every_minutes", "warmup",
                "width", "dropout", "plateau_threshold", "lr_factor"):
        for bad in (float("nan"), float("inf")):
            with pytest.raises(ConfigError, match=key):
                TrainConfig(data="d", **{key: bad})


def test_unwritable_out_dir_is_reported_before_training(data: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="not writable"):
        train(tiny(data, blocker / "run"))


def test_full_disk_is_reported_and_existing_checkpoint_untouched(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    train(tiny(data, run))
    before = (run / "last.pt").read_bytes()

    class Usage:
        free = 1024

    monkeypatch.setattr(run_ckpt.shutil, "disk_usage", lambda p: Usage())
    with pytest.raises(ConfigError, match="not enough free disk space"):
        train(tiny(data, tmp_path / "other", resume=str(run), epochs=2))
    with pytest.raises(ConfigError, match="not enough free disk space"):
        resume(run, epochs=2, progress=False)
    assert (run / "last.pt").read_bytes() == before


def test_init_from_a_and_finetune(data: Path, tmp_path: Path) -> None:
    a = train(tiny(data, tmp_path / "A"))
    b = train(tiny(data, tmp_path / "B", arch="B", init_from=str(a.best_path), lr=0.01))
    assert load_model(b.best_path).config.arch == "B"
    ft = train(tiny(data, tmp_path / "A384", scale=(56, 56), lr=1e-3,
                    finetune_from=str(a.best_path)))
    ck = load_checkpoint(ft.last_path)
    assert ck.meta["train_scale"] == [56, 56]
    # the stats travel with the fine-tuned net
    assert ck.meta["stats"] == load_checkpoint(a.best_path).meta["stats"]
    with pytest.raises(CheckpointError, match="width"):
        train(tiny(data, tmp_path / "bad", width=1 / 8, finetune_from=str(a.best_path)))


def test_finetuning_keeps_the_source_input_convention(data: Path, tmp_path: Path) -> None:
    """A net trained on torchvision's mean/std (or Caffe's BGR) inputs keeps them when
    fine-tuned: its first layer must see the inputs it was trained on."""
    a = train(tiny(data, tmp_path / "A"))
    for name, pre in (("tv", Preprocess.torchvision()), ("caffe", Preprocess.caffe())):
        model = load_model(a.best_path)
        model.preprocess = pre
        src = save_checkpoint(tmp_path / f"{name}.pt", model)
        ft = train(tiny(data, tmp_path / f"ft-{name}", finetune_from=str(src), lr=1e-3))
        assert load_checkpoint(ft.best_path).preprocess == pre
        ini = train(tiny(data, tmp_path / f"init-{name}", arch="B", init_from=str(src)))
        assert load_checkpoint(ini.best_path).preprocess == pre
    # the paper's convention: mean subtraction with the training set's mean
    assert load_checkpoint(a.best_path).preprocess.std == (1.0, 1.0, 1.0)


def test_validation_equals_vgg_evaluate(data: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """One meaning of each protocol: an epoch's validation numbers are those of `vgg
    evaluate` on the checkpoint of that epoch with the same method and Q."""
    from vgg.eval import evaluate

    val = index_split(data, "val")
    for method in ("dense", "center"):
        r = train(tiny(data, tmp_path / method, val_method=method, val_scale=44,
                       init="kaiming"))
        h = r.history[0]
        assert h["val_images"] == 6
        ev = evaluate(str(r.best_path), val, method=method, scales=[44], workers=0,
                      progress=False)
        assert h["val_top1_err"] == pytest.approx(ev.top1_err, abs=1e-9)
        assert h["val_top5_err"] == pytest.approx(ev.top5_err, abs=1e-9)
        p = ev.posteriors[np.arange(ev.n_images), ev.labels].astype(np.float64)
        assert h["val_loss"] == pytest.approx(-np.log(p).mean(), rel=1e-5)
        assert main(["evaluate", str(r.best_path), "--data", str(data), "--method", method,
                     "--scales", "44", "--workers", "0", "--json",
                     str(tmp_path / f"{method}.json")]) == 0
        j = json.loads((tmp_path / f"{method}.json").read_text())
        assert j["top1_err"] == pytest.approx(h["val_top1_err"], abs=1e-9)
    capsys.readouterr()


def test_schedule_stops_training(data: Path, tmp_path: Path) -> None:
    # threshold 1 => no epoch "improves" after the first: decrease, then stop
    r = train(tiny(data, tmp_path / "run", epochs=10, patience=0, plateau_threshold=1.0,
                   lr_decreases=1))
    assert [h["schedule"] for h in r.history] == ["improved", "decrease", "stop"]
    assert r.stopped == "schedule"
    assert [h["lr"] for h in r.history] == pytest.approx([0.05, 0.05, 0.005])


def test_unreadable_images_are_skipped_and_counted(data: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    cls = sorted(p for p in (copy / "train").iterdir() if p.is_dir())[0]
    (cls / "zz_truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    r = train(tiny(copy, tmp_path / "run"))
    h = r.history[0]
    assert h["train_bad"] == 1 and h["train_images"] == 24


def test_resume_refuses_to_change_the_recipe(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(tiny(data, run))  # lr 0.05
    with pytest.raises(ConfigError, match=r"cannot change lr 0.05 -> 0.5"):
        resume(run, lr=0.5, progress=False)
    # typing the built-in default is a change too when the run used another value
    with pytest.raises(ConfigError, match=r"cannot change lr 0.05 -> 0.01"):
        resume_config(run, {"lr": 0.01})
    with pytest.raises(ConfigError, match="differ from its config.yaml: arch, .*lr"):
        train(TrainConfig(resume=str(run), data=str(data), progress=False))
    # the same settings as the run, or only resumable ones, are fine
    r = resume(run, epochs=2, lr=0.05, progress=False)
    assert r.run_dir == run and len(r.history) == 2


def test_resume_honours_the_flags_typed(data: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    argv = ["train", "--data", str(data), "--out", str(run), "--arch", "A", "--width",
            "0.0625", "--fc-width", "32", "--crop", "32", "--scale", "40-48", "--batch", "8",
            "--workers", "0", "--stats-limit", "8", "--lr", "0.05", "--epochs", "1",
            "--no-tensorboard", "--no-plot", "--no-progress"]
    assert main(argv) == 0
    # --epochs 74 is the built-in default, but it was typed: the run is extended to it
    cfg = config_from_args(build_parser().parse_args(["train", "--resume", str(run),
                                                      "--epochs", "74"]))
    assert cfg.epochs == 74 and cfg.lr == 0.05 and cfg.out == str(run)
    assert main(["train", "--resume", str(run), "--lr", "0.01"]) == 2
    assert "cannot change lr 0.05 -> 0.01" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--epochs", "2", "--lr", "0.05",
                 "--no-progress", "--workers", "0"]) == 0
    recs = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in recs] == [1, 2]


def test_one_run_per_folder(data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
                            ) -> None:
    run = tmp_path / "run"
    with run_ckpt.RunLock(run):
        with pytest.raises(ConfigError, match=rf"in use by another vgg run \(pid {os.getpid()}"):
            train(tiny(data, run))
    assert not (run / "last.pt").exists()
    # a lock file left by a killed run (nobody holds it): taken over with a warning
    (run / ".lock").write_text(json.dumps({"pid": 999999, "host": "gone", "start": 0}))
    with caplog.at_level(logging.WARNING):
        train(tiny(data, run))
    assert "stale lock of pid 999999 on gone" in caplog.text
    assert not (run / ".lock").exists()
    # a new run never silently replaces an earlier one
    with pytest.raises(ConfigError, match="already holds a run .*--resume"):
        train(tiny(data, run))
    train(tiny(data, run, overwrite=True))
    # resuming clears the temporaries a kill during a checkpoint write leaves
    orphan = run / ".last.pt.k1ll3d.tmp"
    orphan.write_bytes(b"x" * 1000)
    resume(run, epochs=2, progress=False)
    assert not orphan.exists() and (run / "last.pt").is_file()


def test_resume_of_a_mixed_up_run_folder_is_refused(data: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    train(tiny(data, a))
    train(tiny(data, b, arch="B"))
    (a / "last.pt").write_bytes((b / "last.pt").read_bytes())  # user copied the wrong file
    with pytest.raises(CheckpointError, match="holds a B net .* describes"):
        resume(a, epochs=2, progress=False)


@pytest.mark.parametrize("kw, match", [
    ({"workers": 99999999999}, "workers"), ({"width": float("inf")}, "width"),
    ({"width": 99999999999.0}, "width"), ({"batch": 99999999999}, "batch"),
    ({"seed": -5}, "seed"), ({"epochs": 1.5}, "epochs"), ({"epochs": True}, "epochs"),
    ({"save_every_minutes": -1}, "save_every_minutes"), ({"fc_width": 10**9}, "fc_width"),
    ({"scale": (99999999, 99999999)}, "scale"), ({"val_scale": 99999999}, "val_scale"),
    ({"micro_batch": 0}, "micro_batch"), ({"warmup": 100.0}, "warmup"),
    ({"schedule": "linear"}, "schedule"), ({"device": "tpu"}, "device"),
])
def test_every_setting_has_bounds(kw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainConfig(data="d", **kw)


@pytest.mark.parametrize("text, match", [
    ("seed: -5", "seed"), ("epochs: 1.5", "epochs"), ("save_every_minutes: -1",
                                                      "save_every_minutes"),
    ("batch: 99999999999", "batch"), ("workers: 99999999999", "workers"),
    ("width: .inf", "width"), ("lr: .nan", "lr"), ("flip: 3", "flip"),
])
def test_yaml_values_follow_the_same_rules(tmp_path: Path, text: str, match: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text + "\n")
    assert main(["train", "--config", str(f), "--data", "d", "--crop", "32",
                 "--scale", "40"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err and len(err.splitlines()) == 1


def test_shard_gives_every_image_to_exactly_one_rank() -> None:
    from vgg.data.folders import ImageIndex

    idx = ImageIndex([(Path(f"{i}.jpg"), 0) for i in range(3)], ["a"])
    parts = [shard(idx, r, 4) for r in range(4)]
    assert [len(p) for p in parts] == [1, 1, 1, 0]  # rank 3 validates nothing
    assert sorted(str(p.samples[0][0]) for p in parts if len(p)) == ["0.jpg", "1.jpg", "2.jpg"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only messages")
def test_cuda_only_settings_fail_clearly_on_cpu(data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--amp fp16 needs a CUDA device"):
        train(tiny(data, tmp_path / "a", device="cpu", amp="fp16"))
    with pytest.raises(ConfigError, match="no CUDA device"):
        train(tiny(data, tmp_path / "b", device="cuda"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cosine_schedule_with_warmup(data: Path, tmp_path: Path) -> None:
    full = train(tiny(data, tmp_path / "full", epochs=3, schedule="cosine", warmup=1.0))
    lrs = [h["lr"] for h in full.history]  # the lr of each epoch's last step (3 steps each)
    assert lrs[0] == pytest.approx(0.05)  # the end of the warm-up: the full rate
    assert lrs[1] == pytest.approx(0.05 * 0.5 * (1 + np.cos(np.pi * 2 / 6)))  # step 5 of 9
    assert lrs[0] > lrs[1] > lrs[2] and lrs[2] < 0.01
    assert [h["schedule"] for h in full.history][0] == "improved"
