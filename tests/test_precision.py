"""Inference precision (vgg.precision): resolution and hardware detection, the cached
low-precision copy, and fp32 vs bf16 through predict, evaluate, features, localisation and
the CLI. The CUDA path (autocast over the fp32 weights) is covered as far as a CPU allows:
its plan is checked on a mocked CUDA device, and the same code path runs end to end with
CPU autocast."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import vgg
from vgg import precision as P
from vgg.cli import main
from vgg.data.folders import index_split
from vgg.errors import ConfigError
from vgg.report import loc_table, paper_table
from vgg.eval import evaluate, fuse_results
from vgg.eval.results import result_from_posteriors
from vgg.eval.fusion import Posteriors

from _eval_util import CLASSES, make_images, save_net, tiny_net


@pytest.fixture
def native(monkeypatch: pytest.MonkeyPatch):
    """Pretend the CPU does (True) or does not (False) have native bf16."""
    def set_(flag: bool) -> None:
        monkeypatch.setattr(P, "cpu_native_bf16", lambda: flag)
        monkeypatch.setattr(P, "_warned", set())
    return set_


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_images(tmp_path_factory.mktemp("prec") / "val")


# ---------------------------------------------------------------------------- resolution

def test_auto_follows_the_hardware(native) -> None:
    native(True)
    assert P.resolve_precision("auto", "cpu").name == "bf16"
    assert P.resolve_precision("AUTO", torch.device("cpu")).mode == "cast"
    native(False)
    assert P.resolve_precision("auto", "cpu").name == "fp32"
    assert P.resolve_precision(None, "cpu").name == "fp32"
    p = P.resolve_precision("fp32", "cpu")
    assert p.mode == "fp32" and p.dtype == torch.float32
    assert P.resolve_precision(p, "cpu") is p


def test_explicit_bf16_without_native_support_warns_once(native, caplog) -> None:
    native(False)
    with caplog.at_level(logging.WARNING, logger="vgg.precision"):
        assert P.resolve_precision("bf16", "cpu").name == "bf16"
        P.resolve_precision("bf16", "cpu")
    warned = [r for r in caplog.records if "no native bf16" in r.getMessage()]
    assert len(warned) == 1 and "slower than fp32" in warned[0].getMessage()
    native(True)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vgg.precision"):
        P.resolve_precision("bf16", "cpu")
    assert not caplog.records


def test_bad_names_and_cpu_fp16_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ("fp8", "float32", 16, ""):
        with pytest.raises(ConfigError, match="--precision must be one of"):
            P.resolve_precision(bad, "cpu")  # type: ignore[arg-type]
    monkeypatch.setattr(P, "cpu_native_fp16", lambda: False)
    with pytest.raises(ConfigError, match="fp16 needs a CUDA"):
        P.resolve_precision("fp16", "cpu")
    monkeypatch.setattr(P, "cpu_native_fp16", lambda: True)
    assert P.resolve_precision("fp16", "cpu").dtype == torch.float16


def test_cpu_flags_decide_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without torch's own probes the /proc/cpuinfo flags decide: AVX-512 alone is not
    native bf16 (oneDNN emulates it), avx512_bf16 / amx_bf16 are."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    for flags, want in ((["avx512f", "avx512bw", "avx512vl"], False),
                        (["avx512f", "avx512_bf16"], True), (["amx_bf16", "amx_tile"], True),
                        (["fp", "asimd", "bf16"], True), (["fp", "asimd"], False)):
        monkeypatch.setattr(P, "_cpu_flags", lambda f=flags: frozenset(f))
        assert P.cpu_native_bf16() is want, flags


def test_cuda_plan_is_autocast_over_the_fp32_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA the net is not copied: autocast(cuda, dtype) runs it (checked on a mocked
    device: no GPU here)."""
    monkeypatch.setattr(P, "native_bf16", lambda dev: dev.type == "cuda")
    dev = torch.device("cuda", 0)
    m = tiny_net()
    for name, dtype in (("auto", torch.bfloat16), ("bf16", torch.bfloat16),
                        ("fp16", torch.float16)):
        p = P.resolve_precision(name, dev)
        assert p.mode == "autocast" and p.dtype == dtype and p.net(m) is m
        with pytest.warns(UserWarning) if not torch.cuda.is_available() else _nothing():
            ctx = p.autocast()
        assert isinstance(ctx, torch.autocast) and ctx.device == "cuda"
        assert ctx.fast_dtype == dtype
    assert P.resolve_precision("fp32", dev).mode == "fp32"


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None


# ---------------------------------------------------------------------------- the copy

def test_cast_copy_is_cached_follows_the_weights_and_leaves_the_model_alone() -> None:
    m = tiny_net()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    c = P.cast_copy(m, torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in c.parameters())
    conv = c.features[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert P.cast_copy(m, torch.bfloat16) is c  # cached
    assert all(torch.equal(v, m.state_dict()[k]) and m.state_dict()[k].dtype == v.dtype
               for k, v in before.items())
    assert not {p.data_ptr() for p in c.parameters()} & {p.data_ptr() for p in m.parameters()}
    with torch.no_grad():  # an optimiser step changes the weights in place
        m.features[0].weight.add_(1.0)
    c2 = P.cast_copy(m, torch.bfloat16)
    assert c2 is not c
    torch.testing.assert_close(c2.features[0].weight.float(), m.features[0].weight,
                               rtol=1e-2, atol=1e-2)
    m.load_state_dict(before)
    c3 = P.cast_copy(m, torch.bfloat16)
    assert c3 is not c2
    torch.testing.assert_close(c3.features[0].weight.float(), before["features.0.weight"],
                               rtol=1e-2, atol=1e-2)
    assert P.cast_copy(m, torch.float16).features[0].weight.dtype == torch.float16


def test_predict_in_bf16_is_close_and_returns_fp32_posteriors() -> None:
    m = tiny_net()
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    p32 = m.predict(x)
    p16 = m.predict(x, precision="bf16")
    assert p16.dtype == torch.float32 and p16.shape == p32.shape
    torch.testing.assert_close(p16.sum(1), torch.ones(4))
    diff = (p16 - p32).abs().max().item()
    assert 0 < diff < 0.02  # bf16 did run (not the fp32 net) and stays close
    assert torch.equal(m.predict(x, precision="fp32"), p32)
    assert m.training is False and next(m.parameters()).dtype == torch.float32
    with pytest.raises(ConfigError, match="--precision"):
        m.predict(x, precision="half")


# ---------------------------------------------------------------------------- evaluators

def test_evaluate_records_precision_and_stays_close(data: Path) -> None:
    index = index_split(data.parent, "val")
    net = tiny_net()
    kw = dict(method="both", scales=[32, 40], workers=0, progress=False)
    r32 = evaluate(net, index, **kw)
    r16 = evaluate(net, index, precision="bf16", **kw)
    assert r32.precision == "fp32" and r16.precision == "bf16"
    assert r16.posteriors.dtype == np.float32
    diff = np.abs(r16.posteriors - r32.posteriors).max()
    assert 0 < diff < 0.02
    assert r16.table_row()["precision"] == "bf16"
    assert r16.select(method="dense").precision == "bf16"
    assert "bf16" in paper_table([r32, r16]).splitlines()[3]
    assert r16.to_json()["precision"] == "bf16"
    # saved posteriors carry it; a fusion of the two says both; old files were fp32
    back = result_from_posteriors(r16.to_posteriors())
    assert back.precision == "bf16"
    assert fuse_results([r32, r16]).precision == "fp32 & bf16"
    old = r32.to_posteriors()
    old.meta.pop("precision")
    assert result_from_posteriors(Posteriors(old.image_ids, old.classes, old.labels,
                                             old.posteriors, old.meta)).precision == "fp32"


def test_cpu_autocast_runs_the_cuda_code_path(data: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The autocast branch (used on CUDA) run end to end with CPU autocast: the fp32 net
    under autocast gives bf16-close posteriors."""
    index = index_split(data.parent, "val")
    net = tiny_net()
    monkeypatch.setattr(P.Precision, "mode", property(
        lambda self: "fp32" if self.name == "fp32" else "autocast"))
    r = evaluate(net, index, method="dense", scales=[32], workers=0, progress=False,
                 precision="bf16")
    ref = evaluate(net, index, method="dense", scales=[32], workers=0, progress=False)
    assert r.precision == "bf16" and next(net.parameters()).dtype == torch.float32
    assert 0 < np.abs(r.posteriors - ref.posteriors).max() < 0.02


def test_features_in_bf16_are_close_and_part_of_the_resume_key(data: Path,
                                                              tmp_path: Path) -> None:
    from vgg.transfer.features import extract_features

    index = index_split(data.parent, "val")
    net = tiny_net()
    kw = dict(scales=[32, 40], combine="stack", workers=0, progress=False)
    f32 = extract_features(net, index, precision="fp32", **kw)
    f16 = extract_features(net, index, precision="bf16", out=tmp_path / "f.npz", **kw)
    assert f32.meta["precision"] == "fp32" and f16.meta["precision"] == "bf16"
    assert f16.X.dtype == np.float32
    cos = (f32.X * f16.X).sum(1)  # rows are L2-normalised
    assert cos.min() > 0.999 and not np.array_equal(f32.X, f16.X)


def test_localisation_records_precision(tmp_path: Path) -> None:
    from test_localize import CLASSES as LOC_CLASSES, make_boxes_dataset, tiny_cls, tiny_loc
    from vgg.localize.data import box_index
    from vgg.localize.evaluate import full_protocol, simple_protocol
    from vgg.localize.result import load_saved

    root = make_boxes_dataset(tmp_path / "boxes", n=2)
    index, _ = box_index(root, "val", LOC_CLASSES)
    kw = dict(workers=0, progress=False)
    s16 = simple_protocol(tiny_loc("scr"), index, 32, precision="bf16", **kw)
    s32 = simple_protocol(tiny_loc("scr"), index, 32, **kw)
    assert s16.precision == "bf16" and s32.precision == "fp32"
    np.testing.assert_allclose([g[0][2] for g in s16.guesses],
                               [g[0][2] for g in s32.guesses], atol=1.0)
    f = full_protocol(tiny_loc("pcr", 1), tiny_cls(3), index, [32], precision="bf16", **kw)
    assert f.precision == "bf16" and f.table_row()["precision"] == "bf16"
    assert load_saved(f.save(tmp_path / "b.npz")).precision == "bf16"
    assert "bf16" in loc_table([f])


# ---------------------------------------------------------------------------- CLI

def test_cli_precision_flags(data: Path, tmp_path: Path, capsys, native) -> None:
    native(True)
    ckpt = save_net(tmp_path / "m.pt", train_scale=[32, 40])
    root = str(data.parent)
    assert main(["evaluate", str(ckpt), "--data", root, "--workers", "0", "--scales", "32",
                 "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    assert "precision" in out.splitlines()[0] and " fp32 " in out
    assert json.loads((tmp_path / "e.json").read_text())["precision"] == "fp32"
    assert main(["evaluate", str(ckpt), "--data", root, "--workers", "0", "--scales", "32",
                 "--precision", "auto"]) == 0
    assert " bf16 " in capsys.readouterr().out
    # the flag of earlier releases means auto
    assert main(["evaluate", str(ckpt), "--data", root, "--workers", "0", "--scales", "32",
                 "--amp"]) == 0
    assert " bf16 " in capsys.readouterr().out
    img = next((data / CLASSES[0]).iterdir())
    for prec in ("fp32", "bf16"):
        assert main(["predict", str(ckpt), str(img), "--precision", prec, "--json"]) == 0
        top = json.loads(capsys.readouterr().out)[0]["top"]
        assert abs(sum(t["prob"] for t in top) - 1.0) < 1e-3
    assert main(["features", str(ckpt), "--data", root, "--split", "val", "--workers", "0",
                 "--scales", "32", "--out", str(tmp_path / "f.npz")]) == 0
    assert "bf16" in capsys.readouterr().out  # auto: native here (mocked)
    with pytest.raises(SystemExit) as e:
        main(["evaluate", str(ckpt), "--data", root, "--precision", "fp8"])
    assert e.value.code == 2
    assert "invalid choice: 'fp8'" in capsys.readouterr().err


def test_cli_fp16_on_a_cpu_is_one_line(data: Path, tmp_path: Path, capsys,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "cpu_native_fp16", lambda: False)
    ckpt = save_net(tmp_path / "m.pt")
    rc = main(["evaluate", str(ckpt), "--data", str(data.parent), "--workers", "0",
               "--precision", "fp16", "--device", "cpu", "--json", str(tmp_path / "e.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "fp16 needs a CUDA" in err and "Traceback" not in err
    assert not (tmp_path / "e.json").exists()
