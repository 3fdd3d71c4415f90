"""End-to-end training on tiny nets and tiny generated data: checkpoints usable for
evaluation, gradient accumulation equal to the whole batch, non-finite loss, unwritable
or full output folders, initialisation from A and fine-tuning."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import vgg.train.checkpoint as run_ckpt
import vgg.train.loop as loop
from vgg.checkpoint import load_checkpoint, load_model
from vgg.data.folders import index_split
from vgg.data.synthetic import make_shapes_dataset
from vgg.errors import CheckpointError, ConfigError
from vgg.train import TrainConfig, TrainingDiverged, train


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
    torch.manual_seed(0)
    model = loop.build("A", width=1 / 16, fc_width=32, crop=32, num_classes=3)
    groups = loop.param_groups(model, 5e-4, decay_biases=False)
    assert groups[0]["weight_decay"] == 5e-4 and groups[1]["weight_decay"] == 0.0
    assert all(p.dim() > 1 for p in groups[0]["params"])
    assert all(p.dim() == 1 for p in groups[1]["params"])
    assert len(loop.param_groups(model, 5e-4, decay_biases=True)) == 1


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = loop._loss_fn
    calls = {"n": 0}

    def poisoned(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        loss = real(logits, labels)
        return loss * float("nan") if calls["n"] == 5 else loss  # epoch 2, step 2

    monkeypatch.setattr(loop, "_loss_fn", poisoned)
    cfg = tiny(data, tmp_path / "run", epochs=3)
    with pytest.raises(TrainingDiverged, match=r"nan at epoch 2, step 2") as e:
        train(cfg)
    assert "last.pt" in str(e.value)
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck.train_state["epoch"] == 1 and ck.train_state["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in ck.state_dict.values() if v.is_floating_point())


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
        train(TrainConfig(resume=str(run), epochs=2, progress=False))
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


def test_dense_validation(data: Path, tmp_path: Path) -> None:
    r = train(tiny(data, tmp_path / "run", val_method="dense", val_scale=48))
    h = r.history[0]
    assert h["val_images"] == 6 and 0.0 <= h["val_top1_err"] <= 1.0
    assert math.isfinite(h["val_loss"])


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
    train(tiny(data, run))
    with pytest.raises(ConfigError, match="cannot change lr"):
        train(TrainConfig(resume=str(run), lr=0.5, progress=False))
    # the same settings as the run, or only resumable ones, are fine
    r = train(tiny(data, tmp_path / "ignored", resume=str(run), epochs=2))
    assert r.run_dir == run and len(r.history) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only messages")
def test_cuda_only_settings_fail_clearly_on_cpu(data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        train(tiny(data, tmp_path / "a", device="cpu", amp="bf16"))
    with pytest.raises(ConfigError, match="no CUDA device"):
        train(tiny(data, tmp_path / "b", device="cuda"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
