"""Mixed-precision training (``--amp``) on the CPU: bf16 autocast really runs (bf16
convolutions over fp32 master weights), everything that persists stays fp32, ``auto``
follows the (mocked) hardware and the net's size, a resumed bf16 run is exact, and a run
is never continued in another precision without being refused or said."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import vgg.precision as P
from vgg.checkpoint import load_checkpoint
from vgg.cli import main
from vgg.data.synthetic import make_shapes_dataset
from vgg.data.transforms import ColourStats
from vgg.errors import ConfigError
from vgg.model import NetShape, build
from vgg.train import TrainConfig, resume, train
from vgg.train.checkpoint import Position
from vgg.train.distributed import DistInfo
from vgg.train.step import TrainStep, amp_dtype, grad_scaler, resolve_amp
from vgg.train.task import ClassificationTask

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    return make_shapes_dataset(out, classes=3, train_per_class=8, val_per_class=2,
                               min_side=40, max_side=64, workers=0)


@pytest.fixture
def native(monkeypatch: pytest.MonkeyPatch):
    """Pretend the CPU does (True) or does not (False) compute bf16 natively."""
    def set_(flag: bool) -> None:
        monkeypatch.setattr(P, "cpu_native_bf16", lambda: flag)
    return set_


def tiny(data: Path, out: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(data=str(data), out=str(out), arch="A", batch_norm=True,
                                width=1 / 16, fc_width=32, crop=32, scale=(40, 48), epochs=1,
                                batch=8, workers=0, stats_limit=8, tensorboard=False,
                                plot=False, progress=False, lr=0.05, deterministic=True,
                                seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_bf16_autocast_runs_bf16_convolutions_over_fp32_weights() -> None:
    cfg = TrainConfig(data="unused", arch="A", batch_norm=True, width=1 / 16, fc_width=32,
                      crop=32, batch=4, amp="bf16", device="cpu")
    model = build("A", batch_norm=True, width=1 / 16, fc_width=32, crop=32, num_classes=3)
    model.train()
    running_mean = model.features[1].running_mean.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    step = TrainStep(cfg, model, ClassificationTask(cfg), opt, grad_scaler("bf16"),
                     stats=ColourStats.imagenet(), dist=DistInfo(), device=CPU,
                     run_dir=Path("."), amp="bf16")
    assert step.amp_dtype is torch.bfloat16
    seen: dict[str, torch.dtype] = {}

    def note(name: str) -> Any:
        def hook(mod: nn.Module, inp: Any, out: torch.Tensor) -> None:
            seen[name] = out.dtype
        return hook

    hooks = [m.register_forward_hook(note(name)) for name, m in model.named_modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    g = torch.Generator().manual_seed(0)
    batch = {"images": torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g),
             "labels": torch.tensor([0, 1, 2, 0]), "alphas": torch.randn(4, 3, generator=g),
             "n_bad": 0}
    loss, _, counted, n, _ = step(batch, Position())
    for h in hooks:
        h.remove()
    assert len(seen) == 8 + 3 and set(seen.values()) == {torch.bfloat16}
    assert torch.isfinite(torch.tensor(loss)) and loss > 0 and counted == n == 4
    # master weights, their gradients' updates, the momentum and BN statistics: fp32
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {b.dtype for n_, b in model.named_buffers() if b.is_floating_point()} == \
        {torch.float32}
    assert not torch.equal(model.features[1].running_mean, running_mean)
    momenta = [s["momentum_buffer"] for s in opt.state.values()]
    assert momenta and {m.dtype for m in momenta} == {torch.float32}
    # without --amp the same step runs fp32
    step32 = TrainStep(cfg.replace(amp="none"), model, ClassificationTask(cfg), opt,
                       grad_scaler("none"), stats=None, dist=DistInfo(), device=CPU,
                       run_dir=Path("."), amp="none")
    with step32.autocast():
        assert model(torch.zeros(1, 3, 32, 32)).dtype == torch.float32
    with step.autocast():
        assert model(torch.zeros(1, 3, 32, 32)).dtype == torch.bfloat16


@pytest.mark.parametrize("batch_norm", [False, True])
def test_lrn_net_trains_and_runs_in_bf16_with_the_fp32_layer(batch_norm: bool) -> None:
    """A-LRN under bf16 autocast (a study run) and as a bf16 model (inference): torch has
    no bf16 CPU kernel for LRN's windowed sum, so the layer computes in fp32, matching
    the fp32 layer to bf16's precision, and hands bf16 on."""
    torch.manual_seed(0)
    model = build("A-LRN", batch_norm=batch_norm, width=1 / 16, fc_width=32, crop=32,
                  num_classes=3, init="glorot")
    lrn = next(m for m in model.modules() if isinstance(m, nn.LocalResponseNorm))
    x = torch.randn(2, 3, 32, 32) * 60
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    out.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in model.parameters() if p.requires_grad)
    a = torch.rand(2, 4, 5, 5) * 40
    ref = lrn(a)
    got = lrn(a.bfloat16())
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), ref, rtol=2e-2, atol=1e-2)
    with torch.no_grad():
        assert model.eval().bfloat16()(x.bfloat16()).dtype == torch.bfloat16


def test_amp_dtype_and_resolution_follow_the_hardware(native, monkeypatch) -> None:
    assert amp_dtype("none", CPU) is None and amp_dtype("bf16", CPU) is torch.bfloat16
    with pytest.raises(ConfigError, match="--amp fp16 needs a CUDA device"):
        amp_dtype("fp16", CPU)
    with pytest.raises(ConfigError, match="CUDA device or a CPU"):
        amp_dtype("bf16", torch.device("mps"))
    big = NetShape(arch="A", batch_norm=True, width=0.25, fc_width=512, crop=64)
    native(True)
    assert resolve_amp("auto", CPU, big)[0] == "bf16"
    assert resolve_amp("none", CPU, big) == ("none", "as given")
    native(False)
    amp, why = resolve_amp("auto", CPU, big)
    assert amp == "none" and "without native bf16" in why
    assert resolve_amp("bf16", CPU, big)[0] == "bf16"  # explicit: runs (emulated)
    # a CUDA GPU: bf16 where it is native (compute capability >= 8.0), whatever the size
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_amp("auto", cuda, big)[0] == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert resolve_amp("auto", cuda, big)[0] == "none"


def test_auto_follows_the_measured_size_rule(native) -> None:
    from vgg.train.step import cpu_bf16_pays

    native(True)
    shapes = [NetShape(arch="A", batch_norm=True, width=w, fc_width=f, crop=c)
              for w, f, c in [(0.25, 1024, 32), (0.25, 512, 64), (1.0, 4096, 224),
                              (1 / 16, 32, 32)]]
    for s in shapes:
        assert resolve_amp("auto", CPU, s)[0] == ("bf16" if cpu_bf16_pays(s) else "none")
    assert cpu_bf16_pays(shapes[1]) and cpu_bf16_pays(shapes[2])  # measured: 1.6-2x


def test_a_bf16_run_records_its_precision_and_keeps_fp32_state(data: Path,
                                                               tmp_path: Path) -> None:
    r = train(tiny(data, tmp_path / "run", amp="bf16", epochs=2))
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in r.history)
    assert [h["amp"] for h in r.history] == ["bf16", "bf16"]
    for name in ("last.pt", "best.pt"):
        ck = load_checkpoint(tmp_path / "run" / name)
        assert ck.meta["amp"] == "bf16"
        assert {v.dtype for v in ck.state_dict.values() if v.is_floating_point()} == \
            {torch.float32}
    opt = load_checkpoint(tmp_path / "run" / "last.pt").train_state["optimizer"]
    assert {v.dtype for s in opt["state"].values() for v in s.values()} == {torch.float32}
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["amp"] for x in recs] == ["bf16", "bf16"]
    assert "amp: bf16" in (tmp_path / "run" / "config.yaml").read_text()


def test_channels_last_unless_turned_off() -> None:
    from vgg.train.step import train_memory_format

    on = TrainConfig(data="d", out="o")
    off = TrainConfig(data="d", out="o", channels_last=False)
    assert train_memory_format(on) == torch.channels_last
    assert train_memory_format(off) == torch.contiguous_format


@pytest.mark.parametrize("cl", [True, False], ids=["channels-last", "nchw"])
def test_a_bf16_run_stopped_mid_epoch_resumes_exactly(data: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      cl: bool) -> None:
    torch.set_num_threads(1)
    size = dict(channels_last=cl)
    ref = train(tiny(data, tmp_path / "ref", amp="bf16", epochs=2, **size))
    calls = {"n": 0}
    real = TrainStep.__call__

    def stop_after_two(self, batch, position):  # noqa: ANN001, ANN202
        out = real(self, batch, position)
        conv = next(m for m in self.net.modules() if isinstance(m, nn.Conv2d))
        fmt = torch.channels_last if cl else torch.contiguous_format
        assert conv.weight.is_contiguous(memory_format=fmt)
        calls["n"] += 1
        if calls["n"] == 2:  # SIGTERM: the loop finishes this step, saves, stops
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(TrainStep, "__call__", stop_after_two)
    run = tmp_path / "stopped"
    first = train(tiny(data, run, amp="bf16", epochs=2, **size))
    assert first.interrupted
    ts = load_checkpoint(run / "last.pt").train_state
    assert (ts["epoch"], ts["step"]) == (0, 2)  # mid-epoch: 3 steps an epoch
    monkeypatch.setattr(TrainStep, "__call__", real)
    done = resume(run, progress=False)
    assert not done.interrupted and len(done.history) == 2
    a = load_checkpoint(ref.last_path).state_dict
    b = load_checkpoint(done.last_path).state_dict
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["train_loss"] for h in ref.history] == [h["train_loss"] for h in done.history]


def test_resume_in_another_precision_is_refused_or_said(data: Path, tmp_path: Path, native,
                                                        caplog: pytest.LogCaptureFixture,
                                                        capsys) -> None:
    run = tmp_path / "run"
    train(tiny(data, run))  # fp32
    with pytest.raises(ConfigError, match="cannot change amp 'none' -> 'bf16'"):
        resume(run, amp="bf16", progress=False)
    # a config.yaml edited behind the run's back: its last.pt says fp32
    cfg_file = run / "config.yaml"
    cfg_file.write_text(cfg_file.read_text().replace("amp: none", "amp: bf16"))
    with pytest.raises(ConfigError, match=r"trained with --amp none .* --amp bf16"):
        resume(run, epochs=2, progress=False)
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "trained with --amp none" in err
    assert load_checkpoint(run / "last.pt").train_state["epoch"] == 1  # untouched
    # auto: a run trained in bf16 here continues in bf16 on a machine whose auto is fp32
    native(True)
    auto = tmp_path / "auto"
    big = dict(width=0.25, fc_width=512, crop=64, scale=(72, 80))
    first = train(tiny(data, auto, amp="auto", **big))
    assert first.history[-1]["amp"] == "bf16"
    native(False)
    with caplog.at_level(logging.WARNING, logger="vgg.train.loop"):
        more = resume(auto, epochs=2, progress=False)
    assert [h["amp"] for h in more.history] == ["bf16", "bf16"]
    assert "would train in fp32 here" in caplog.text and "continuing in bf16" in caplog.text


def test_fp16_without_cuda_is_one_line_and_claims_nothing(data: Path, tmp_path: Path,
                                                          capsys) -> None:
    out = tmp_path / "fp16"
    assert main(["train", "--data", str(data), "--out", str(out), "--arch", "A", "--width",
                 "0.0625", "--fc-width", "32", "--crop", "32", "--scale", "40-48",
                 "--device", "cpu", "--amp", "fp16", "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--amp fp16 needs a CUDA device" in err
    assert not out.exists()
