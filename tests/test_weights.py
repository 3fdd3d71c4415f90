"""Conversions (torchvision, timm, Caffe/Keras ports) and exports (safetensors, ONNX)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vgg.errors import CheckpointError, ConfigError
from vgg.export import export_onnx, export_safetensors
from vgg.model import VGG, build
from vgg.preprocess import Preprocess
from vgg.weights import (bgr_to_rgb, from_caffe, from_timm, from_torchvision, infer_config,
                         load_safetensors, mark_caffe, read_state_dict, timm_to_torchvision,
                         to_timm)

SMALL = dict(width=1 / 16, fc_width=32, crop=64, num_classes=10)


def small(arch: str = "D", **kw: object) -> VGG:
    return build(arch, init="kaiming", **{**SMALL, **kw}).eval()


def same_outputs(a: VGG, b: VGG, x: torch.Tensor | None = None) -> None:
    x = torch.randn(2, 3, a.config.crop, a.config.crop) if x is None else x
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("arch,bn", [("A", False), ("A-LRN", False), ("C", True),
                                     ("E", True), ("B-5x5", False)])
def test_infer_config_from_state_dict(arch: str, bn: bool) -> None:
    m = small(arch, batch_norm=bn, crop=96, num_classes=7)
    config = infer_config(m.state_dict())
    assert config == m.config
    same_outputs(from_torchvision(m.state_dict(), preprocess=m.preprocess), m,
                 torch.randn(1, 3, 96, 96))


def test_torchvision_mismatch_names_the_keys(tmp_path: Path) -> None:
    sd = small("D").state_dict()
    sd["features.5.weight"] = sd["features.5.weight"][:, :3]
    with pytest.raises(CheckpointError, match=r"closest is D: features\.5\.weight: shape"):
        from_torchvision(sd)
    with pytest.raises(CheckpointError, match="missing features"):
        from_torchvision(small("B").state_dict(), arch="vgg16")
    with pytest.raises(CheckpointError, match="no key features.0.weight"):
        from_torchvision({"fc.weight": torch.zeros(2, 2)})
    with pytest.raises(ConfigError, match="unknown architecture"):
        from_torchvision(small("D").state_dict(), arch="vgg99")
    with pytest.raises(CheckpointError, match="not found"):
        from_torchvision(tmp_path / "missing.pth")


def test_torchvision_file_wrapped_and_dataparallel(tmp_path: Path) -> None:
    m = small("B", batch_norm=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in m.state_dict().items()}},
               tmp_path / "w.pth")
    loaded = from_torchvision(tmp_path / "w.pth")
    assert loaded.config == m.config and loaded.preprocess == Preprocess.torchvision()
    assert not loaded.training
    same_outputs(loaded, m)
    assert set(read_state_dict(tmp_path / "w.pth")) == set(m.state_dict())


@pytest.mark.parametrize("bn", [False, True])
def test_timm_layout_round_trip(bn: bool, tmp_path: Path) -> None:
    m = small("D", batch_norm=bn)
    timm_sd = to_timm(m)
    # timm's layout (timm/models/vgg.py): conv-shaped pre_logits, linear head.fc
    assert timm_sd["pre_logits.fc1.weight"].shape == (32, 32, 2, 2)
    assert timm_sd["pre_logits.fc2.weight"].shape == (32, 32, 1, 1)
    assert timm_sd["head.fc.weight"].shape == (10, 32)
    assert not any(k.startswith("classifier") for k in timm_sd)
    # The conv head computes what the linear head does (same C, H, W flatten order).
    with torch.no_grad():
        x = torch.relu(torch.randn(1, 32, 2, 2))
        conv = torch.nn.functional.conv2d(x, timm_sd["pre_logits.fc1.weight"],
                                          timm_sd["pre_logits.fc1.bias"])
        torch.testing.assert_close(conv.flatten(1), m.classifier[0](x.flatten(1)))
    torch.save(timm_sd, tmp_path / "timm.pth")
    back = from_timm(tmp_path / "timm.pth", preprocess=m.preprocess)
    assert back.config == m.config
    same_outputs(back, m)
    assert set(timm_to_torchvision(timm_sd)) == set(m.state_dict())
    with pytest.raises(CheckpointError, match="pre_logits.fc1.weight"):
        from_timm(m.state_dict())
    with pytest.raises(CheckpointError, match="unexpected key"):
        timm_to_torchvision({**timm_sd, "head.norm.weight": torch.ones(3)})


def logits(m: VGG, images: torch.Tensor) -> torch.Tensor:
    """Pre-soft-max scores through the model's own preprocessing (soft-max saturates)."""
    with torch.no_grad():
        return m.eval()(m.preprocess(images))


def test_caffe_bgr_model_takes_rgb() -> None:
    """A BGR (Caffe) model fed RGB through its stored preprocessing gives the same output
    as the RGB model with conv1_1's input channels swapped."""
    bgr = mark_caffe(small("A"))
    assert bgr.preprocess == Preprocess.caffe()
    rgb = small("A")
    rgb.load_state_dict(bgr.state_dict())
    bgr_to_rgb(rgb)  # this one was marked RGB already: unchanged
    assert rgb.preprocess.channel_order == "RGB"
    with torch.no_grad():
        conv = rgb.features[0]
        conv.weight.copy_(conv.weight.flip(1))
    rgb.preprocess = Preprocess.paper((123.68, 116.779, 103.939))  # Caffe's mean in RGB
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    p_bgr, p_rgb = logits(bgr, images), logits(rgb, images)
    torch.testing.assert_close(p_bgr, p_rgb, rtol=1e-4, atol=1e-3)
    assert bgr.predict(images).shape == (2, 10)
    # The BGR preprocessing really swaps the channels (feeding BGR would differ).
    with torch.no_grad():
        normalised = bgr.preprocess(images)
    torch.testing.assert_close(normalised[:, 0], images[:, 2].float() - 103.939)
    flipped = logits(bgr, images.flip(1))
    # Relative to the logits' own size: with the paper's N(0, 0.01) FC init they are ~1e-2.
    assert (flipped - p_bgr).norm() > 0.05 * p_bgr.norm()
    # bgr_to_rgb does the swap itself: same posteriors, RGB preprocessing.
    converted = bgr_to_rgb(mark_caffe(small("A")))
    converted.load_state_dict(rgb.state_dict())
    assert converted.preprocess.channel_order == "RGB"
    torch.testing.assert_close(logits(converted, images), p_rgb, rtol=1e-4, atol=1e-3)


def test_from_caffe_file(tmp_path: Path) -> None:
    m = small("D")
    torch.save(m.state_dict(), tmp_path / "vgg16-caffe.pth")
    loaded = from_caffe(tmp_path / "vgg16-caffe.pth", classes=[str(i) for i in range(10)])
    assert loaded.preprocess == Preprocess.caffe() and loaded.classes[3] == "3"
    images = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    rgb = from_caffe(tmp_path / "vgg16-caffe.pth", to_rgb=True)
    assert rgb.preprocess.channel_order == "RGB"
    torch.testing.assert_close(logits(rgb, images), logits(loaded, images),
                               rtol=1e-4, atol=1e-3)


def test_safetensors_round_trip(tmp_path: Path) -> None:
    m = build("C", batch_norm=True, init="kaiming", classes=list("abcdefghij"),
              preprocess=Preprocess.caffe(), **SMALL).eval()
    path = export_safetensors(m, tmp_path / "m.safetensors")
    back = load_safetensors(path)
    assert back.config == m.config and back.classes == m.classes
    assert back.preprocess == m.preprocess and not back.training
    same_outputs(back, m)
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["config"])["arch"] == "C"
    # Bare safetensors weights load through from_torchvision; no metadata -> clear error.
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, tmp_path / "bare.safetensors")
    assert from_torchvision(tmp_path / "bare.safetensors").config == m.config
    with pytest.raises(CheckpointError, match="no vgg metadata"):
        load_safetensors(tmp_path / "bare.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_safetensors(tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        load_safetensors(tmp_path / "none.safetensors")


def _ort(path: Path):  # noqa: ANN202
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def test_onnx_fc_net_dynamic_batch(tmp_path: Path) -> None:
    m = small("D", batch_norm=True)
    m.train()  # export must use eval mode and restore the caller's mode
    path = export_onnx(m, tmp_path / "fc.onnx")
    assert m.training
    m.eval()
    sess = _ort(path)
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta["config"])["arch"] == "D" and meta["fully_conv"] == "false"
    for n in (1, 3):
        x = torch.randn(n, 3, 64, 64)
        with torch.no_grad():
            ref = m(x).numpy()
        out = sess.run(["scores"], {"images": x.numpy()})[0]
        assert out.shape == (n, 10)
        np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_onnx_fully_conv_dynamic_height_width(tmp_path: Path) -> None:
    m = small("A-LRN")
    path = export_onnx(m, tmp_path / "dense.onnx", fully_conv=True)
    sess = _ort(path)
    fcn = m.to_fully_conv().eval()
    for shape, smap in (((2, 3, 64, 64), (1, 1)), ((1, 3, 96, 160), (2, 4)),
                        ((1, 3, 128, 100), (3, 2))):
        x = torch.randn(*shape)
        with torch.no_grad():
            ref = fcn(x).numpy()
        out = sess.run(["scores"], {"images": x.numpy()})[0]
        assert out.shape == (shape[0], 10, *smap)
        np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)
    with pytest.raises(CheckpointError, match="cannot write"):
        (tmp_path / "file").write_text("x")
        export_onnx(m, tmp_path / "file" / "sub.onnx")
