"""The input conventions the stored preprocessing reproduces, checked against the libraries
that define them: torchvision's ``Normalize`` on [0, 1] (torchvision and timm weights) and
torchvision's own VGG forward; the paper's and Caffe's mean kept; checkpoints written with
the Caffe mean and torchvision's std load with torchvision's mean, said in the log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models.vgg import VGG as TorchvisionVGG
from torchvision.models.vgg import make_layers
from torchvision.transforms import v2

import vgg
from vgg.checkpoint import load_checkpoint, save_checkpoint
from vgg.preprocess import (IMAGENET_MEAN_RGB, TORCHVISION_STD_RGB, Preprocess,
                            _say_mean_corrected)
from vgg.weights import export_safetensors, load_safetensors

# torchvision's ImageNet weights' transforms (VGG16_Weights.IMAGENET1K_V1.transforms()), and
# timm's IMAGENET_DEFAULT_MEAN / IMAGENET_DEFAULT_STD, the default_cfg of its VGGs
TV_MEAN, TV_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def photos(n: int = 2, side: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def test_torchvision_convention_is_torchvisions_normalize() -> None:
    images = photos()
    want = v2.Normalize(TV_MEAN, TV_STD)(v2.ToDtype(torch.float32, scale=True)(images))
    got = Preprocess.torchvision()(images)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6)
    # the weights' own transforms say the same mean and std
    from torchvision.models import VGG16_Weights

    t = VGG16_Weights.IMAGENET1K_V1.transforms()
    assert tuple(t.mean) == TV_MEAN and tuple(t.std) == TV_STD


def test_paper_and_caffe_keep_the_ilsvrc_mean() -> None:
    images = photos(seed=1)
    mean = torch.tensor(IMAGENET_MEAN_RGB).view(1, 3, 1, 1)
    torch.testing.assert_close(Preprocess.paper()(images), images.float() - mean)
    torch.testing.assert_close(Preprocess.caffe()(images), (images.float() - mean).flip(1))


def tiny_torchvision_vgg(batch_norm: bool) -> TorchvisionVGG:
    """torchvision's own VGG-11 class at 1/16 width with a 16-wide head (224 input):
    the module code torchvision runs, cheap enough for one forward."""
    torch.manual_seed(0)
    cfg = [4, "M", 8, "M", 16, 16, "M", 32, 32, "M", 32, 32, "M"]
    net = TorchvisionVGG(make_layers(cfg, batch_norm=batch_norm), num_classes=10)
    net.classifier = nn.Sequential(nn.Linear(32 * 7 * 7, 16), nn.ReLU(True), nn.Dropout(),
                                   nn.Linear(16, 16), nn.ReLU(True), nn.Dropout(),
                                   nn.Linear(16, 10))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        net.classifier[-1].weight.mul_(300.0)  # logits of tens: a mean error shows
    return net.eval()


@pytest.mark.parametrize("batch_norm", [False, True])
def test_converted_net_matches_torchvisions_forward(batch_norm: bool) -> None:
    tv = tiny_torchvision_vgg(batch_norm)
    model = vgg.weights.from_torchvision(tv.state_dict()).eval()
    assert model.preprocess == Preprocess.torchvision()
    images = photos(side=224, seed=2)
    with torch.no_grad():
        want = tv(v2.Normalize(TV_MEAN, TV_STD)(images.float() / 255))
        got = model(model.preprocess(images))
    assert want.abs().max() > 10
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(model.predict(images), torch.softmax(want, 1),
                               rtol=1e-5, atol=1e-5)


def test_old_torchvision_preprocess_loads_corrected(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A file converted before: the Caffe mean with torchvision's std. It loads with
    torchvision's mean, and the log says so once per process."""
    g = torch.Generator().manual_seed(0)
    model = vgg.build("A", width=1 / 16, fc_width=8, crop=32, num_classes=3, generator=g)
    model.preprocess = Preprocess(mean=IMAGENET_MEAN_RGB, std=TORCHVISION_STD_RGB)
    save_checkpoint(tmp_path / "old.pt", model)
    export_safetensors(model, tmp_path / "old.safetensors")
    _say_mean_corrected.cache_clear()
    caplog.set_level(logging.WARNING, logger="vgg.preprocess")
    assert load_checkpoint(tmp_path / "old.pt").preprocess == Preprocess.torchvision()
    assert load_safetensors(tmp_path / "old.safetensors").preprocess == \
        Preprocess.torchvision()
    said = [r.getMessage() for r in caplog.records if r.name == "vgg.preprocess"]
    assert len(said) == 1 and "123.675" in said[0] and "Caffe mean" in said[0]
    # saved again, the file holds torchvision's mean; other stored values load as they are
    save_checkpoint(tmp_path / "new.pt", load_checkpoint(tmp_path / "old.pt").build_model())
    d = torch.load(tmp_path / "new.pt", weights_only=True)["preprocess"]
    assert tuple(d["mean"]) == (123.675, 116.28, 103.53)
    for p in (Preprocess.paper(), Preprocess.caffe(), Preprocess.paper((120.0, 110.0, 100.0)),
              Preprocess(mean=IMAGENET_MEAN_RGB, std=(50.0, 50.0, 50.0))):
        assert Preprocess.from_dict(p.to_dict()) == p
