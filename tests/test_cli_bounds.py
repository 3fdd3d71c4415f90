"""Every count flag has a finite upper bound, checked when the flags are parsed, before
any work (issue 24 item 15): `vgg transfer F.npz --splits 1000000000` is one line, exit 2,
not a run without end."""

from __future__ import annotations

import pytest

from vgg.cli import main


@pytest.mark.parametrize("argv,flag,bound", [
    (["transfer", "F.npz", "--splits", "1000000000"], "--splits", "1..100"),
    (["transfer", "F.npz", "--train-per-class", "10000000000"], "--train-per-class",
     "1..1,000,000"),
    (["transfer", "F.npz", "--test-per-class", "10000000000"], "--test-per-class",
     "1..1,000,000"),
    (["transfer", "F.npz", "--jobs", "100000"], "--jobs", "1..128"),
    (["transfer", "F.npz", "--seed", str(2**70)], "--seed", "0..9,223,372,036,854,775,807"),
    (["features", "m.pt", "--data", "d", "--out", "o.npz", "--batch", "10000000"], "--batch",
     "1..65,536"),
    (["evaluate", "m.pt", "--data", "d", "--batch", "10000000"], "--batch", "1..65,536"),
    (["predict", "m.pt", "x.jpg", "--top", "100000000"], "--top", "1..10,000"),
    (["localize", "predict", "m.pt", "x.jpg", "--classifier", "c.pt", "--top", "100000000"],
     "--top", "1..10,000"),
    (["data", "synth", "out", "--train-per-class", "100000000000"], "--train-per-class",
     "0..1,000,000"),
    (["data", "synth", "out", "--max-side", "1000000"], "--max-side", "at most 8192"),
    (["data", "stats", "d", "--out", "s.json", "--limit", "10000000000"], "--limit",
     "1..1,000,000,000"),
    (["models", "--num-classes", "1000000000"], "--num-classes", "1..1,000,000"),
    (["models", "--arch", "A", "--input-size", "1000000"], "--input-size", "at most 8192"),
    (["models", "--fc-width", "10000000"], "--fc-width", "1..65,536"),
    (["models", "--width", "1000"], "--width", "at most 16"),
    (["export", "m.pt", "--onnx", "m.onnx", "--opset", "100000"], "--opset", "1..100"),
    (["study", "--seeds", "1000000"], "--seeds", "1..20"),
    (["demo", "--seed", str(2**64)], "--seed", "0..9,223,372,036,854,775,807"),
])
def test_count_flags_have_an_upper_bound(capsys: pytest.CaptureFixture, argv: list[str],
                                         flag: str, bound: str, tmp_path, monkeypatch
                                         ) -> None:
    monkeypatch.chdir(tmp_path)  # on main some of these ran, writing where they stood
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"argument {flag}" in err and bound in err, err
