"""`vgg demo --quick` end to end: it must learn far above chance and write its report."""

from __future__ import annotations

from pathlib import Path

import pytest

from vgg.cli import main
from vgg.demo import DemoConfig, make_plan, run_demo


@pytest.mark.slow
def test_quick_demo_learns_and_writes_report(tmp_path: Path) -> None:
    import torch

    out = tmp_path / "demo"
    result = run_demo(DemoConfig(out=out, quick=True, device="cpu", workers=1,
                                 progress=False))
    plan = make_plan(True, torch.device("cpu"))
    chance = 1 - 1 / plan.classes
    protocols = [r["protocol"] for r in result.rows]
    assert protocols == ["centre crop", "dense", "dense 3 scales", "multi-crop 3 scales",
                         "multi-crop & dense"]
    for r in result.rows:
        assert 0.0 <= r["top1_err"] <= 1.0 and r["top5_err"] <= r["top1_err"]
        assert r["n_images"] == plan.classes * plan.val_per_class
    # far below chance (top-1 0.9 and top-5 0.5 for 10 classes) with the best protocol;
    # the 2-minute plan reaches about 0.40 / 0.02, the 10-minute plan about 0.02 / 0.00
    assert min(r["top1_err"] for r in result.rows) < chance - 0.3
    assert min(r["top5_err"] for r in result.rows) < (1 - 5 / plan.classes) - 0.35
    report = (out / "report.md").read_text()
    for method in ("center", "dense", "multicrop", "both"):  # the paper's method names
        assert f"| {method} |" in report
    assert "vgg predict" in report and "vgg evaluate" in report
    # Appendix A: a PCR net from the classification net, both protocols, baselines
    # (--quick: the full protocol at one scale; the full demo adds Table 9's two scales)
    assert [r["protocol"] for r in result.loc_rows] == ["simple", "full"]
    # the full protocol at the plan's stride (8 on a CPU: measured better than 4 at crop 32)
    assert plan.loc_stride == 8 and result.loc_rows[1]["dense_stride"] == "8"
    simple = result.loc_rows[0]
    assert simple["head"] == "PCR" and simple["n_images"] == plan.classes * plan.val_per_class
    assert simple["top1_err"] < simple["mean_top1_err"] < simple["whole_top1_err"]
    assert "## Localisation" in report and "![predicted against true boxes](boxes.png)" in report
    assert (out / "boxes.png").stat().st_size > 1000
    for png in (out / "errors.png", out / "run" / "curves.png"):
        assert png.stat().st_size > 1000
    assert result.checkpoint.is_file()
    # the checkpoint works with `vgg predict`
    image = next((out / "data" / "val").glob("*/*.jpg"))
    assert main(["predict", str(result.checkpoint), str(image), "--top", "3"]) == 0
    assert main(["localize", "predict", str(result.loc_checkpoint), "--classifier",
                 str(result.checkpoint), str(image), "--top", "2", "--workers", "0"]) == 0
    # a second run reuses the dataset and refuses a folder made with other settings
    (out / "data" / "synth.json").write_text('{"classes": 3}')
    assert main(["demo", "--out", str(out), "--quick", "--device", "cpu"]) == 2


def test_demo_rejects_bad_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["demo", "--seed", "-1"])
    assert e.value.code == 2
    assert "--seed: must be in 0.." in capsys.readouterr().err
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "data").mkdir()
    (tmp_path / "junk" / "data" / "notes.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path / "junk"), "--quick", "--device", "cpu"]) == 2
    assert "not a shapes dataset" in capsys.readouterr().err
    assert (tmp_path / "junk" / "data" / "notes.txt").read_text() == "mine"


def test_demo_dataset_is_reused_when_the_plan_matches(tmp_path: Path) -> None:
    """synth.json holds the class names; the plan their number: a second run must reuse
    the folder (made=False), a folder made with other settings is refused untouched."""
    import dataclasses

    import torch

    from vgg.demo import shapes_dataset
    from vgg.errors import ConfigError

    plan = dataclasses.replace(make_plan(True, torch.device("cpu")), classes=3,
                               train_per_class=2, val_per_class=1)
    root, made = shapes_dataset(plan, tmp_path / "data", seed=0)
    assert made and len(list((root / "train").glob("*/*.jpg"))) == 6
    assert shapes_dataset(plan, root, seed=0) == (root, False)
    with pytest.raises(ConfigError, match="other settings"):
        shapes_dataset(dataclasses.replace(plan, classes=4), root, seed=0)
    with pytest.raises(ConfigError, match="other settings"):
        shapes_dataset(plan, root, seed=1)
    assert len(list((root / "train").glob("*/*.jpg"))) == 6


def test_demo_trains_without_loader_processes_on_a_two_core_cpu(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import vgg.data.loaders as L
    from vgg.demo import train_workers

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for cores, want in ((1, 0), (2, 0), (8, None)):
        monkeypatch.setattr(L, "default_workers", lambda c=cores: c)
        assert train_workers(None, cpu) == want
        assert train_workers(None, cuda) is None   # the loader's default
        assert train_workers(3, cpu) == 3          # as given
