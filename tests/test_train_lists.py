"""``vgg train`` / ``vgg evaluate`` with ``--train-list`` / ``--val-list`` (a Caltech-101
style layout with its split lists) and ``--val-split``, end to end on a tiny net: the
epochs see exactly the listed images, evaluation scores the same images as validation,
a resumed run must see the same images, and bad lists are one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vgg.checkpoint import load_checkpoint
from vgg.cli import main

CLASSES = {"BACKGROUND_Google": 5, "accordion": 6, "airplanes": 7}
NET = ["--arch", "A", "--width", "0.0625", "--fc-width", "32", "--crop", "32",
       "--scale", "40-48", "--batch", "4", "--workers", "0", "--stats-limit", "8",
       "--lr", "0.01", "--no-tensorboard", "--no-plot", "--no-progress"]


def _photo(path: Path, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = (int(v) for v in rng.integers(40, 64, 2))
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def caltech(root: Path) -> tuple[Path, Path, Path]:
    """``root/101_ObjectCategories/<class>/image_000N.jpg`` + ``root/train.txt`` (odd N)
    and ``root/test.txt`` (even N), lines ``class/image_000N.jpg``."""
    rng = np.random.default_rng(0)
    cats = root / "101_ObjectCategories"
    train, test = [], []
    for c, n in CLASSES.items():
        for i in range(1, n + 1):
            _photo(cats / c / f"image_{i:04d}.jpg", rng)
            (train if i % 2 else test).append(f"{c}/image_{i:04d}.jpg")
    (root / "train.txt").write_text("\n".join(train) + "\n")
    (root / "test.txt").write_text("\n".join(test) + "\n")
    return cats, root / "train.txt", root / "test.txt"


def status(argv: list[str]) -> int:
    """The exit status of ``vgg ARGV`` (argparse's own errors exit through SystemExit)."""
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code or 0)


def metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def listed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    root = tmp_path_factory.mktemp("caltech")
    cats, train, test = caltech(root)
    run = root / "run"
    assert main(["train", "--data", str(cats), "--train-list", str(train), "--val-list",
                 str(test), "--out", str(run), "--epochs", "1", *NET]) == 0
    return cats, train, test, run


def test_train_sees_exactly_the_listed_images(listed_run) -> None:  # noqa: ANN001
    cats, train, test, run = listed_run
    n_train, n_test = (len(f.read_text().split()) for f in (train, test))
    assert (n_train, n_test) == (10, 8)
    rec = metrics(run)[-1]
    assert rec["train_images"] == n_train and rec["val_images"] == n_test
    cfg = (run / "config.yaml").read_text()
    assert f"train_list: {train}" in cfg and f"val_list: {test}" in cfg
    ck = load_checkpoint(run / "best.pt")
    assert ck.classes == sorted(CLASSES)  # the first folders, sorted
    assert ck.meta["data"]["train"]["images"] == n_train
    assert ck.meta["data"]["val"]["images"] == n_test


def test_evaluate_val_list_scores_what_validation_scored(listed_run, tmp_path: Path,
                                                         capsys) -> None:  # noqa: ANN001
    cats, _, test, run = listed_run
    out = tmp_path / "r.json"
    assert main(["evaluate", str(run / "best.pt"), "--data", str(cats), "--val-list",
                 str(test), "--method", "center", "--scales", "44", "--workers", "0",
                 "--json", str(out), "--no-progress"]) == 0
    j = json.loads(out.read_text())
    assert j["n_images"] == 8
    assert j["top1_err"] == pytest.approx(metrics(run)[-1]["val_top1_err"])
    # a listed file that is missing: one line naming it, exit status 2
    shutil.copytree(cats, tmp_path / "cats")
    (tmp_path / "cats" / "airplanes" / "image_0004.jpg").unlink()
    capsys.readouterr()
    assert main(["evaluate", str(run / "best.pt"), "--data", str(tmp_path / "cats"),
                 "--val-list", str(test), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert "1 of the 8 listed files do not exist" in err
    assert "airplanes/image_0004.jpg (line 7)" in err
    # --split and a list say two different things
    assert main(["evaluate", str(run / "best.pt"), "--data", str(cats), "--val-list",
                 str(test), "--split", "val"]) == 2
    assert "not both" in capsys.readouterr().err


def test_resume_needs_the_same_images(listed_run, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    cats, train, test, base = listed_run
    run = tmp_path / "run"
    shutil.copytree(base, run)
    last = (run / "last.pt").read_bytes()
    # the list changed between the runs: refused, the run untouched
    lines = train.read_text().splitlines()
    edited = tmp_path / "train.txt"
    edited.write_text("\n".join(lines[1:]) + "\n")
    assert main(["train", "--resume", str(run), "--epochs", "2", "--train-list",
                 str(edited), "--no-progress", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "training images differ from those the run was trained with (10 images then, " \
           "9 now" in err and len(err.splitlines()) == 1
    assert (run / "last.pt").read_bytes() == last
    # the split settings are the run's: another --split-seed is a change of recipe
    assert main(["train", "--resume", str(run), "--split-seed", "5"]) == 2
    assert "cannot change split_seed 0 -> 5" in capsys.readouterr().err
    # the same list moved elsewhere (and the data folder too) is the same data
    moved = tmp_path / "lists"
    moved.mkdir()
    shutil.copy(train, moved / "train.txt")
    shutil.copytree(cats, tmp_path / "cats")
    assert main(["train", "--resume", str(run), "--epochs", "2", "--data",
                 str(tmp_path / "cats"), "--train-list", str(moved / "train.txt"),
                 "--no-progress", "--workers", "0"]) == 0
    assert [r["epoch"] for r in metrics(run)] == [1, 2]
    assert f"train_list: {moved / 'train.txt'}" in (run / "config.yaml").read_text()


def test_val_split_trains_and_evaluates_on_the_same_held_out_images(
        tmp_path: Path, capsys) -> None:  # noqa: ANN001
    rng = np.random.default_rng(1)
    photos = tmp_path / "photos"  # class folders, no train/ or val/
    for c in ("ant", "bee", "cow"):
        for i in range(5):
            _photo(photos / c / f"{i}.jpg", rng)
    run = tmp_path / "run"
    assert main(["train", "--data", str(photos), "--val-split", "0.4", "--split-seed", "1",
                 "--out", str(run), "--epochs", "1", *NET]) == 0
    rec = metrics(run)[-1]
    assert rec["train_images"] == 9 and rec["val_images"] == 6  # 2 of 5 per class held out
    out = tmp_path / "r.json"
    assert main(["evaluate", str(run / "best.pt"), "--data", str(photos), "--val-split",
                 "0.4", "--split-seed", "1", "--method", "center", "--scales", "44",
                 "--workers", "0", "--json", str(out), "--no-progress"]) == 0
    j = json.loads(out.read_text())
    assert j["n_images"] == 6 and j["top1_err"] == pytest.approx(rec["val_top1_err"])
    capsys.readouterr()
    # out-of-range fractions and contradictory flags: one line, exit status 2
    for bad in (["--val-split", "1.5"], ["--val-split", "0"],
                ["--val-split", "0.2", "--val-list", "x.txt"]):
        assert status(["train", "--data", str(photos), "--out", str(tmp_path / "r2"),
                       *bad, *NET]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and ("(0, 1)" in err or "not both" in err)
    # without a split or lists, the error says how to get a validation set
    assert main(["train", "--data", str(photos), "--out", str(tmp_path / "r3"), *NET]) == 2
    assert "give --val-split FRACTION" in capsys.readouterr().err


def test_localisation_training_data_takes_lists_and_val_split(tmp_path: Path) -> None:
    from vgg.data.synthetic import make_shapes_dataset
    from vgg.localize.task import LocalisationTask
    from vgg.train import TrainConfig

    d = make_shapes_dataset(tmp_path / "shapes", classes=3, train_per_class=4,
                            val_per_class=1, min_side=40, max_side=48, workers=0)
    rows = [f"{p.relative_to(d).as_posix()},{p.parent.name}"
            for p in sorted((d / "train").rglob("*.jpg"))]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    cfg = TrainConfig(data=str(d), head="pcr", crop=32, scale=(40, 48),
                      train_list=str(tmp_path / "train.csv"), val_split=0.25)
    task = LocalisationTask(cfg)
    train, val = task.indexes(None)
    # every image keeps its box: the held-out ones are found where the training boxes are
    assert (len(train), len(val)) == (9, 3) and task.dropped == {"train": 0, "val": 0}
    assert train.classes == val.classes == ["circle", "square", "triangle"]
    assert len(train.boxes) == 9 and len(val.boxes) == 3
