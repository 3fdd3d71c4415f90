"""`vgg convert`, on-the-fly conversion in the commands that load a checkpoint, and the
Python API that loads any weights file (vgg.vgg16(weights=...), create_model, list_models)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vgg
from vgg import load_checkpoint
from vgg.checkpoint import save_checkpoint
from vgg.cli import main
from vgg.errors import CheckpointError, ConfigError
from vgg.preprocess import Preprocess
from vgg.export import export_safetensors
from vgg.weights import imagenet_classes, to_timm

from _eval_util import make_images
from _formats_util import (keras_vgg16_layers, random_keras_vgg16, write_caffemodel,
                           write_keras_h5)

TINY = dict(width=1 / 16, fc_width=16, crop=64)


def tiny(num_classes: int = 10, arch: str = "D", **kw: object) -> vgg.VGG:
    g = torch.Generator().manual_seed(0)
    return vgg.build(arch, num_classes=num_classes, init="kaiming", generator=g,
                     **{**TINY, **kw}).eval()


def caffe_weights(model: vgg.VGG) -> dict[str, list[np.ndarray]]:
    """``model``'s weights as a Caffe net holds them (the same arrays: Caffe's layout)."""
    sd = {k: v.contiguous().numpy() for k, v in model.state_dict().items()}
    w = {n: [sd[f"features.{i}.weight"], sd[f"features.{i}.bias"]]
         for n, i in model.layer_names.items() if n.startswith("conv")}
    for n, i in (("fc6", 0), ("fc7", 3), ("fc8", 6)):
        w[n] = [sd[f"classifier.{i}.weight"], sd[f"classifier.{i}.bias"]]
    return w


def logits(model: vgg.VGG, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(model.preprocess(images))


@pytest.fixture
def files(tmp_path: Path) -> dict[str, tuple[Path, vgg.VGG]]:
    """One tiny 1000-class VGG-16 in every format, with the model it should give."""
    m = tiny(1000)
    out: dict[str, tuple[Path, vgg.VGG]] = {}
    torch.save(m.state_dict(), tmp_path / "vgg16-397923af.pth")
    out["torchvision"] = (tmp_path / "vgg16-397923af.pth", m)
    torch.save(to_timm(m), tmp_path / "timm_vgg16.pth")
    out["timm"] = (tmp_path / "timm_vgg16.pth", m)
    write_caffemodel(tmp_path / "VGG_ILSVRC_16_layers.caffemodel", caffe_weights(m))
    out["caffe"] = (tmp_path / "VGG_ILSVRC_16_layers.caffemodel", m)
    kw = random_keras_vgg16(np.random.default_rng(0), classes=1000)
    write_keras_h5(tmp_path / "vgg16_keras.h5", kw, keras_vgg16_layers())
    out["keras"] = (tmp_path / "vgg16_keras.h5", m)
    return out


def test_convert_every_format(files, tmp_path: Path, capsys) -> None:
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    wnids, names = imagenet_classes()
    for fmt, (src, model) in files.items():
        out = tmp_path / f"{fmt}.pt"
        # the format is detected from the content; --from says the same
        assert main(["convert", str(src), "--out", str(out)]) == 0, fmt
        assert f"{fmt} weights: D, 1000 classes (ImageNet)" in capsys.readouterr().out
        ck = load_checkpoint(out)
        assert ck.meta["converted_from"] == fmt and ck.meta["source"] == str(src)
        assert ck.classes == wnids and ck.class_names == names
        want = Preprocess.caffe() if fmt in ("caffe", "keras") else Preprocess.torchvision()
        assert ck.preprocess == want
        assert main(["convert", str(src), "--from", fmt, "--arch", "vgg16",
                     "--out", str(tmp_path / "again.pt"), "--overwrite"]) == 0
        if fmt != "keras":  # (the Keras file holds its own random weights)
            converted = ck.build_model()
            with torch.no_grad():
                ref = model(Preprocess.torchvision()(images)) if fmt != "caffe" else \
                    model(Preprocess.caffe()(images))
            torch.testing.assert_close(logits(converted, images), ref, rtol=1e-5, atol=1e-5)
    capsys.readouterr()
    # predict shows ImageNet's names, not class numbers
    img = make_images(tmp_path / "imgs", classes=["x"], sizes=[(64, 64)]) / "x" / "0.png"
    assert main(["predict", str(tmp_path / "caffe.pt"), str(img), "--json", "--top", "3",
                 "--no-progress"]) == 0
    top = json.loads(capsys.readouterr().out)[0]["top"]
    assert len(top) == 3 and all(t["class"] in names and t["id"] in wnids for t in top)


def test_convert_classes_file_and_errors(files, tmp_path: Path, capsys) -> None:
    m = tiny(3)
    torch.save(m.state_dict(), tmp_path / "three.pth")
    (tmp_path / "names.txt").write_text("cat\ndog\nfox\n\n")
    (tmp_path / "names.json").write_text('["cat", "dog", "fox"]')
    (tmp_path / "two.txt").write_text("cat\ndog\n")
    for f in ("names.txt", "names.json"):
        assert main(["convert", str(tmp_path / "three.pth"), "--classes", str(tmp_path / f),
                     "--out", str(tmp_path / "three.pt"), "--overwrite"]) == 0
        assert load_checkpoint(tmp_path / "three.pt").classes == ["cat", "dog", "fox"]
    capsys.readouterr()

    def fails(args: list[str], match: str) -> None:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        assert match in err, err

    out = ["--out", str(tmp_path / "x.pt")]
    fails(["convert", str(tmp_path / "three.pth"), "--classes", str(tmp_path / "two.txt"), *out],
          f"--classes {tmp_path / 'two.txt'}: 2 class names given for a net with 3 outputs")
    fails(["convert", str(tmp_path / "three.pth"), "--classes", "imagenet", *out],
          "classes='imagenet' needs a 1000-class net")
    fails(["convert", str(tmp_path / "three.pth"), "--classes", str(tmp_path / "nope.txt"), *out],
          "cannot read class names from")
    (tmp_path / "notes.bin").write_text("not weights")
    fails(["convert", str(tmp_path / "notes.bin"), *out], "not a format vgg reads")
    fails(["convert", str(files["caffe"][0]), "--from", "keras", *out],
          "is a Caffe model, not keras weights")
    fails(["convert", str(files["torchvision"][0]), "--from", "timm", *out],
          "not a timm VGG state dict")
    fails(["convert", str(files["torchvision"][0]), "--bn", *out], "no batch-norm layers")
    fails(["convert", str(files["caffe"][0]), "--arch", "vgg19", *out], "fit no VGG config")
    fails(["convert", str(tmp_path / "three.pt"), *out], "already a vgg checkpoint")
    fails(["convert", str(tmp_path / "missing.pth"), *out], "not found")
    assert not (tmp_path / "x.pt").exists()
    with pytest.raises(SystemExit) as e:
        main(["convert", str(files["torchvision"][0]), "--from", "onnx", *out])
    assert e.value.code == 2 and "invalid choice: 'onnx'" in capsys.readouterr().err


def test_commands_convert_on_the_fly(files, tmp_path: Path, capsys, caplog) -> None:
    data = make_images(tmp_path / "ds" / "val", classes=["cat", "dog", "fox"],
                       sizes=[(64, 64), (72, 64)])
    m = tiny(3)
    write_caffemodel(tmp_path / "three.caffemodel", caffe_weights(m))
    caplog.set_level(logging.INFO)
    rc = main(["evaluate", str(tmp_path / "three.caffemodel"), "--data", str(tmp_path / "ds"),
               "--workers", "0", "--no-progress", "--json", str(tmp_path / "r.json")])
    assert rc == 0
    said = [r.getMessage() for r in caplog.records if "converted on the fly" in r.getMessage()]
    assert len(said) == 1 and "caffe weights: D, 3 classes" in said[0]
    assert json.loads((tmp_path / "r.json").read_text())["n_images"] == 6
    # export takes a torchvision file directly, and the export equals the source net
    src, model = files["torchvision"]
    assert main(["export", str(src), "--safetensors", str(tmp_path / "tv.safetensors")]) == 0
    back = vgg.weights.load_safetensors(tmp_path / "tv.safetensors")
    images = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        ref = model(Preprocess.torchvision()(images))
    torch.testing.assert_close(logits(back, images), ref)
    # a features-only file is refused by the classification commands, with the reason
    notop = write_keras_h5(tmp_path / "notop.h5",
                           random_keras_vgg16(np.random.default_rng(1), top=False),
                           keras_vgg16_layers(top=False))
    capsys.readouterr()
    img = data / "cat" / "0.png"
    assert main(["predict", str(notop), str(img), "--no-progress"]) == 2
    assert "convolutional layers only" in capsys.readouterr().err
    assert main(["export", str(notop), "--safetensors", str(tmp_path / "n.safetensors")]) == 2
    assert "no classifier to export" in capsys.readouterr().err
    # an unknown file is named, with what vgg reads
    (tmp_path / "model.bin").write_bytes(b"\x01\x02garbage" * 50)
    assert main(["predict", str(tmp_path / "model.bin"), str(img)]) == 2
    err = capsys.readouterr().err
    assert "model.bin" in err and "Caffe .caffemodel" in err
    # load_checkpoint(convert=False) still insists on a vgg checkpoint
    with pytest.raises(CheckpointError, match="is not a vgg checkpoint"):
        load_checkpoint(src, convert=False)


def test_finetune_from_keras_notop(tmp_path: Path) -> None:
    from vgg.data.synthetic import make_shapes_dataset
    from vgg.train import TrainConfig, train

    data = make_shapes_dataset(tmp_path / "shapes", classes=2, train_per_class=4,
                               val_per_class=1, min_side=40, max_side=48, workers=0)
    w = random_keras_vgg16(np.random.default_rng(2), top=False)
    notop = write_keras_h5(tmp_path / "notop.h5", w, keras_vgg16_layers(top=False))
    base = dict(data=str(data), arch="D", width=1 / 16, fc_width=8, crop=32, scale=(36, 40),
                epochs=1, batch=4, workers=0, stats_limit=4, tensorboard=False, plot=False,
                progress=False, lr=1e-9, weight_decay=0.0)
    run = train(TrainConfig(out=str(tmp_path / "ft"), finetune_from=str(notop), **base))
    ck = load_checkpoint(run.last_path)
    assert ck.preprocess == Preprocess.caffe()  # the conv layers' input convention is kept
    conv = torch.from_numpy(w["block1_conv1"][0].transpose(3, 2, 0, 1).astype(np.float32))
    torch.testing.assert_close(ck.state_dict["features.0.weight"].contiguous(), conv,
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(CheckpointError, match="no FC layers to copy"):
        train(TrainConfig(out=str(tmp_path / "ini"), init_from=str(notop), **base))


# -------------------------------------------------------------------------- Python API

def test_builders_take_any_weights_file(files, tmp_path: Path) -> None:
    src, model = files["torchvision"]
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    ref = model(Preprocess.torchvision()(images)).detach()
    save_checkpoint(tmp_path / "ours.pt", vgg.weights.load_weights(src))
    export_safetensors(vgg.weights.load_weights(src), tmp_path / "ours.safetensors")
    for path in (src, files["timm"][0], tmp_path / "ours.pt", tmp_path / "ours.safetensors"):
        net = vgg.vgg16(weights=path)
        assert net.config.width == 1 / 16 and net.classes[0] == "n01440764"
        torch.testing.assert_close(logits(net, images), ref, rtol=1e-5, atol=1e-5)
    caffe = vgg.vgg16(weights=files["caffe"][0])
    assert caffe.preprocess == Preprocess.caffe()
    assert vgg.vgg16(weights=files["keras"][0]).preprocess == Preprocess.caffe()
    # a state dict in memory, and create_model with another number of classes
    sd_net = vgg.create_model("vgg16", weights=model.state_dict())
    torch.testing.assert_close(logits(sd_net, images), ref, rtol=1e-5, atol=1e-5)
    five = vgg.create_model("D", weights=src, num_classes=5)
    assert five.config.num_classes == 5 and five.classes is None
    torch.testing.assert_close(five.classifier[3].weight, model.classifier[3].weight)
    with pytest.raises(CheckpointError, match="holds a D net, not E: use "
                                              "vgg.create_model\\('vgg16'"):
        vgg.vgg19(weights=src)
    with pytest.raises(CheckpointError, match="not B-BN"):
        vgg.create_model("vgg13_bn", weights=src)
    with pytest.raises(ConfigError, match="width=0.25 but the weights .* have width=0.0625"):
        vgg.vgg16(weights=src, width=0.25)
    with pytest.raises(ConfigError, match="unknown architecture"):
        vgg.create_model("resnet50")


def test_builder_with_notop_gets_fresh_fc_layers(tmp_path: Path) -> None:
    w = random_keras_vgg16(np.random.default_rng(3), top=False)
    notop = write_keras_h5(tmp_path / "notop.h5", w, keras_vgg16_layers(top=False))
    net = vgg.vgg16(weights=notop, num_classes=4, fc_width=8, crop=32)
    assert (net.config.num_classes, net.config.fc_width, net.config.crop) == (4, 8, 32)
    assert net.preprocess == Preprocess.caffe()
    conv = torch.from_numpy(w["block5_conv3"][0].transpose(3, 2, 0, 1).astype(np.float32))
    torch.testing.assert_close(net.features[net.layer_names["conv5_3"]].weight.contiguous(), conv)
    assert net.classifier[0].weight.std() > 0  # initialised, not the placeholder


def test_list_models_and_lazy_submodules() -> None:
    names = vgg.list_models()
    assert {"vgg11", "vgg16", "vgg16_bn", "vgg19_bn", "vgg11_lrn", "vgg16_c"} <= set(names)
    assert "vgg11_lrn_bn" not in names
    for name in names:
        config = vgg.create_model(name, width=1 / 64, fc_width=4, crop=32).config
        assert config.batch_norm == name.endswith("_bn")
    code = ("import sys, vgg; assert 'vgg.weights' not in sys.modules; "
            "assert 'vgg.train' not in sys.modules; "
            "print(vgg.weights.__name__, vgg.eval.__name__, vgg.data.__name__, "
            "vgg.train.__name__, vgg.localize.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["vgg.weights", "vgg.eval", "vgg.data", "vgg.train", "vgg.localize"]
    with pytest.raises(AttributeError):
        vgg.no_such_thing  # noqa: B018
