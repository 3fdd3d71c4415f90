"""The original weight files: Caffe .caffemodel (a protobuf the test serialises) and Keras
.h5 (the real group/attribute layout), checked against each framework's own arithmetic
computed in numpy from the raw arrays; format detection; unhappy paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vgg import load_checkpoint
from vgg.errors import CheckpointError, ConfigError
from vgg.preprocess import Preprocess
from vgg.weights import read_weights, sniff_format

from _formats_util import (caffe_forward, keras_forward, keras_vgg16_layers, random_keras_vgg16,
                           write_caffemodel, write_keras_h5)

WIDTHS = (4, 8, 16, 32, 32)  # width 1/16 of 64..512


def scores(model, image_chw: np.ndarray) -> np.ndarray:
    """Pre-soft-max scores of RGB 0..255 (3, H, W) through the model's own preprocessing."""
    with torch.no_grad():
        x = model.preprocess(torch.from_numpy(np.ascontiguousarray(image_chw))[None])
        return model.eval()(x)[0].double().numpy()


def close(out: np.ndarray, ref: np.ndarray, rel: float = 1e-4) -> bool:
    return float(np.abs(out - ref).max()) <= rel * float(np.abs(ref).max())


def random_caffe(rng: np.random.Generator, blocks=(2, 2, 3, 3, 3), widths=WIDTHS,
                 fc: int = 16, classes: int = 10, pool5: int = 2) -> dict[str, list[np.ndarray]]:
    """Random weights in Caffe's shapes: conv (out, in, k, k), FC (out, in)."""
    w: dict[str, list[np.ndarray]] = {}
    cin = 3
    for b, (n, c) in enumerate(zip(blocks, widths), 1):
        for i in range(1, n + 1):
            w[f"conv{b}_{i}"] = [rng.normal(0, np.sqrt(2 / (9 * cin)), (c, cin, 3, 3)),
                                 rng.normal(0, 0.1, c)]
            cin = c
    fin = cin * pool5 * pool5
    for name, (i, o) in (("fc6", (fin, fc)), ("fc7", (fc, fc)), ("fc8", (fc, classes))):
        w[name] = [rng.normal(0, np.sqrt(2 / i), (o, i)), rng.normal(0, 0.1, o)]
    return w


# ----------------------------------------------------------------------------- Caffe

@pytest.mark.parametrize("version,fc6_4d", [(1, None), (2, None), (2, (32, 2, 2))])
def test_caffemodel_gives_caffes_arithmetic(tmp_path: Path, version: int, fc6_4d) -> None:
    rng = np.random.default_rng(version)
    w = random_caffe(rng)
    path = write_caffemodel(tmp_path / "VGG_ILSVRC_16_layers.caffemodel", w, version, fc6_4d)
    assert sniff_format(path) == "caffe"
    ck = read_weights(path)
    assert ck.meta["converted_from"] == "caffe" and ck.preprocess == Preprocess.caffe()
    c = ck.config
    assert (c.arch, c.batch_norm, c.width, c.fc_width, c.crop, c.num_classes) == \
        ("D", False, 1 / 16, 16, 64, 10)
    model = ck.build_model()
    image = rng.integers(0, 256, (3, 64, 64)).astype(np.uint8)
    ref = caffe_forward(image, w)
    assert close(scores(model, image), ref)
    # The input is one where the order matters: Caffe's arithmetic on RGB (no swap) differs.
    wrong = caffe_forward(image[::-1], w)
    assert not close(wrong, ref, 0.01)


def test_caffe_arch_from_the_layers(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a = random_caffe(rng, blocks=(1, 1, 2, 2, 2))
    p = write_caffemodel(tmp_path / "a.caffemodel", a, blocks=(1, 1, 2, 2, 2))
    assert read_weights(p).config.arch == "A"
    p_lrn = write_caffemodel(tmp_path / "alrn.caffemodel", a, blocks=(1, 1, 2, 2, 2), lrn=True)
    assert read_weights(p_lrn).config.arch == "A-LRN"  # the LRN layer has no blobs
    e = random_caffe(rng, blocks=(2, 2, 4, 4, 4))
    p_e = write_caffemodel(tmp_path / "e.caffemodel", e, blocks=(2, 2, 4, 4, 4))
    ck = read_weights(p_e, "caffe", arch="vgg19")
    assert ck.config.arch == "E"
    with pytest.raises(CheckpointError, match=r"16 conv layers .* fit no VGG config \(D: 13"):
        read_weights(p_e, arch="D")
    with pytest.raises(ConfigError, match="no batch-norm layers"):
        read_weights(p_e, batch_norm=True)


def test_caffemodel_truncated_garbage_or_empty(tmp_path: Path) -> None:
    good = write_caffemodel(tmp_path / "good.caffemodel", random_caffe(np.random.default_rng(0)))
    data = good.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 40):
        bad = tmp_path / f"cut{cut}.caffemodel"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=rf"cut{cut}.caffemodel.*(corrupt or truncated"
                                                  rf"|conv layers|fully-connected)"):
            read_weights(bad)
    bad = tmp_path / "half.caffemodel"
    bad.write_bytes(data[: len(data) - 1])
    with pytest.raises(CheckpointError, match="corrupt or truncated .*runs past the end"):
        load_checkpoint(bad)  # every command goes through here
    rng = np.random.default_rng(1)
    for _ in range(20):
        junk = tmp_path / "junk.caffemodel"
        junk.write_bytes(bytes(rng.integers(0, 256, 2000, dtype=np.uint8)))
        with pytest.raises(CheckpointError, match="junk.caffemodel"):
            read_weights(junk)
    text = tmp_path / "deploy.caffemodel"
    text.write_text('name: "VGG_ILSVRC_16_layers"\nlayers { name: "conv1_1" }\n')
    with pytest.raises(CheckpointError, match="deploy.caffemodel"):
        read_weights(text)


# ----------------------------------------------------------------------------- Keras

@pytest.mark.parametrize("old_names", [False, True])
def test_keras_h5_gives_keras_arithmetic(tmp_path: Path, old_names: bool) -> None:
    rng = np.random.default_rng(3)
    w = random_keras_vgg16(rng)
    path = write_keras_h5(tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels.h5", w,
                          keras_vgg16_layers(), old_names=old_names)
    assert sniff_format(path) == "keras"
    ck = read_weights(path)
    assert ck.meta["converted_from"] == "keras" and ck.preprocess == Preprocess.caffe()
    assert (ck.config.arch, ck.config.width, ck.config.crop) == ("D", 1 / 16, 64)
    model = ck.build_model()
    image = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
    ref = keras_forward(image, w)
    assert close(scores(model, image.transpose(2, 0, 1)), ref)
    # FC1 without the channels-last -> (C, H, W) permutation gives another answer here.
    naive = read_weights(path).build_model()
    with torch.no_grad():
        naive.classifier[0].weight.copy_(torch.from_numpy(w["fc1"][0].T.astype(np.float32)))
    assert not close(scores(naive, image.transpose(2, 0, 1)), ref, 0.01)


def test_keras_notop_is_features_only(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    w = random_keras_vgg16(rng, top=False)
    path = write_keras_h5(tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", w,
                          keras_vgg16_layers(top=False))
    ck = read_weights(path)
    assert ck.meta["features_only"] is True and ck.classes is None
    assert "train_scale" not in ck.meta
    model = ck.build_model().eval()
    image = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
    with torch.no_grad():
        pool5 = model.forward_features(model.preprocess(
            torch.from_numpy(image.transpose(2, 0, 1).copy())[None]))[0].numpy()
    ref = keras_forward(image, w, top=False)  # (H, W, C)
    assert close(pool5.transpose(1, 2, 0).astype(np.float64), ref)
    with pytest.raises(ConfigError, match="no FC layers"):
        read_weights(path, classes="imagenet")


def test_keras_missing_layer_dataset_or_layout(tmp_path: Path) -> None:
    import h5py

    rng = np.random.default_rng(5)
    w = random_keras_vgg16(rng)
    path = write_keras_h5(tmp_path / "k.h5", w, keras_vgg16_layers())
    with h5py.File(path, "a") as f:
        del f["block3_conv2"]
    with pytest.raises(CheckpointError, match="layer 'block3_conv2' is listed in layer_names but "
                                              "has no group"):
        read_weights(path)
    path = write_keras_h5(tmp_path / "k2.h5", w, keras_vgg16_layers())
    with h5py.File(path, "a") as f:
        del f["fc2"]["fc2"]["bias:0"]
    with pytest.raises(CheckpointError, match="layer 'fc2' has no readable dataset 'fc2/bias:0'"):
        load_checkpoint(path)
    # a layer dropped from layer_names altogether: 12 convs fit no VGG config
    names = [n for n in keras_vgg16_layers() if n != "block4_conv3"]
    path = write_keras_h5(tmp_path / "k3.h5", w, names)
    with pytest.raises(CheckpointError, match="12 conv layers"):
        read_weights(path)
    # Theano-ordered kernels (out, in, kh, kw) are refused, not silently misread
    th = {k: ([v[0].transpose(3, 2, 0, 1), v[1]] if v[0].ndim == 4 else v) for k, v in w.items()}
    path = write_keras_h5(tmp_path / "th.h5", th, keras_vgg16_layers())
    with pytest.raises(CheckpointError, match="th_dim_ordering"):
        read_weights(path)
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(CheckpointError, match="no 'layer_names' attribute"):
        read_weights(tmp_path / "plain.h5")
    torch.save({"a": torch.zeros(1)}, tmp_path / "t.pth")
    with pytest.raises(CheckpointError, match="is a torch file .*, not keras weights"):
        read_weights(tmp_path / "t.pth", "keras")


# -------------------------------------------------------------------- detection, errors

def test_sniff_and_unknown_formats(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.save({"w": torch.zeros(2)}, tmp_path / "a.pth")
    save_file({"w": torch.zeros(2)}, tmp_path / "a.safetensors")
    (tmp_path / "notes.bin").write_text("hello, not weights\n")
    assert sniff_format(tmp_path / "a.pth") == "torch"
    # the content decides, not the name
    (tmp_path / "renamed.bin").write_bytes((tmp_path / "a.safetensors").read_bytes())
    assert sniff_format(tmp_path / "renamed.bin") == "safetensors"
    assert sniff_format(tmp_path / "notes.bin") == "unknown"
    with pytest.raises(CheckpointError, match="notes.bin: not a format vgg reads"):
        read_weights(tmp_path / "notes.bin")
    with pytest.raises(CheckpointError, match="notes.bin: the file is corrupt .*not a format "
                                              "vgg reads"):
        load_checkpoint(tmp_path / "notes.bin")
    with pytest.raises(CheckpointError, match="a.pth: not a VGG state dict"):
        read_weights(tmp_path / "a.pth")
    with pytest.raises(CheckpointError, match="not found"):
        read_weights(tmp_path / "missing.caffemodel")
    with pytest.raises(ConfigError, match="unknown weights format 'onnx'"):
        read_weights(tmp_path / "a.pth", "onnx")
