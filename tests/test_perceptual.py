"""vgg.PerceptualLoss: content and Gram-matrix style distances at named layers (both Gram
normalisations), the model's own input normalisation, inputs in [0, 1] or a named range
(others refused), float32 Gram matrices and distances under autocast, conv outputs kept
intact before their ReLU, frozen weights, gradients to the input; the docs' example runs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vgg
from vgg.errors import ConfigError, InputRangeError, VggError
from vgg.preprocess import Preprocess

from _formats_util import keras_vgg16_layers, random_keras_vgg16, write_keras_h5

DOC = Path(__file__).resolve().parents[1] / "docs" / "perceptual.md"
LAYERS = ("relu1_2", "relu2_2", "relu3_3")


def tiny(preprocess: Preprocess | None = None, **kw: object) -> vgg.VGG:
    g = torch.Generator().manual_seed(0)
    return vgg.build("D", width=1 / 16, fc_width=8, crop=32, num_classes=3, init="kaiming",
                     generator=g, preprocess=preprocess, **kw)


def images(n: int = 2, side: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pre", [Preprocess.torchvision(), Preprocess.caffe()])
@pytest.mark.parametrize("style", [False, True])
def test_zero_for_identical_images_positive_otherwise(pre: Preprocess, style: bool) -> None:
    loss = vgg.PerceptualLoss(tiny(pre), LAYERS, style=style)
    x, y = images(seed=1), images(seed=2)
    assert loss(x, x.clone()).item() == 0.0
    assert loss(x, y).item() > 0
    assert loss(x, y).dim() == 0


@pytest.mark.parametrize("style", [False, True])
def test_equals_the_formula_on_the_models_normalisation(style: bool) -> None:
    model = tiny(Preprocess.caffe()).eval()
    w = (0.5, 2.0, 1.0)
    loss = vgg.PerceptualLoss(model, LAYERS, weights=w, style=style)
    x, y = images(seed=3), images(seed=4)
    with torch.no_grad():
        fx = model.extract(model.preprocess(x * 255), LAYERS)
        fy = model.extract(model.preprocess(y * 255), LAYERS)
    want = 0.0
    for name, wl in zip(LAYERS, w):
        a, b = fx[name].double(), fy[name].double()
        if style:
            n, c, h, ww = a.shape
            a = torch.einsum("nchw,ndhw->ncd", a, a) / (c * h * ww)
            b = torch.einsum("nchw,ndhw->ncd", b, b) / (c * h * ww)
        want += wl * float(((a - b) ** 2).mean())
    assert loss(x, y).item() == pytest.approx(want, rel=1e-4)
    # the preprocessing matters: the same weights with torchvision's normalisation differ
    other = vgg.PerceptualLoss(tiny(Preprocess.torchvision()), LAYERS, weights=w, style=style)
    assert other(x, y).item() != pytest.approx(want, rel=1e-2)


def test_gradients_reach_the_input_and_the_model_is_untouched() -> None:
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    content = vgg.PerceptualLoss(model, LAYERS)
    style = vgg.PerceptualLoss(model, LAYERS, style=True)
    x = images(seed=5).requires_grad_(True)
    y = images(seed=6)
    (content(x, y) + 1e3 * style(x, y[:1])).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in content.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # the copied stack stops after the deepest layer asked for
    assert len(content.net) == model.layer_names["relu3_3"] + 1


def test_style_takes_other_sizes_content_does_not() -> None:
    model = tiny()
    x, big = images(side=32), images(n=1, side=48)
    style = vgg.PerceptualLoss(model, LAYERS, style=True)
    assert style(x, big).item() > 0
    target = style.features(big)
    assert target["relu2_2"].shape == (1, 8, 8)  # Gram: C x C
    assert style(x, target).item() == pytest.approx(style(x, big).item())
    with pytest.raises(ValueError, match="content loss at relu1_2"):
        vgg.PerceptualLoss(model, LAYERS)(x, big)


def test_layer_names_weights_and_inputs_are_checked() -> None:
    model = tiny()
    with pytest.raises(ConfigError,
                       match=r"\[.relu9_9.\] unknown for D; .*relu1_1, conv1_2, relu1_2"):
        vgg.PerceptualLoss(model, ("relu1_2", "relu9_9"))
    with pytest.raises(ConfigError, match="fc6"):
        vgg.PerceptualLoss(model, ("fc6",))
    with pytest.raises(ConfigError, match="repeated"):
        vgg.PerceptualLoss(model, ("relu1_2", "relu1_2"))
    with pytest.raises(ConfigError, match="at least one layer"):
        vgg.PerceptualLoss(model, ())
    for bad in ((1.0,), (1.0, -1.0), (1.0, float("nan"))):
        with pytest.raises(ConfigError, match="2 finite numbers >= 0"):
            vgg.PerceptualLoss(model, ("relu1_2", "relu2_2"), weights=bad)
    loss = vgg.PerceptualLoss(model, "relu2_1")  # one name is fine
    assert loss.layers == ("relu2_1",)
    with pytest.raises(ValueError, match="float RGB images in \\[0, 1\\]"):
        loss(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="\\(N, 3, H, W\\)"):
        loss(torch.zeros(3, 32, 32), torch.zeros(3, 32, 32))
    with pytest.raises(ConfigError, match="not Linear"):
        vgg.PerceptualLoss(torch.nn.Linear(2, 2))  # type: ignore[arg-type]


def test_batch_norm_net_stays_in_eval_mode() -> None:
    model = tiny(batch_norm=True)
    with torch.no_grad():  # running statistics that differ from batch statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(0.3)
                m.running_var.fill_(2.0)
    loss = vgg.PerceptualLoss(model.to_fully_conv(), ("relu2_2",))
    x, y = images(seed=7), images(seed=8)
    ref = loss(x, y).item()
    wrapper = torch.nn.ModuleDict({"loss": loss}).train()
    assert not loss.net.training
    assert wrapper["loss"](x, y).item() == pytest.approx(ref)


def test_any_weights_file_works_including_notop(tmp_path: Path) -> None:
    path = write_keras_h5(tmp_path / "notop.h5",
                          random_keras_vgg16(np.random.default_rng(0), top=False),
                          keras_vgg16_layers(top=False))
    loss = vgg.PerceptualLoss(path, style=True)  # default layers up to relu4_3
    assert loss.preprocess == Preprocess.caffe()
    x = images(side=32).requires_grad_(True)
    value = loss(x, images(side=32, seed=9))
    value.backward()
    assert value.item() > 0 and x.grad.abs().sum() > 0


def unnormalised_gram(f: torch.Tensor) -> torch.Tensor:
    return torch.einsum("nchw,ndhw->ncd", f.double(), f.double())


def test_gatys_normalisation_is_the_papers_formula() -> None:
    """gram_norm="gatys": E_l = sum((G - A)^2) / (4 N^2 M^2) on unnormalised Gram matrices,
    averaged over the batch; "chw" (the default) is C^2 / 4 times smaller per layer."""
    model = tiny(Preprocess.caffe()).eval()
    w = (0.5, 2.0, 1.0)
    x, y = images(seed=3), images(n=1, seed=4)  # one style image for the batch
    gatys = vgg.PerceptualLoss(model, LAYERS, weights=w, style=True, gram_norm="gatys")
    with torch.no_grad():
        fx = model.extract(model.preprocess(x * 255), LAYERS)
        fy = model.extract(model.preprocess(y * 255), LAYERS)
    want = 0.0
    for name, wl in zip(LAYERS, w):
        _, c, h, ww = fx[name].shape
        e = ((unnormalised_gram(fx[name]) - unnormalised_gram(fy[name])) ** 2).sum((1, 2))
        want += wl * float(e.mean()) / (4 * c ** 2 * (h * ww) ** 2)
    assert gatys(x, y).item() == pytest.approx(want, rel=1e-4)
    # per layer, gatys / chw = C^2 / 4: 4 channels (relu1_2) and 16 (relu3_3) here
    for name in ("relu1_2", "relu3_3"):
        c = fx[name].shape[1]
        one = {norm: vgg.PerceptualLoss(model, (name,), style=True, gram_norm=norm)(x, y).item()
               for norm in ("chw", "gatys")}
        assert one["gatys"] == pytest.approx(one["chw"] * c * c / 4, rel=1e-4)
    assert vgg.PerceptualLoss(model, LAYERS, style=True).gram_norm == "chw"  # the default
    # a style image of another size compares through its own M (F F^T / M stored)
    big = images(n=1, side=48, seed=5)
    target = gatys.features(big)
    assert gatys(x, target).item() == pytest.approx(gatys(x, big).item()) and \
        gatys(x, big).item() > 0
    assert gatys(x, x.clone()).item() == 0.0
    with pytest.raises(ConfigError, match="gram_norm must be one of chw, gatys, not 'tutorial'"):
        vgg.PerceptualLoss(model, LAYERS, style=True, gram_norm="tutorial")


def strong_net() -> vgg.VGG:
    """Caffe preprocessing (0..255 inputs) and a conv1_1 8 times too strong: activations
    up to ~2e5 at relu1_2 and Gram entries far beyond fp16's 65504."""
    model = tiny(Preprocess.caffe())
    with torch.no_grad():
        model.features[0].weight.mul_(8.0)
    return model


@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("style", [False, True])
def test_float32_gram_and_distances_under_cpu_autocast(amp: torch.dtype, style: bool) -> None:
    loss = vgg.PerceptualLoss(strong_net(), LAYERS, style=style)
    x, y = images(seed=12).requires_grad_(True), images(seed=13)
    ref = loss(x, y).item()
    with torch.autocast("cpu", dtype=amp):
        value = loss(x, y)
        feats = loss.features(y)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert value.item() == pytest.approx(ref, rel=5e-2)
    if style:  # the Gram matrices themselves are float32, whatever the features' precision
        assert all(f.dtype == torch.float32 for f in feats.values())
        assert max(float(f.abs().max()) for f in feats.values()) > 65504
    value.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("style", [False, True])
def test_float32_gram_and_distances_under_cuda_fp16_autocast(style: bool) -> None:
    loss = vgg.PerceptualLoss(strong_net(), LAYERS, style=style)
    x, y = images(seed=12).cuda().requires_grad_(True), images(seed=13).cuda()
    ref = loss(x, y).item()
    with torch.autocast("cuda", dtype=torch.float16):
        value = loss(x, y)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert value.item() == pytest.approx(ref, rel=5e-2)
    value.backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("batch_norm", [False, True])
def test_pre_and_post_activation_features_both_intact(batch_norm: bool) -> None:
    """conv5_4 (before its in-place ReLU, ESRGAN's layer) and relu5_4 in one call: the conv
    output is returned, and seen by a forward hook, as computed, negatives included."""
    g = torch.Generator().manual_seed(0)
    model = vgg.build("E", width=1 / 16, fc_width=8, crop=32, num_classes=3, init="kaiming",
                      generator=g, batch_norm=batch_norm).eval()
    pre = "bn5_4" if batch_norm else "conv5_4"  # the tensor the ReLU takes
    names = ("conv5_4", pre, "relu5_4") if batch_norm else ("conv5_4", "relu5_4")
    loss = vgg.PerceptualLoss(model, names)
    seen: dict[str, torch.Tensor] = {}
    for name in names:
        loss.net[model.layer_names[name]].register_forward_hook(
            lambda _m, _i, out, name=name: seen.__setitem__(name, out))
    x = images(seed=14)
    got = loss.features(x)
    with torch.no_grad():
        want = model.extract(model.preprocess(x * 255), names)
    assert (got[pre] < 0).any() and (got["relu5_4"] == 0).any()
    for name in names:
        torch.testing.assert_close(got[name], want[name])
        assert torch.equal(seen[name], got[name])  # the hook's tensor was not overwritten
    torch.testing.assert_close(got["relu5_4"], got[pre].clamp(min=0))
    # the caller's model keeps its in-place ReLUs; ESRGAN's layer alone, with gradients
    assert all(m.inplace for m in model.features if isinstance(m, torch.nn.ReLU))
    esrgan = vgg.PerceptualLoss(model, ("conv5_4",))
    xg = x.clone().requires_grad_(True)
    value = esrgan(xg, images(seed=15))
    value.backward()
    assert value.item() > 0 and xg.grad.abs().sum() > 0
    torch.testing.assert_close(esrgan.features(x)["conv5_4"], want["conv5_4"])


def test_inputs_outside_their_range_are_refused_with_the_range_found() -> None:
    loss = vgg.PerceptualLoss(tiny(), LAYERS)
    x, y = images(seed=16), images(seed=17)
    cases = [(x * 2 - 1, r"\[-0\.9\d*, 0\.9\d*\]: images in \[-1, 1\]\? pass input_range='-1,1'"),
             (x * 255, r"\[0\.\d+, 25\d\.?\d*\]: images in \[0, 255\]\? pass "
                       r"input_range='0,255'"),
             (x * 1.2 - 0.1, r"\[-0\.0\d+, 1\.\d+\]: clamp them, or pass check_range=False"),
             (x + float("nan"), "NaN or inf")]
    for bad, found in cases:
        for args in ((bad, y), (x, bad)):  # the input or the target
            with pytest.raises(InputRangeError,
                               match=r"expects RGB images in \[0, 1\] \(input_range='0,1'\)"
                                     r", got .*" + found):
                loss(*args)
    assert issubclass(InputRangeError, ValueError) and issubclass(InputRangeError, VggError)
    # float rounding at the ends passes; check_range=False uses the values as they are
    loss(x.clamp(1e-4, 1 - 1e-4) * (1 + 5e-4), y)
    free = vgg.PerceptualLoss(tiny(), LAYERS, check_range=False)
    assert torch.isfinite(free(x * 1.2 - 0.1, y))
    for bad in ("0..1", "-1, 2", (0, 1)):
        with pytest.raises(ConfigError, match="input_range must be one of '0,1', '-1,1', "
                                              "'0,255'"):
            vgg.PerceptualLoss(tiny(), LAYERS, input_range=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("style", [False, True])
def test_input_range_maps_other_conventions_onto_0_1(style: bool) -> None:
    x, y = images(seed=18), images(seed=19)
    want = vgg.PerceptualLoss(tiny(), LAYERS, style=style)(x, y).item()
    for spec, lo, hi in (("-1,1", -1.0, 1.0), ("0,255", 0.0, 255.0), ("0,1", 0.0, 1.0)):
        loss = vgg.PerceptualLoss(tiny(), LAYERS, style=style, input_range=spec)
        assert loss(x * (hi - lo) + lo, y * (hi - lo) + lo).item() == pytest.approx(want,
                                                                                    rel=1e-5)
        far = hi + 0.5 * (hi - lo)  # beyond this range: refused, naming it and the values
        with pytest.raises(InputRangeError,
                           match=rf"\[{lo:g}, {hi:g}\] \(input_range='{spec}'\), got "
                                 rf"values in \[{far:g}, {far:g}\]"):
            loss(torch.full_like(x, far), y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_follows_the_input_to_cuda() -> None:
    loss = vgg.PerceptualLoss(tiny(), LAYERS)
    x, y = images(seed=10), images(seed=11)
    cpu = loss(x, y).item()
    xc = x.cuda().requires_grad_(True)
    value = loss(xc, y.cuda())
    value.backward()
    assert value.device.type == "cuda" and xc.grad.abs().sum() > 0
    assert value.item() == pytest.approx(cpu, rel=1e-3)


def test_docs_style_transfer_example_runs(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The 20-line example of docs/perceptual.md, as written, with a tiny random VGG-16 in
    torchvision's file format and 5 steps instead of 300: the loss falls."""
    code = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)[-1]
    assert "range(300)" in code and len(code.strip().splitlines()) <= 22
    monkeypatch.chdir(tmp_path)
    g = torch.Generator().manual_seed(0)
    net = vgg.build("D", width=1 / 16, fc_width=16, crop=64, init="kaiming", generator=g)
    torch.save(net.state_dict(), "vgg16-397923af.pth")  # as torchvision's cache holds it
    rng = np.random.default_rng(0)
    for name in ("content.jpg", "style.jpg"):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(name)
    ns: dict = {}
    exec(compile(code.replace("range(300)", "range(5)"), str(DOC), "exec"), ns)  # noqa: S102
    assert Image.open("styled.png").size == (64, 48)

    def total(image: torch.Tensor) -> float:
        with torch.no_grad():
            return (ns["content_loss"](image, ns["content_target"])
                    + 1e6 * ns["style_loss"](image, ns["style_target"])).item()

    assert total(ns["image"]) < total(ns["content"])
