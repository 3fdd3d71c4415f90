"""The networks of Table 1: sizes, LRN, torchvision compatibility, fully-convolutional
form, initialisation, pre-initialisation from A, classifier reset and named features."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

from vgg.archs import ARCHS, PAPER_PARAMS_M, resolve_arch
from vgg.builders import vgg16, vgg19_bn
from vgg.errors import ConfigError
from vgg.model import (LITERAL_INIT_STD, VGG, LocalResponseNorm, VGGConfig, build,
                       count_params, init_from, init_weights)
from vgg.weights import from_torchvision
from vgg.summary import summarize, total_macs, total_params

SMALL = dict(width=1 / 16, fc_width=32, crop=64, num_classes=10)

# Sect. 2 / Table 2 and SPEC.md: exact counts with 1000 classes.
EXACT_PARAMS = {"A": 132_863_336, "A-LRN": 132_863_336, "B": 133_047_848,
                "C": 133_638_952, "D": 138_357_544, "E": 143_667_240, "B-5x5": 134_503_528}
PAPER_MACS_G = {"A": 7.6, "B": 11.3, "C": 11.8, "D": 15.5, "E": 19.6}


def meta_net(arch: str, **kw: object) -> VGG:
    with torch.device("meta"):
        return VGG(VGGConfig(arch=arch, **kw))


@pytest.mark.parametrize("arch", sorted(EXACT_PARAMS))
def test_exact_parameter_counts(arch: str) -> None:
    net = meta_net(arch)
    assert count_params(net) == EXACT_PARAMS[arch]
    assert total_params(net.config) == EXACT_PARAMS[arch]


def test_table2_millions_and_bn_counts() -> None:
    # Table 2 of the paper, in millions, against the nets as built (not constants)
    table2 = {"A": 133, "A-LRN": 133, "B": 133, "C": 134, "D": 138, "E": 144}
    assert PAPER_PARAMS_M == table2
    for arch, millions in table2.items():
        assert round(count_params(meta_net(arch)) / 1e6) == millions, arch
    # BN adds 2 parameters per conv channel (13 convs in D: 2 x 4224 = 8448)
    bn = meta_net("D", batch_norm=True)
    convs = sum(m.out_channels for m in bn.modules() if isinstance(m, nn.Conv2d))
    assert count_params(bn) == count_params(meta_net("D")) + 2 * convs
    assert count_params(bn) == total_params(bn.config) == 138_365_992


@pytest.mark.parametrize("arch", sorted(PAPER_MACS_G))
def test_multiply_adds_at_224(arch: str) -> None:
    macs = total_macs(VGGConfig(arch=arch))
    assert abs(macs / 1e9 - PAPER_MACS_G[arch]) < 0.05 + 1e-9, macs


def test_summary_shapes_fully_conv() -> None:
    rows = summarize(VGGConfig(arch="D"), input_size=(384, 512), fully_conv=True)
    by_name = {r.name: r for r in rows}
    assert by_name["pool5"].out_shape == (512, 12, 16)
    assert by_name["fc8"].out_shape == (1000, 6, 10)
    assert sum(r.params for r in rows) == EXACT_PARAMS["D"]
    with pytest.raises(ValueError):
        summarize(VGGConfig(arch="D"), input_size=256)  # FC net takes only the crop


def test_aliases_and_layer_counts() -> None:
    assert resolve_arch("vgg16_bn") == ("D", True)
    assert resolve_arch("VGG19") == ("E", False)
    assert resolve_arch("a-lrn") == ("A-LRN", False)
    with pytest.raises(KeyError, match="unknown architecture"):
        resolve_arch("vgg17")
    with pytest.raises(ConfigError, match="unknown architecture"):
        build("resnet50", **SMALL)
    m = vgg19_bn(**SMALL)
    assert m.config.arch == "E" and m.config.batch_norm
    weight_layers = {"A": 11, "A-LRN": 11, "B": 13, "C": 16, "D": 16, "E": 19, "B-5x5": 8}
    for arch, n in weight_layers.items():
        net = build(arch, **SMALL)
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
        fcs = [m for m in net.modules() if isinstance(m, nn.Linear)]
        assert len(convs) + len(fcs) == n, arch
    c = build("C", **SMALL)
    assert [m.kernel_size for m in c.modules() if isinstance(m, nn.Conv2d)].count((1, 1)) == 3
    b5 = build("B-5x5", **SMALL)
    assert all(m.kernel_size == (5, 5) for m in b5.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("bad", [dict(crop=100), dict(crop=0), dict(width=0.0),
                                 dict(dropout=1.0), dict(num_classes=0)])
def test_config_validation(bad: dict) -> None:
    with pytest.raises(ConfigError):
        build("A", **{**SMALL, **bad})


def lrn_reference(a: torch.Tensor, n: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                  k: float = 2.0) -> torch.Tensor:
    """AlexNet's formula, written as a loop over channels."""
    out = torch.empty_like(a)
    channels = a.shape[1]
    for c in range(channels):
        lo, hi = max(0, c - n // 2), min(channels - 1, c + n // 2)
        s = (a[:, lo:hi + 1] ** 2).sum(dim=1)
        out[:, c] = a[:, c] / (k + alpha * s) ** beta
    return out


def test_lrn_matches_alexnet_formula() -> None:
    a = torch.rand(2, 9, 5, 6, dtype=torch.float64) * 100  # big values make alpha matter
    got = LocalResponseNorm()(a)
    want = lrn_reference(a)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    # Passing the paper's alpha straight to torch would be a different (weaker) layer.
    wrong = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)(a)
    assert (wrong - want).abs().max() > 1e-3
    # A-LRN puts it after conv1_1's ReLU.
    net = build("A-LRN", **SMALL)
    assert isinstance(net.features[net.layer_names["norm1"]], LocalResponseNorm)
    assert net.layer_names["norm1"] == net.layer_names["relu1_1"] + 1


TV_BUILDERS = {"A": "vgg11", "B": "vgg13", "D": "vgg16", "E": "vgg19"}


def torchvision_net(name: str) -> nn.Module:
    """torchvision's net with random weights. vgg16 is built literally (weights=None); the
    others are created on the meta device and filled with fan-in-scaled uniform noise,
    which is 5x cheaper than torchvision's init and just as random."""
    if name == "vgg16":
        return torchvision.models.vgg16(weights=None)
    with torch.device("meta"):
        tv = getattr(torchvision.models, name)(weights=None)
    tv.to_empty(device="cpu")
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                bound = math.sqrt(6 / m.weight[0].numel())
                m.weight.uniform_(-bound, bound)
                m.bias.uniform_(-0.1, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.zero_()
    return tv


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("arch", sorted(TV_BUILDERS))
def test_torchvision_state_dict_loads_and_matches(arch: str, bn: bool) -> None:
    name = TV_BUILDERS[arch] + ("_bn" if bn else "")
    tv = torchvision_net(name).eval()
    if arch == "D":  # the literal contract: build("D") takes torchvision's state dict
        ours = build(arch, batch_norm=bn, init="kaiming")
        ours.load_state_dict(tv.state_dict())  # strict: identical keys and shapes
    else:
        ours = from_torchvision(tv.state_dict())  # the same strict load, arch inferred
        assert ours.config.arch == arch and ours.config.batch_norm == bn
    ours.eval()
    assert count_params(ours) == sum(p.numel() for p in tv.parameters())
    with torch.no_grad():
        # The conv stacks on a small input, the heads on a random pool5 vector: together
        # the same net at 224 (torchvision's adaptive pool is the identity on 7x7).
        x = torch.randn(1, 3, 32, 32)
        torch.testing.assert_close(ours.forward_features(x), tv.features(x),
                                   rtol=1e-5, atol=1e-5)
        v = torch.randn(2, 512, 7, 7)
        torch.testing.assert_close(ours.forward_head(v), tv.classifier(torch.flatten(v, 1)),
                                   rtol=1e-5, atol=1e-5)
        if arch == "A" and not bn:  # one end-to-end 224 forward
            x = torch.randn(1, 3, 224, 224)
            torch.testing.assert_close(ours(x), tv(x), rtol=1e-4, atol=1e-4)


def test_channels_last_default_survives_load_and_is_equivalent() -> None:
    m = build("B", init="kaiming", **SMALL).eval()
    conv = m.features[m.layer_names["conv2_1"]]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    other = build("B", **SMALL)
    other.load_state_dict(m.state_dict())
    assert other.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(3, 3, 64, 64)
    y = m(x)
    m.memory_format = torch.contiguous_format
    torch.testing.assert_close(m(x), y, rtol=1e-5, atol=1e-5)
    assert m.forward_features(x).is_contiguous()
    assert m.features[0].weight.is_contiguous()


def test_predict_softmax_inference_mode_and_mode_restored() -> None:
    m = build("A", init="kaiming", **SMALL).train()
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    p = m.predict(images)
    assert p.shape == (2, 10) and p.is_inference()
    torch.testing.assert_close(p.sum(1), torch.ones(2))
    assert m.training
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(p, torch.softmax(m(m.preprocess(images)), 1))


def test_input_size_check_points_to_fully_conv() -> None:
    m = build("A", **SMALL)
    with pytest.raises(ValueError, match="to_fully_conv"):
        m(torch.randn(1, 3, 96, 96))


@pytest.mark.parametrize("arch,bn", [("D", False), ("A-LRN", False), ("C", True)])
def test_fully_conv_equals_fc_net_at_crop(arch: str, bn: bool) -> None:
    m = build(arch, batch_norm=bn, init="kaiming", **SMALL).eval()
    fcn = m.to_fully_conv().eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ref = m(x)
        got = fcn(x)
    assert got.shape == (3, 10, 1, 1)
    rel = (got.flatten(1) - ref).abs().max() / ref.abs().max()
    assert rel < 1e-5
    # Same weights, not copies: FC1 is a k x k conv view of the linear weight.
    assert fcn.head[0].weight.shape == (32, 32, 2, 2)
    assert fcn.head[0].weight.data_ptr() == m.classifier[0].weight.data_ptr()
    assert fcn.features is m.features


@pytest.mark.parametrize("h,w,expect", [(64, 64, (1, 1)), (96, 160, (2, 4)),
                                        (100, 130, (2, 3)), (256, 128, (7, 3))])
def test_fully_conv_score_map_size(h: int, w: int, expect: tuple[int, int]) -> None:
    fcn = build("A", **SMALL).to_fully_conv().eval()
    with torch.no_grad():
        out = fcn(torch.randn(2, 3, h, w))
    # Sect. 3.2: H/32 - k + 1 with k = crop / 32 = 2
    assert out.shape == (2, 10, *expect)
    with pytest.raises(ValueError):
        fcn(torch.randn(1, 3, 32, 96))


def _stats(net: nn.Module, kind: type) -> list[tuple[nn.Module, float, float]]:
    return [(m, m.weight.mean().item(), m.weight.std().item())
            for m in net.modules() if isinstance(m, kind)]


def test_init_schemes_statistics() -> None:
    cfg = dict(width=0.25, fc_width=256, crop=64, num_classes=100)
    g = torch.Generator().manual_seed(0)
    net = build("D", init="gaussian", generator=g, **cfg)
    for m, mean, std in _stats(net, nn.Conv2d) + _stats(net, nn.Linear):
        if m.weight.numel() > 5000:
            assert abs(mean) < 2e-3 and abs(std - 0.01) < 1e-3
        assert torch.count_nonzero(m.bias) == 0
    net = build("D", init="gaussian", init_std=LITERAL_INIT_STD, **cfg)
    stds = [s for m, _, s in _stats(net, nn.Linear)]
    assert all(abs(s - 0.1) < 0.01 for s in stds)
    net = build("D", init="kaiming", **cfg)
    for m, _, std in _stats(net, nn.Conv2d):
        if m.weight.numel() > 5000:
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
            assert abs(std / math.sqrt(2 / fan_out) - 1) < 0.1
    for m, _, std in _stats(net, nn.Linear):  # torchvision's scheme: FC layers N(0, 0.01)
        if m.weight.numel() > 5000:
            assert abs(std - 0.01) < 1e-3
    net = build("D", init="glorot", **cfg)
    for m, _, std in _stats(net, nn.Linear):
        bound = math.sqrt(6 / (m.in_features + m.out_features))
        assert abs(std / (bound / math.sqrt(3)) - 1) < 0.1
        assert m.weight.abs().max() <= bound
    bn = build("A", batch_norm=True, **SMALL)
    init_weights(bn, "kaiming")
    for m in bn.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    with pytest.raises(ConfigError, match="unknown init"):
        build("A", init="orthogonal", **SMALL)
    with pytest.raises(ConfigError):
        build("A", init_std=0.0, **SMALL)


def test_gaussian_scaled_keeps_the_full_size_gain_of_every_layer() -> None:
    """SPEC 6b: std = 0.01 x sqrt(full fan-in / fan-in) per layer, with the full fan-in the
    same layer's in the paper's net (width 1, FC 4096, crop 224: fc6 = 512 x 7 x 7), so
    fan-in x std^2 (the layer's gain) is the full-size layer's; at the paper's size it is
    plain N(0, 0.01), draw for draw."""
    from vgg.model import NetShape, fan_ins, scaled_init_stds

    shape = NetShape(arch="E", width=0.25, fc_width=1024, crop=32)
    fans = fan_ins(shape)
    assert fans["conv1_1"] == (27, 27) and fans["conv2_1"] == (16 * 9, 64 * 9)
    assert fans["conv5_4"] == (128 * 9, 512 * 9)
    assert fans["fc6"] == (128, 512 * 7 * 7) and fans["fc7"] == fans["fc8"] == (1024, 4096)
    stds = scaled_init_stds(shape)
    assert len(stds) == 16 + 3
    for name, (n, full) in fans.items():
        assert stds[name] == pytest.approx(0.01 * math.sqrt(full / n))
        assert n * stds[name] ** 2 == pytest.approx(full * 0.01 ** 2)  # the same gain
    assert stds["conv1_1"] == pytest.approx(0.01) and stds["conv3_1"] == pytest.approx(0.02)
    assert stds["fc6"] == pytest.approx(0.14)
    for arch in ("A", "E"):  # the paper's size: every layer exactly N(0, 0.01)
        assert set(scaled_init_stds(NetShape(arch=arch)).values()) == {0.01}
    assert scaled_init_stds(shape, std=0.1)["fc6"] == pytest.approx(1.4)
    # the weights: the same draws as N(0, 0.01), each layer times its factor
    g = dict(width=0.25, fc_width=1024, crop=32, num_classes=10)
    plain = build("E", init="gaussian", generator=torch.Generator().manual_seed(5), **g)
    scaled = build("E", init="gaussian-scaled", generator=torch.Generator().manual_seed(5),
                   **g)
    names = {i: n for n, i in scaled.layer_names.items()} | {
        ("fc", i): n for n, i in (("fc6", 0), ("fc7", 3), ("fc8", 6))}
    seen = 0
    for (key, i), m in [((None, i), m) for i, m in enumerate(scaled.features)] + [
            (("fc", i), m) for i, m in enumerate(scaled.classifier)]:
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        name = names[i if key is None else (key, i)]
        ref = (plain.features if key is None else plain.classifier)[i].weight
        torch.testing.assert_close(m.weight, ref * (stds[name] / 0.01), rtol=1e-5, atol=0)
        assert torch.all(m.bias == 0)
        seen += 1
    assert seen == 19
    big = scaled.classifier[0].weight  # 1024 x 128 draws: the empirical std is the rule's
    assert abs(float(big.std()) / 0.14 - 1) < 0.02
    with pytest.raises(ConfigError, match="'gaussian-scaled' needs a VGG"):
        init_weights(nn.Sequential(nn.Linear(3, 3)), "gaussian-scaled")


def test_generator_makes_init_reproducible() -> None:
    a = build("A", generator=torch.Generator().manual_seed(3), **SMALL)
    b = build("A", generator=torch.Generator().manual_seed(3), **SMALL)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


@pytest.mark.parametrize("target", ["B", "C", "D", "E"])
def test_init_from_copies_first_four_convs_and_fcs(target: str) -> None:
    a = build("A", init="kaiming", **SMALL)
    deep = build(target, init="gaussian", **SMALL)
    before = {k: v.clone() for k, v in deep.state_dict().items()}
    copied = init_from(deep, a)
    assert copied == ["conv1_1", "conv2_1", "conv3_1", "conv3_2", "fc6", "fc7", "fc8"]
    for name in copied[:4]:
        src = a.features[a.layer_names[name]]
        dst = deep.features[deep.layer_names[name]]
        assert torch.equal(src.weight, dst.weight) and torch.equal(src.bias, dst.bias)
    for i in (0, 3, 6):
        assert torch.equal(a.classifier[i].weight, deep.classifier[i].weight)
    # Everything else untouched.
    idx = deep.layer_names["conv1_2"]
    assert torch.equal(deep.features[idx].weight, before[f"features.{idx}.weight"])


def test_init_from_refuses_mismatched_shapes() -> None:
    a = build("A", **SMALL)
    wider = build("D", **{**SMALL, "width": 1 / 8})
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    with pytest.raises(ConfigError, match="conv1_1"):
        init_from(wider, a)
    # Checked before anything is copied.
    assert all(torch.equal(v, before[k]) for k, v in wider.state_dict().items())
    with pytest.raises(ConfigError, match="fc6"):
        init_from(build("D", **{**SMALL, "fc_width": 64}), a)
    with pytest.raises(ConfigError, match="conv3_2"):
        init_from(build("B-5x5", **SMALL), a)


def test_reset_classifier() -> None:
    m = build("D", init="kaiming", **SMALL)
    fc6 = m.classifier[0].weight.clone()
    m.reset_classifier(7, classes=list("abcdefg"))
    assert m.config.num_classes == 7 and m.classes == list("abcdefg")
    assert m.classifier[6].out_features == 7 and torch.count_nonzero(m.classifier[6].bias) == 0
    assert torch.equal(m.classifier[0].weight, fc6)
    assert m.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 7)
    assert m.to_fully_conv().eval()(torch.randn(1, 3, 96, 96)).shape == (1, 7, 2, 2)
    with pytest.raises(ConfigError):
        m.reset_classifier(3, classes=["a"])
    with pytest.raises(ConfigError):
        build("A", classes=["x", "y"], num_classes=3, **{k: v for k, v in SMALL.items()
                                                          if k != "num_classes"})


def test_extract_named_activations() -> None:
    m = build("D", init="kaiming", **SMALL).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = m.extract(x, ["relu1_2", "relu3_3", "pool5", "relu5_3", "relu7"])
        assert list(feats) == ["relu1_2", "relu3_3", "pool5", "relu5_3", "relu7"]
        assert feats["relu1_2"].shape == (2, 4, 64, 64)
        assert feats["relu3_3"].shape == (2, 16, 16, 16)
        assert feats["pool5"].shape == (2, 32, 2, 2)
        i = m.layer_names["relu3_3"]
        torch.testing.assert_close(feats["relu3_3"], m.features[: i + 1](x))
        torch.testing.assert_close(feats["relu5_3"], m.features[: m.layer_names["relu5_3"] + 1](x))
        torch.testing.assert_close(feats["relu7"], m.forward_head(m.forward_features(x),
                                                                  pre_logits=True))
        fcn_feats = m.to_fully_conv().eval().extract(torch.randn(1, 3, 96, 96), ["relu7"])
        assert fcn_feats["relu7"].shape == (1, 32, 2, 2)
    # Gradients flow through (perceptual losses).
    x.requires_grad_(True)
    m.extract(x, ["relu2_2"])["relu2_2"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(KeyError, match="relu9_9"):
        m.extract(x, ["relu9_9"])
    assert set(ARCHS["E"]) and "relu5_4" in build("E", **SMALL).layer_names


def test_vgg16_alias_is_build_d() -> None:
    assert vgg16(**SMALL).config == build("D", **SMALL).config


def test_fully_conv_follows_its_net() -> None:
    """The dense net made before .double() / .to() / reset_classifier / load_state_dict
    still computes with the net's current weights (no stale copies, no dtype errors)."""
    m = build("A", init="kaiming", **SMALL).eval()
    fcn = m.to_fully_conv()
    m.double()
    x = torch.randn(1, 3, 96, 96, dtype=torch.float64)
    with torch.no_grad():
        out = fcn(x)
    assert out.dtype == torch.float64 and out.shape == (1, 10, 2, 2)
    crop = x[:, :, :64, :64]
    with torch.no_grad():
        torch.testing.assert_close(fcn(crop).flatten(1), m(crop))
    m.float()
    other = build("A", init="kaiming", generator=torch.Generator().manual_seed(9), **SMALL)
    m.load_state_dict(other.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fcn(crop.float()).flatten(1), other.eval()(crop.float()),
                                   rtol=1e-5, atol=1e-5)
    m.reset_classifier(4)
    with torch.no_grad():
        assert fcn(crop.float()).shape == (1, 4, 1, 1)
    assert fcn.config.num_classes == 4 and count_params(fcn) == count_params(m)


def test_localisation_heads() -> None:
    """Appendix A: the last layer predicts a box (4 numbers) for all classes (SCR) or per
    class (PCR, 4 x K); the fully-convolutional form gives a box map."""
    scr = build("D", head="scr", **SMALL).eval()
    pcr = build("D", head="pcr", **SMALL).eval()
    assert scr.classifier[6].out_features == 4 and pcr.classifier[6].out_features == 40
    assert scr.config.out_features == 4 and pcr.config.num_classes == 10
    with torch.no_grad():
        assert pcr.to_fully_conv()(torch.randn(1, 3, 96, 128)).shape == (1, 40, 2, 3)
    with pytest.raises(ConfigError, match="localisation net"):
        pcr.predict(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="head"):
        VGGConfig(head="boxes")
