"""`vgg models` and `vgg export` through vgg.cli.main."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vgg.checkpoint import save_checkpoint
from vgg.cli import main
from vgg.model import build
from vgg.weights import load_safetensors

SMALL = dict(width=1 / 16, fc_width=32, crop=64, num_classes=5)


def test_models_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for arch, exact, macs in (("A", "132,863,336", "7.61G"), ("B", "133,047,848", "11.31G"),
                              ("C", "133,638,952", "11.77G"), ("D", "138,357,544", "15.47G"),
                              ("E", "143,667,240", "19.63G"), ("B-5x5", "134,503,528", "")):
        line = next(ln for ln in out.splitlines() if ln.split()[:1] == [arch])
        assert exact in line and macs in line
    d = next(ln for ln in out.splitlines() if ln.startswith("D "))
    assert d.split()[1:5] == ["16", "138,357,544", "138", "138"]
    assert "A-LRN" in out and "@224" in out


def test_models_table_at_other_crop_with_bn(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--crop", "384", "--bn"]) == 0
    out = capsys.readouterr().out
    assert "D-BN" in out and "@384" in out
    d = next(ln for ln in out.splitlines() if ln.startswith("D "))
    assert d.split()[4] == "-"  # not Table 2's setting: no paper count shown


def test_models_arch_layers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--arch", "vgg16", "--width", "0.25", "--crop", "64",
                 "--fc-width", "64", "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("D: width 0.25")
    for name in ("conv1_1", "relu3_3", "pool5", "conv5_3", "fc6", "fc8", "total"):
        assert any(ln.startswith(name) for ln in out.splitlines()), name
    net = build("D", width=0.25, fc_width=64, crop=64, num_classes=10)
    total = next(ln for ln in out.splitlines() if ln.startswith("total"))
    assert f"{sum(p.numel() for p in net.parameters()):,}" in total
    assert main(["models", "--arch", "E", "--bn", "--input-size", "384"]) == 0
    out = capsys.readouterr().out
    assert "E-BN" in out and "512x12x12" in out and "1000x6x6" in out and "bn5_4" in out


@pytest.mark.parametrize("argv,message", [
    (["models", "--arch", "vgg17"], "unknown architecture"),
    (["models", "--input-size", "300"], "--input-size needs --arch"),
    (["models", "--arch", "A", "--crop", "256", "--input-size", "224"], "smaller than"),
])
def test_models_errors(argv: list[str], message: str,
                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_models_bad_flag_values(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["models", "--crop", "100"])
    assert e.value.code == 2
    assert "multiple of 32" in capsys.readouterr().err


@pytest.fixture
def checkpoint(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    m = build("B", init="kaiming", classes=list("vwxyz"), **SMALL).eval()
    return save_checkpoint(tmp_path / "run" / "best.pt", m), m


def test_export_safetensors_and_onnx(checkpoint: tuple[Path, torch.nn.Module], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    import onnxruntime as ort

    path, m = checkpoint
    st, fc, dense = tmp_path / "m.safetensors", tmp_path / "fc.onnx", tmp_path / "dense.onnx"
    assert main(["export", str(path), "--safetensors", str(st), "--onnx", str(fc)]) == 0
    assert main(["export", str(path), "--onnx", str(dense), "--fully-conv"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {st}" in out and "fully-convolutional" in out
    assert load_safetensors(st).classes == list("vwxyz")
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref_fc = m(x[..., :64]).numpy()
        ref_dense = m.to_fully_conv().eval()(x).numpy()
    got_fc = ort.InferenceSession(str(fc)).run(None, {"images": x[..., :64].numpy()})[0]
    sess = ort.InferenceSession(str(dense))
    got_dense = sess.run(None, {"images": x.numpy()})[0]
    np.testing.assert_allclose(got_fc, ref_fc, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(got_dense, ref_dense, atol=1e-4, rtol=1e-4)
    assert got_dense.shape == (1, 5, 1, 2)
    assert json.loads(sess.get_modelmeta().custom_metadata_map["classes"]) == list("vwxyz")


def test_export_errors(checkpoint: tuple[Path, torch.nn.Module], tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = checkpoint
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(path.read_bytes()[:1000])
    cases = [
        (["export", str(tmp_path / "nope.pt"), "--onnx", str(tmp_path / "a.onnx")], "not found"),
        (["export", str(corrupt), "--safetensors", str(tmp_path / "a.st")], "corrupt.pt"),
        (["export", str(path)], "nothing to do"),
        (["export", str(path), "--safetensors", str(tmp_path / "a.st"), "--fully-conv"],
         "--fully-conv applies to --onnx only"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "a.onnx").exists() and not (tmp_path / "a.st").exists()


def test_export_onnx_without_onnx_installed(checkpoint: tuple[Path, torch.nn.Module],
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`pip install -e .` has no onnx (it is the `export` extra): say how to get it."""
    import sys

    path, _ = checkpoint
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ImportError
    assert main(["export", str(path), "--onnx", str(tmp_path / "a.onnx")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'vgg[export]'" in err and "Traceback" not in err
    assert not (tmp_path / "a.onnx").exists()
