"""`vgg study`: the planner (and `--plan`), verdicts on constructed numbers (seeds and images
in the interval), a smoke-sized study end to end (two tiny nets, Table 3), reuse of
finished runs, exact resume of an interrupted run, the report rebuilt from finished runs,
one study per --out (a lock), and one-line errors for bad flags."""

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
from vgg.study.plan import TABLES, StudyScale, make_scale, parse_tables, plan_study, seeded
from vgg.study.runs import run_keys
from vgg.study.verdict import better_verdict, no_gain_verdict, paired_bootstrap

TINY = StudyScale(classes=3, train_per_class=8, val_per_class=4, min_side=40, max_side=56,
                  object_size=(0.4, 0.8), clutter=1.0, width=0.0625, fc_width=32, crop=32,
                  epochs=2, finetune_epochs=2, init_epochs=2, batch=8, lr=0.05, patience=1,
                  init_archs=("B",), archs=("A", "B"))


def study(out: Path, **kw: Any) -> Any:
    cfg = dict(out=out, scale=TINY, only=("table3",), workers=0, progress=False,
               device="cpu", seeds=1)
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
    # Table 3: the nets with batch norm at fixed S; S=384 and jittered fine-tuned from S
    for a in sc.archs:
        assert plan.run(f"{a} S={s}").scale == (s, s) and plan.run(f"{a} S={s}").batch_norm
    jd = plan.run(f"D S=[{s};{top}]")
    assert jd.parent == f"D S={s}" and jd.mode == "finetune" and jd.scale == (s, top)
    assert plan.run(f"D S={big}").parent == f"D S={s}"
    assert plan.run(f"D S={big}").lr == pytest.approx(sc.lr / 10)
    # init study: no batch norm; the paper's N(0, 0.01) scaled per layer (SPEC 6b),
    # pre-initialised from the LRN pair's A (Glorot, which leaves chance), Glorot
    a_net = f"A-noBN S={s} Glorot"
    pre = plan.run(f"E-noBN S={s} from A")
    assert pre.mode == "init_from" and pre.parent == a_net
    assert pre.init == "gaussian-scaled"  # the layers not copied from A
    assert not pre.batch_norm and plan.run(f"E-noBN S={s} Glorot").init == "glorot"
    assert plan.run(f"E-noBN S={s} N(0,0.01)-scaled").init == "gaussian-scaled"
    assert plan.run(a_net).init == "glorot" and plan.run(a_net).lr == 0.01
    assert plan.run(f"A-LRN-noBN S={s} Glorot").init == "glorot"
    # evaluations: Table 4 at {Smin, mid, Smax}; Table 5 dense + multi-crop there too
    evs = {(e.run, e.method, e.scales) for e in plan.evals}
    assert (f"D S=[{s};{top}]", "dense", (s, big)) not in evs
    assert (f"D S=[{s};{top}]", "dense", (big,)) in evs  # single scale: the middle
    assert (f"D S=[{s};{top}]", "dense", (s, big, top)) in evs
    assert (f"E S=[{s};{top}]", "both", (s, big, top)) in evs
    assert (f"D S={big}", "dense", (big - 5, big, big + 5)) in evs  # {S-32, S, S+32}


def test_plan_lrn_without_batch_norm_and_jitter_at_equal_passes() -> None:
    """The paper's comparisons: A vs A-LRN without batch norm (Table 3's nets have none);
    the jittered nets against both fixed-S nets after the same number of image passes."""
    from vgg.study.results import finding_specs

    sc = make_scale(quick=False, device=torch.device("cpu"))
    plan = plan_study(sc, TABLES, seeds=3)
    specs = {f.id: f for f in finding_specs(plan)}
    lrn = specs["lrn"]
    assert lrn.no_gain and not lrn.label
    runs = [plan.run(seeded(b, k)) for side in (lrn.a, lrn.b) for b in side.runs
            for k in range(3)]
    assert {r.arch for r in runs} == {"A", "A-LRN"}
    assert not any(r.batch_norm for r in runs)
    assert {r.init for r in runs} == {sc.lrn_init} and {r.seed for r in runs} == {0, 1, 2}
    if "lrn-bn" in specs:  # the pair with batch norm, if any, says it is not the paper's
        assert "not the paper's comparison" in specs["lrn-bn"].label
    # jittering: three arms per net, each epochs + finetune_epochs from scratch
    budget = sc.epochs + sc.finetune_epochs
    for ref in ("256", "384"):
        f = specs[f"jitter-{ref}"]
        assert [plan.run(b).scale for b in f.b.runs] == [(sc.s, sc.s_max)] * len(f.b.runs)
        want = (sc.s, sc.s) if ref == "256" else (sc.s_large, sc.s_large)
        assert [plan.run(b).scale for b in f.a.runs] == [want] * len(f.a.runs)
        assert [r.arch for r in map(plan.run, f.a.runs)] == \
            [r.arch for r in map(plan.run, f.b.runs)] == list(sc.chain_archs)
        for name in f.a.runs + f.b.runs:
            chain = plan.chain(name)
            assert plan.total_epochs(name) == budget
            assert [r.epochs for r in chain] == [sc.epochs, sc.finetune_epochs]
            assert [r.lr for r in chain] == [sc.lr, sc.lr / 10]
            assert chain[0].name == f"{chain[0].arch} S={sc.s}"  # one shared parent
    assert [r.scale for r in plan.chain(f"D S={sc.s} +ft")] == [(sc.s, sc.s)] * 2
    assert [r.scale for r in plan.chain(f"D S={sc.s_large}")] == \
        [(sc.s, sc.s), (sc.s_large, sc.s_large)]
    # image passes as stated: each arm's chain trains the same number of images
    passes = {plan.total_epochs(n) * sc.classes * sc.train_per_class
              for f in (specs["jitter-256"], specs["jitter-384"])
              for n in f.a.runs + f.b.runs}
    assert passes == {budget * sc.classes * sc.train_per_class}


def test_plan_subsets_seeds_and_keys() -> None:
    sc = make_scale(quick=True, device=torch.device("cpu"))
    only_init = plan_study(sc, ("init",), seeds=1)
    assert {r.arch for r in only_init.runs} == {"A", "E"}
    assert all(not r.batch_norm for r in only_init.runs)
    t5 = plan_study(sc, ("table5",), seeds=1)  # prerequisites come along, unreported
    assert [r.name for r in t5.runs if not r.tables] == ["D S=37", "E S=37"]
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


def _seed_errors(rng: np.random.Generator, rates: list[float], n: int) -> np.ndarray:
    """(seeds, n) 0/1 per-image errors, seed k wrong on a fraction rates[k] of the images."""
    return np.stack([(rng.random(n) < r).astype(float) for r in rates])


def _spec(no_gain: bool = False) -> Any:
    from vgg.study.results import FindingSpec, Side

    return FindingSpec("x", "table3", "claim", "paper", "compared", Side("a", ("a",)),
                       Side("b", ("b",)), no_gain=no_gain)


def test_seed_noise_crossing_zero_is_inconclusive_despite_a_large_image_effect() -> None:
    """3 seeds: two show a big gain, one the reverse. Averaging each image over the seeds
    first (the old verdict) sees 600 images and a clear +12 points; resampling the seeds
    too, the interval reaches the reverse seed and crosses 0."""
    from vgg.study.results import decide

    rng = np.random.default_rng(3)
    worse = _seed_errors(rng, [0.45, 0.20, 0.45], 600)
    better = _seed_errors(rng, [0.15, 0.35, 0.15], 600)
    old = paired_bootstrap(worse.mean(0), better.mean(0))  # images only
    assert old.low > 0.05 and better_verdict(old) == HOLDS
    ci = paired_bootstrap(worse, better)
    assert ci.n_seeds == 3 and ci.n_images == 600
    assert ci.low < 0 < ci.high and better_verdict(ci) == UNSURE
    assert ci.mean == pytest.approx(old.mean)
    f = decide(_spec(), worse, better)
    assert f.verdict == UNSURE
    assert [round(100 * d) for d in f.seed_diffs] == \
        [round(100 * (a - b)) for a, b in zip(worse.mean(1), better.mean(1))]
    text = f.seeds_text()  # per-seed errors and their spread beside the verdict
    assert text.startswith("per seed: a ") and " ± " in text and "difference +" in text


def test_a_consistent_effect_over_three_seeds_holds() -> None:
    from vgg.study.results import decide

    rng = np.random.default_rng(4)
    worse = _seed_errors(rng, [0.40, 0.36, 0.42], 600)
    better = _seed_errors(rng, [0.25, 0.22, 0.30], 600)
    f = decide(_spec(), worse, better)
    assert f.verdict == HOLDS and f.interval is not None and f.interval.low > 0.05
    assert decide(_spec(), better, worse).verdict == FAILS
    assert decide(_spec(no_gain=True), worse, better).verdict == FAILS  # a real gain
    # "does not help": three seeds of the same net within a point of each other
    same = _seed_errors(rng, [0.3, 0.3, 0.3], 2000)
    other = same.copy()
    other[:, :10] = 1 - other[:, :10]
    assert decide(_spec(no_gain=True), same, other).verdict == HOLDS
    # the same consistent effect from two seeds, or one: inconclusive, and it says why
    for k in (1, 2):
        g = decide(_spec(), worse[:k], better[:k])
        assert g.interval is not None and g.interval.low > 0  # the interval alone would hold
        assert g.verdict == UNSURE and f"{k} seed(s)" in g.note and "at least 3" in g.note


def test_two_nets_at_chance_are_inconclusive_even_when_the_interval_excludes_zero() -> None:
    from vgg.study.results import decide, require_learnt

    rng = np.random.default_rng(2)
    n = 2000  # 10 classes, chance 90%: 84% vs 88% error, a "significant" 4 points
    worse = _seed_errors(rng, [0.88] * 3, n)
    better = _seed_errors(rng, [0.84] * 3, n)
    f = decide(_spec(), worse, better)
    assert f.verdict == HOLDS and f.errors is not None
    f = require_learnt(f, classes=10)
    assert f.verdict == UNSURE and "near chance" in f.note and "90.0%" in f.note
    # one side learnt (the initialisation study's stalled net against a trained one)
    learnt = _seed_errors(rng, [0.40] * 3, n)
    g = require_learnt(decide(_spec(), worse, learnt), 10)
    assert g.verdict == HOLDS and not g.note
    # both learnt: the bootstrap decides
    h = require_learnt(decide(_spec(), _seed_errors(rng, [0.5] * 3, n), learnt), 10)
    assert h.verdict == HOLDS


# ------------------------------------------------------------------------- end to end

def test_smoke_study_end_to_end_then_reused(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "study"
    res = study(out)
    lrn = ["A-noBN S=37 Glorot", "A-LRN-noBN S=37 Glorot"]
    assert [r.name for r in res.plan.runs] == lrn + ["A S=37", "B S=37"]
    text = res.report.read_text()
    # the paper's numbers beside ours, in Table 3's layout (with each net's epochs)
    assert "Table 3" in text and "| A | dense | 256 | 256 | 29.6 | 10.4 | 37 | 2 | 37 |" in text
    assert "| A-BN | dense | 256 | 256 | 29.6 | 10.4 | 37 | 2 | 37 |" in text
    assert "| B-BN | dense | 256 | 256 | 28.7 | 9.9 | 37 | 2 | 37 |" in text
    ids = {f.id: f for f in res.findings}
    assert set(ids) == {"lrn", "depth"}  # the study has no A-LRN with BN, no C, D, E
    assert ids["depth"].interval is not None and ids["depth"].interval.n_images == 12
    # one seed: every verdict is inconclusive, and the report says why
    assert ids["depth"].verdict == UNSURE and "1 seed(s)" in ids["depth"].note
    assert "B, 13 layers, beats A" in text and "a verdict needs at least 3" in text
    assert ids["lrn"].interval is not None and ids["lrn"].spec.a.runs == (lrn[0],)
    assert "output stride" in text  # which dense geometry the evaluations used
    assert (out / "depth.png").is_file()
    folders = sorted((out / "runs").iterdir())
    assert len(folders) == 4
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
    assert "| B-BN | dense | 256 | 256 | 28.7" in res.report.read_text()


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
    assert len(names) == 7  # A, B; A-noBN, A-LRN-noBN; B-noBN from N(0,0.01), from A, Glorot
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
                      (["--seeds", "0"], "must be in 1..20"),
                      (["--seeds", "21"], "must be in 1..20")):
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
    res = study(tmp_path / "s", data=data, seeds=2)
    assert not (tmp_path / "s" / "data").exists()  # nothing generated
    text = res.report.read_text()
    assert "(given with --data)" in text
    run = next((tmp_path / "s" / "runs").iterdir())
    assert len(load_checkpoint(run / "train" / "best.pt").classes) == 4
    depth = res.findings[1]
    assert depth.interval is not None and depth.interval.n_images == 12
    assert depth.interval.n_seeds == 2 and len(depth.seeds_a) == len(depth.seeds_b) == 2
    assert depth.verdict == UNSURE and "2 seed(s)" in depth.note
    assert depth.seeds_text() in text  # per-seed errors beside the verdict
    assert " ± " in text  # mean ± sd over the seeds in the tables


def test_plan_prints_every_run_and_finding_and_trains_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "planned"
    assert main(["study", "--out", str(out), "--plan", "--json", "--device", "cpu"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert not out.exists()  # nothing trained, nothing written
    assert plan["seeds"] == 3 and set(plan) >= {"runs", "findings"}
    runs = {r["name"]: r for r in plan["runs"]}
    assert len(runs) == len(plan["runs"])
    for r in plan["runs"]:
        assert {"name", "arch", "batch_norm", "init", "seed", "scale", "epochs",
                "image_passes"} <= set(r)
        assert r["image_passes"] == r["epochs"] * plan["images_per_pass"]
    assert plan["images_per_pass"] == 10 * 600
    found = {f["name"]: f for f in plan["findings"]}
    assert {"lrn", "depth", "1x1", "3x3", "jitter-256", "jitter-384", "multiscale",
            "complementary", "fusion", "init-A-E", "init-glorot-E"} <= set(found)
    for f in plan["findings"]:  # every side names planned runs, over the 3 seeds
        for side in ("a", "b"):
            names = f["sides"][side]
            assert names and all(n in runs for n in names)
            assert sorted({runs[n]["seed"] for n in names}) == [0, 1, 2]
    assert not any(runs[n]["batch_norm"] for s in ("a", "b")
                   for n in found["lrn"]["sides"][s])
    j, fixed = found["jitter-256"]["sides"]["b"], found["jitter-256"]["sides"]["a"]
    assert {runs[n]["total_image_passes"] for n in j + fixed} == {
        (runs[j[0]]["total_epochs"]) * plan["images_per_pass"]}
    # the text form: one line per run, the findings with their sides
    assert main(["study", "--out", str(out), "--plan", "--quick", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("vgg study plan:") and "2 seed(s)" in text
    assert "A-LRN-noBN S=37 Glorot seed1" in text
    assert "jitter-384:" in text and "    a (S=55;" in text
    assert not out.exists()
    assert main(["study", "--out", str(out), "--json"]) == 2
    assert "--json goes with --plan" in capsys.readouterr().err and not out.exists()


def test_a_second_study_on_the_same_out_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """One study per --out: the study process holds OUT/.lock while it trains (itself, or
    through --devices workers), so a second `vgg study` on that folder, with or without
    --devices, stops with one line and exit 2 before touching anything."""
    torch.set_num_threads(1)
    out = tmp_path / "s"
    import vgg.study.parallel as parallel_mod
    import vgg.train as train_mod

    second: list[tuple[int, str]] = []
    nested = [False]

    def must_not_run(*a: Any, **k: Any) -> Any:
        raise AssertionError("a second study on the same --out started training")

    def try_another(argv: list[str]) -> None:
        nested[0] = True
        try:
            code = main(["study", "--out", str(out), "--no-progress", "--device", "cpu",
                         "--seeds", "1", *argv])
        finally:
            nested[0] = False
        second.append((code, capsys.readouterr().err))

    real_train = train_mod.train
    real_parallel = parallel_mod.train_parallel

    def train_and_try(cfg: Any, *a: Any, **k: Any) -> Any:
        if nested[0]:
            must_not_run()
        if not second:  # while the first study trains its first run
            try_another(["--devices", "cpu,cpu"])
            try_another([])
        return real_train(cfg, *a, **k)

    def parallel_guard(*a: Any, **k: Any) -> Any:
        return must_not_run() if nested[0] else real_parallel(*a, **k)

    monkeypatch.setattr(train_mod, "train", train_and_try)
    monkeypatch.setattr(parallel_mod, "train_parallel", parallel_guard)
    res = study(out)
    assert len(second) == 2
    for code, err in second:
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert "in use by another vgg study" in err and "pid" in err
    assert res.report.is_file() and not (out / ".lock").exists()  # released at the end

    # with --devices the parent holds the lock across its worker processes
    seen: list[tuple[int, str]] = []

    def parallel_and_try(*a: Any, **k: Any) -> None:
        code = main(["study", "--out", str(tmp_path / "p"), "--no-progress", "--device",
                     "cpu", "--seeds", "1"])
        seen.append((code, capsys.readouterr().err))

    monkeypatch.setattr(parallel_mod, "train_parallel", parallel_and_try)
    monkeypatch.setattr(train_mod, "train", real_train)
    study(tmp_path / "p", devices=("cpu", "cpu"))
    assert seen and seen[0][0] == 2 and "in use by another vgg study" in seen[0][1]


def test_a_plan_saved_before_lrn_init_keeps_its_lrn_pair() -> None:
    """A study.json written before ``lrn_init`` existed started its LRN pair from the
    paper's init: read back, its run names (and so its finished runs) are unchanged."""
    d = make_scale(quick=True, device=torch.device("cpu")).to_dict()
    assert d.pop("lrn_init") == "glorot"
    old = StudyScale.from_dict(d)
    assert old.lrn_init == old.paper_init == "gaussian-scaled"
    names = {r.name for r in plan_study(old, ("table3",), 1).runs}
    assert "A-noBN S=37 N(0,0.01)-scaled" in names and "A-noBN S=37 Glorot" not in names
    with pytest.raises(ConfigError, match="lrn_init"):
        StudyScale.from_dict({**d, "lrn_init": "zeros"})
