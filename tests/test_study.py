"""`vgg study`: the planner, verdicts on constructed numbers, a smoke-sized study end to end
(two tiny nets, Table 3), reuse of finished runs, exact resume of an interrupted run,
the report rebuilt from finished runs, and one-line errors for bad flags."""

from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from vgg.checkpoint import load_checkpoint
from vgg.cli import main
from vgg.errors import ConfigError, VggError
from vgg.study import (
    FAILS,
    HOLDS,
    UNSURE,
    StudyConfig,
    StudyInterrupted,
    parse_budget,
    run_study,
)
from vgg.study.plan import TABLES, StudyScale, make_scale, parse_tables, plan_study
from vgg.study.runs import run_keys
from vgg.study.verdict import better_verdict, no_gain_verdict, paired_bootstrap

TINY = StudyScale(classes=3, train_per_class=8, val_per_class=4, min_side=40, max_side=56,
                  object_size=(0.4, 0.8), clutter=1.0, width=0.0625, fc_width=32, crop=32,
                  epochs=2, finetune_epochs=2, init_epochs=2, batch=8, lr=0.05, patience=1,
                  init_archs=("B",), archs=("A", "B"))


def study(out: Path, **kw: Any) -> Any:
    cfg = dict(out=out, scale=TINY, only=("table3",), workers=0, progress=False,
               device="cpu")
    cfg.update(kw)
    return run_study(StudyConfig(**cfg))  # type: ignore[arg-type]


# ------------------------------------------------------------------------- planner

def test_plan_has_every_table_and_parents_first() -> None:
    sc = make_scale(quick=False, device=torch.device("cpu"))
    plan = plan_study(sc, TABLES, seeds=1)
    names = [r.name for r in plan.runs]
    assert len(names) == len(set(names))
    for r in plan.runs:  # a parent is trained before its child
        if r.parent is not None:
            assert names.index(r.parent) < names.index(r.name)
    s, big, top = sc.s, sc.s_large, sc.s_max
    assert (s, big, top) == (37, 55, 73)  # 256, 384, 512 scaled by 32 / 224
    # Table 3: six nets at fixed S, and the S=384 -> jittered chain for C, D, E
    for a in ("A", "A-LRN", "B", "C", "D", "E"):
        assert plan.run(f"{a} S={s}").scale == (s, s)
    jd = plan.run(f"D S=[{s};{top}]")
    assert jd.parent == f"D S={big}" and jd.mode == "finetune" and jd.scale == (s, top)
    assert plan.run(f"D S={big}").parent == f"D S={s}"
    assert plan.run(f"D S={big}").lr == pytest.approx(sc.lr / 10)
    # init study: no batch norm; N(0, 0.01), pre-initialised from A, Glorot
    pre = plan.run(f"E-noBN S={s} from A")
    assert pre.mode == "init_from" and pre.parent == f"A-noBN S={s} N(0,0.01)"
    assert not pre.batch_norm and plan.run(f"E-noBN S={s} Glorot").init == "glorot"
    assert plan.run(f"E-noBN S={s} N(0,0.01)").init == "gaussian"
    # evaluations: Table 4 at {Smin, mid, Smax}; Table 5 dense + multi-crop there too
    evs = {(e.run, e.method, e.scales) for e in plan.evals}
    assert (f"D S=[{s};{top}]", "dense", (s, big)) not in evs
    assert (f"D S=[{s};{top}]", "dense", (big,)) in evs  # single scale: the middle
    assert (f"D S=[{s};{top}]", "dense", (s, big, top)) in evs
    assert (f"E S=[{s};{top}]", "both", (s, big, top)) in evs
    assert (f"D S={big}", "dense", (big - 5, big, big + 5)) in evs  # {S-32, S, S+32}


def test_plan_subsets_seeds_and_keys() -> None:
    sc = make_scale(quick=True, device=torch.device("cpu"))
    only_init = plan_study(sc, ("init",), seeds=1)
    assert {r.arch for r in only_init.runs} == {"A", "E"}
    assert all(not r.batch_norm for r in only_init.runs)
    t5 = plan_study(sc, ("table5",), seeds=1)  # prerequisites come along, unreported
    assert [r.name for r in t5.runs if not r.tables] == ["D S=37", "D S=55", "E S=37",
                                                         "E S=55"]
    two = plan_study(sc, ("table5",), seeds=2)
    assert len(two.runs) == 2 * len(t5.runs)
    assert {r.seed for r in two.runs} == {0, 1}
    keys = run_keys(t5, "data-1")
    assert len(set(keys.values())) == len(keys)
    assert run_keys(t5, "data-1") == keys  # stable
    assert run_keys(t5, "data-2")["D S=37"] != keys["D S=37"]  # other images
    more = plan_study(dataclasses.replace(sc, epochs=sc.epochs + 1), ("table5",), 1)
    k2 = run_keys(more, "data-1")
    assert k2["D S=37"] != keys["D S=37"]
    # a child's key follows its parent's, though its own settings did not change
    assert k2["D S=[37;73]"] != keys["D S=[37;73]"]
    assert parse_tables("3,init") == ("table3", "init")
    with pytest.raises(ConfigError, match="table9"):
        parse_tables("table3,table9")
    with pytest.raises(ConfigError, match="D and E"):
        plan_study(dataclasses.replace(sc, archs=("A", "D")), ("table6",), 1)


def test_parse_budget() -> None:
    assert parse_budget("2h") == 7200
    assert parse_budget("90m") == parse_budget("90min") == 5400
    assert parse_budget("1.5h") == 5400 and parse_budget("600") == 600
    for bad in ("soon", "-1h", "10s", "2d"):
        with pytest.raises(ConfigError, match="--budget"):
            parse_budget(bad)


# ------------------------------------------------------------------------- verdicts

def test_clear_difference_holds_and_the_reverse_does_not() -> None:
    rng = np.random.default_rng(0)
    n = 400
    worse = (rng.random(n) < 0.40).astype(float)   # 40% error
    better = (rng.random(n) < 0.15).astype(float)  # 15% error
    ci = paired_bootstrap(worse, better)
    assert 0.15 < ci.mean < 0.35 and ci.low > 0.1
    assert better_verdict(ci) == HOLDS
    assert better_verdict(paired_bootstrap(better, worse)) == FAILS
    assert no_gain_verdict(ci) == FAILS  # a big significant gain: "does not help" fails


def test_noise_is_inconclusive_and_equal_nets_show_no_gain() -> None:
    rng = np.random.default_rng(1)
    n = 300
    a = (rng.random(n) < 0.3).astype(float)
    b = (rng.random(n) < 0.3).astype(float)  # the same error rate, independent noise
    ci = paired_bootstrap(a, b)
    assert ci.low < 0 < ci.high
    assert better_verdict(ci) == UNSURE
    # the same mistakes but 2 of 2000 images: the interval is tight around 0
    same = (rng.random(2000) < 0.3).astype(float)
    other = same.copy()
    other[:2] = 1 - other[:2]
    assert no_gain_verdict(paired_bootstrap(same, other)) == HOLDS
    # few images: too wide to call equivalence
    assert no_gain_verdict(paired_bootstrap(a[:20], b[:20])) == UNSURE
    # seeds: fractional per-image errors work the same way
    assert better_verdict(paired_bootstrap(np.full(50, 0.5), np.full(50, 0.0))) == HOLDS
    with pytest.raises(VggError, match="same images"):
        paired_bootstrap(a, b[:-1])


def test_two_nets_at_chance_are_inconclusive_even_when_the_interval_excludes_zero() -> None:
    from vgg.study.results import Finding, _decide, require_learnt

    rng = np.random.default_rng(2)
    n = 2000  # 10 classes, chance 90%: 84% vs 88% error, a "significant" 4 points
    worse = (rng.random(n) < 0.88).astype(float)
    better = (rng.random(n) < 0.84).astype(float)
    f = _decide(Finding("x", "table3", "claim", "paper"), worse, better)
    assert f.verdict == HOLDS and f.errors is not None
    f = require_learnt(f, classes=10)
    assert f.verdict == UNSURE and "near chance" in f.note and "90.0%" in f.note
    # one side learnt (the initialisation study's stalled net against a trained one)
    learnt = (rng.random(n) < 0.40).astype(float)
    g = require_learnt(_decide(Finding("y", "init", "claim", "paper"), worse, learnt), 10)
    assert g.verdict == HOLDS and not g.note
    # both learnt: the bootstrap decides
    h = require_learnt(_decide(Finding("z", "table3", "claim", "paper"),
                               (rng.random(n) < 0.5).astype(float), learnt), 10)
    assert h.verdict == HOLDS


# ------------------------------------------------------------------------- end to end

def test_smoke_study_end_to_end_then_reused(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "study"
    res = study(out)
    assert [r.name for r in res.plan.runs] == ["A S=37", "B S=37"]
    text = res.report.read_text()
    # the paper's numbers beside ours, in Table 3's layout
    assert "Table 3" in text and "| A | dense | 256 | 256 | 29.6 | 10.4 | 37 | 37 |" in text
    assert "| B | dense | 256 | 256 | 28.7 | 9.9 | 37 | 37 |" in text
    ids = {f.id: f for f in res.findings}
    assert set(ids) == {"lrn", "depth", "1x1", "3x3", "jitter"}
    assert ids["depth"].interval is not None and ids["depth"].interval.n_images == 12
    assert ids["depth"].verdict in (HOLDS, FAILS, UNSURE)
    assert "B beats" not in text and "B, 13 layers, beats A" in text
    assert ids["lrn"].interval is None and "not measured" in ids["lrn"].note  # no A-LRN
    assert (out / "depth.png").is_file()
    folders = sorted((out / "runs").iterdir())
    assert len(folders) == 2
    for f in folders:
        done = json.loads((f / "done.json").read_text())
        assert done["stopped"] in ("epochs", "schedule") and len(done["history"]) >= 1
        assert (f / "train" / "best.pt").is_file() and (f / "eval-dense-37.npz").is_file()
    stamp = {p: p.stat().st_mtime_ns for f in folders for p in f.rglob("*") if p.is_file()}

    import vgg.train as train_mod

    def no_training(*a: Any, **k: Any) -> Any:
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train_mod, "train", no_training)
    monkeypatch.setattr(train_mod, "resume", no_training)
    again = study(out)  # the second invocation reuses every run and evaluation
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp
    assert [(f.id, f.verdict) for f in again.findings] == [(f.id, f.verdict)
                                                           for f in res.findings]
    # --report rebuilds report.md from the finished runs alone
    res.report.unlink()
    assert main(["study", "--out", str(out), "--report", "--no-progress"]) == 0
    assert "| B | dense | 256 | 256 | 28.7" in res.report.read_text()


def test_interrupted_study_resumes_exactly(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    ref = study(tmp_path / "ref", only=("table3",))
    import vgg.train as train_mod

    real_train = train_mod.train
    calls = []

    def stop_after_first_epoch(cfg: Any, progress: bool = True, callback: Any = None) -> Any:
        calls.append(cfg.out)
        # SIGINT at the end of the first epoch of the first run: the trainer finishes
        # its step, saves last.pt mid-run and reports "interrupted"
        return real_train(cfg, progress, callback=lambda rec: signal.raise_signal(
            signal.SIGINT) if len(calls) == 1 else None)

    monkeypatch.setattr(train_mod, "train", stop_after_first_epoch)
    out = tmp_path / "cut"
    with pytest.raises(StudyInterrupted, match="run the same command again"):
        study(out)
    cut = sorted((out / "runs").iterdir())
    assert len(cut) == 1 and not (cut[0] / "done.json").exists()
    assert (cut[0] / "train" / "last.pt").is_file()
    monkeypatch.setattr(train_mod, "train", real_train)
    res = study(out)  # resumes the cut run, then trains the other
    assert [f.verdict for f in res.findings] == [f.verdict for f in ref.findings]
    for a, b in zip(sorted((tmp_path / "ref" / "runs").iterdir()),
                    sorted((out / "runs").iterdir())):
        assert a.name == b.name  # the same settings give the same key
        wa = load_checkpoint(a / "train" / "last.pt").state_dict
        wb = load_checkpoint(b / "train" / "last.pt").state_dict
        for k in wa:
            assert torch.equal(wa[k], wb[k]), k  # resume replays the same steps


def test_parallel_runs_on_two_devices_match_the_sequential_study(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--devices cpu,cpu: two worker processes train the runs (a child only after its
    parent); the same run folders come out, every run finished, and a sequential rerun
    reuses them all."""
    torch.set_num_threads(1)
    tables = ("table3", "init")
    par = study(tmp_path / "par", only=tables, devices=("cpu", "cpu"))
    seq = study(tmp_path / "seq", only=tables)
    names = sorted(p.name for p in (tmp_path / "par" / "runs").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "seq" / "runs").iterdir())
    assert len(names) == 6  # A, B; A-noBN; B-noBN from N(0,0.01), from A, Glorot
    child = next(p for p in (tmp_path / "par" / "runs").iterdir() if "from_A" in p.name)
    parent = next(p for p in (tmp_path / "par" / "runs").iterdir() if "A-noBN" in p.name)
    assert (parent / "done.json").stat().st_mtime_ns < \
        (child / "train" / "config.yaml").stat().st_mtime_ns  # parent finished first
    for p in (tmp_path / "par" / "runs").iterdir():
        assert json.loads((p / "done.json").read_text())["stopped"] in ("epochs", "schedule")
    assert [f.id for f in par.findings] == [f.id for f in seq.findings]
    assert par.report.is_file()

    import vgg.train as train_mod

    def no_training(*a: Any, **k: Any) -> Any:
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train_mod, "train", no_training)
    monkeypatch.setattr(train_mod, "resume", no_training)
    again = study(tmp_path / "par", only=tables)
    assert [f.verdict for f in again.findings] == [f.verdict for f in par.findings]


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, msg in ((["--budget", "soon"], "--budget"), (["--only", "table9"], "table9"),
                      (["--seeds", "0"], "must be >= 1")):
        with pytest.raises(SystemExit) as e:
            main(["study", "--out", str(tmp_path / "s"), *argv])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1
    assert main(["study", "--out", str(tmp_path / "none"), "--report"]) == 2
    assert "study.json not found" in capsys.readouterr().err
    assert main(["study", "--out", str(tmp_path / "s"), "--data",
                 str(tmp_path / "missing")]) == 2
    assert "no dataset folder" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["study", "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["study", "--out", str(tmp_path / "s"), "--seeds", "21"]) == 2
    assert "--seeds" in capsys.readouterr().err
    if not torch.cuda.is_available():  # a device that is not there: nothing written
        assert main(["study", "--out", str(tmp_path / "gpu"), "--devices", "cuda:0,cuda:1"]) == 2
        assert "--devices: cuda:0" in capsys.readouterr().err
        assert not (tmp_path / "gpu").exists()
    with pytest.raises(SystemExit):
        main(["study", "--out", str(tmp_path / "s"), "--devices", ","])
    assert "expected devices" in capsys.readouterr().err


def test_budget_scales_the_epochs() -> None:
    from vgg.study import _fit_budget

    cpu = torch.device("cpu")
    big = dataclasses.replace(TINY, epochs=10, finetune_epochs=10, init_epochs=10)
    fitted, note = _fit_budget(big, ("table3",), 1, 60.0, cpu)  # a tiny net: well inside
    assert fitted.epochs == 40 and "scaled by 4.00" in note  # at most 4x the plan
    heavy = dataclasses.replace(big, train_per_class=10**6)
    fitted, note = _fit_budget(heavy, ("table3",), 1, 60.0, cpu)
    assert fitted.epochs == 2 and fitted.init_epochs == 2  # never below 2 epochs a run
    assert "Budget 1 min" in note


def test_study_on_a_given_class_folder_set(tmp_path: Path) -> None:
    from vgg.data.synthetic import make_shapes_dataset

    torch.set_num_threads(1)
    data = make_shapes_dataset(tmp_path / "mine", classes=4, train_per_class=6,
                               val_per_class=3, min_side=40, max_side=48, workers=0)
    res = study(tmp_path / "s", data=data)
    assert not (tmp_path / "s" / "data").exists()  # nothing generated
    assert "(given with --data)" in res.report.read_text()
    run = next((tmp_path / "s" / "runs").iterdir())
    assert len(load_checkpoint(run / "train" / "best.pt").classes) == 4
    assert res.findings[1].interval is not None and res.findings[1].interval.n_images == 12
