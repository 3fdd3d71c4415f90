"""Dense application at a finer output stride (SPEC 6b, issue 19): ``to_fully_conv(stride)``
removes the stride of the last pools and dilates the later layers. Its exact properties:
the positions on the 32-pixel grid are the stride-32 map's; a position at offset (dy, dx)
whose receptive field lies inside the image is the stride-32 map of the image without its
first dy rows and dx columns; stride 32 is today's net bit for bit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vgg.errors import ConfigError
from vgg.localize import decode, shift_boxes
from vgg.model import (DENSE_STRIDES, VGG, build, default_dense_stride, layer_specs,
                       shift_and_stitch)
from vgg.summary import summarize, total_macs

NETS = [("A", False), ("A", True), ("A-LRN", False), ("B-5x5", False)]


def small_net(arch: str = "A", bn: bool = False, crop: int = 32, head: str = "classes",
              seed: int = 0) -> VGG:
    """A float64 net in eval mode with O(1) activations (Glorot init; BN with random
    running statistics and affine parameters, so eval-mode BN is not the identity)."""
    g = torch.Generator().manual_seed(seed)
    m = build(arch, batch_norm=bn, width=1 / 16, fc_width=16, crop=crop, num_classes=5,
              init="glorot", generator=g, head=head)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2, generator=g)
                mod.running_var.uniform_(0.5, 2.0, generator=g)
                mod.weight.uniform_(0.5, 1.5, generator=g)
                mod.bias.uniform_(-0.2, 0.2, generator=g)
            if isinstance(mod, nn.Linear):
                mod.bias.uniform_(-0.1, 0.1, generator=g)
    return m.double().eval()


def image(h: int, w: int, n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, h, w, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(seed))


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-9, atol=1e-12)


def receptive_field(m: VGG) -> tuple[int, int]:
    """(left, size) of a stride-32 score position's receptive field: position i sees input
    rows [32 i - left, 32 i - left + size)."""
    size, left, step = 1, 0, 1
    for s in layer_specs(m.config):
        if s.kind == "conv":
            size += (s.kernel - 1) * step
            left += s.kernel // 2 * step
        elif s.kind == "pool":
            size += step
            step *= 2
    return left, size + (m.config.fc_kernel - 1) * step


# ------------------------------------------------------------------------ default stride

@pytest.mark.parametrize("crop,stride", [(32, 4), (64, 8), (96, 8), (128, 16), (160, 16),
                                         (192, 16), (224, 32), (256, 32), (448, 32),
                                         (8192, 32)])
def test_default_dense_stride_keeps_about_seven_positions_per_window(crop: int,
                                                                     stride: int) -> None:
    assert default_dense_stride(crop) == stride
    # the largest divisor of 32 not above crop / 7, never above 32
    assert stride * 7 <= crop and (stride == 32 or 2 * stride * 7 > crop)


@pytest.mark.parametrize("bad", [0, 31, -32, 1.5, "64", True])
def test_default_dense_stride_refuses_bad_crops(bad: object) -> None:
    with pytest.raises(ConfigError, match="crop"):
        default_dense_stride(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, 3, 12, 64, -4, 4.0, True, "8", None])
def test_bad_strides_refused_naming_value_and_choices(bad: object) -> None:
    m = small_net()
    with pytest.raises(ConfigError, match=r"dense_stride.*1, 2, 4, 8, 16, 32.*got") as e:
        m.to_fully_conv(bad)  # type: ignore[arg-type]
    assert repr(bad) in str(e.value)


# ------------------------------------------------------------------------ stride 32

@pytest.mark.parametrize("arch,bn", NETS)
def test_stride_32_is_todays_map_bit_for_bit(arch: str, bn: bool) -> None:
    m = small_net(arch, bn).float()
    x = image(45, 71).float()
    # today's dense net written out: the plain stack, FC1 as a k x k conv, FC2/FC3 1x1
    cls = m.classifier
    with torch.no_grad():
        f = m.features(x.contiguous(memory_format=torch.channels_last))
        w1 = cls[0].weight
        y = torch.relu(nn.functional.conv2d(f, w1.view(w1.shape[0], -1, 1, 1), cls[0].bias))
        y = torch.relu(nn.functional.conv2d(y, cls[3].weight[..., None, None], cls[3].bias))
        ref = nn.functional.conv2d(y, cls[6].weight[..., None, None], cls[6].bias)
        for fcn in (m.to_fully_conv(), m.to_fully_conv(32), m.to_fully_conv(stride=32)):
            assert fcn.stride == 32 and fcn.atrous is None
            assert torch.equal(fcn(x), ref)


# ------------------------------------------------------------------------ exact properties

@pytest.mark.parametrize("arch,bn", NETS)
@pytest.mark.parametrize("crop", [32, 64, 96])
def test_grid_positions_equal_stride_32_map(arch: str, bn: bool, crop: int) -> None:
    if arch == "B-5x5" and crop > 32:
        pytest.skip("one crop is enough for the 5x5 net")
    m = small_net(arch, bn, crop)
    x = image(crop + 13, crop + 39)  # 45 x 71 at crop 32: not multiples of 32
    with torch.no_grad():
        ref = m.to_fully_conv()(x)
        for s in (16, 8, 4, 2):
            r = 32 // s
            dense = m.to_fully_conv(s)(x)
            assert dense.shape[-2:] == m.to_fully_conv(s).map_size(*x.shape[-2:])
            assert close(dense[..., ::r, ::r], ref), (s, dense.shape, ref.shape)
            # the positions between the grid are new ones, not copies of the grid's
            assert not torch.allclose(dense[..., :, 1], dense[..., :, 0])


def inside(m: VGG, length: int) -> range:
    """The stride-32 positions along an input side of ``length`` pixels whose receptive
    field lies inside it."""
    left, rf = receptive_field(m)
    return range(-(-left // 32), (length - rf + left) // 32 + 1)


@pytest.mark.parametrize("arch,bn,crop,mirror", [
    ("A", False, 32, False), ("A", True, 64, False), ("A", True, 32, True),
    ("A-LRN", False, 32, True), ("B-5x5", False, 32, False)])
def test_offset_positions_equal_map_of_shifted_image(arch: str, bn: bool, crop: int,
                                                     mirror: bool) -> None:
    """Position (dy/s + 32 i / s, dx/s + 32 j / s) of the stride-s map is position (i, j) of
    the stride-32 map of the image without its first dy rows and dx columns, where that
    position's receptive field lies inside the shifted image (elsewhere the shifted image
    is zero-padded where the dense map sees real pixels). ``mirror``: the same for the
    flipped image, whose first columns are the original's last."""
    m = small_net(arch, bn, crop)
    left, rf = receptive_field(m)
    base = image(left + rf + 32 + 5, left + rf + 64 + 7, n=1)  # not multiples of 32
    x = base.flip(3) if mirror else base
    H, W = x.shape[-2:]
    offsets = {16: [(0, 0), (0, 16), (16, 0), (16, 16)],
               8: [(0, 8), (8, 0), (16, 24), (24, 24)],
               4: [(4, 0), (12, 28), (28, 28), (20, 8)]}
    with torch.no_grad():
        for s, offs in offsets.items():
            r = 32 // s
            dense = m.to_fully_conv(s)(x)
            for dy, dx in offs:
                shifted = base[..., dy:, :W - dx].flip(3) if mirror else base[..., dy:, dx:]
                ref = m.to_fully_conv()(shifted)
                ii, jj = inside(m, H - dy), inside(m, W - dx)
                assert len(ii) and len(jj), (s, dy, dx)  # the test compares something
                got = dense[:, :, dy // s + r * ii.start:dy // s + r * ii.stop:r,
                            dx // s + r * jj.start:dx // s + r * jj.stop:r]
                assert close(got, ref[:, :, ii.start:ii.stop, jj.start:jj.stop]), (s, dy, dx)
                if dy and dx:
                    # at the top-left border the dense map sees the real rows above;
                    # the shifted image has zero padding there
                    assert not torch.allclose(dense[:, :, dy // s, dx // s], ref[:, :, 0, 0])


@pytest.mark.parametrize("arch,bn", NETS)
def test_shift_and_stitch_gives_the_same_map(arch: str, bn: bool) -> None:
    """OverFeat's offset max-pooling at each of the last pools, interleaved, equals the a
    trous map at every position, border positions included."""
    m = small_net(arch, bn)
    x = image(45, 71)
    with torch.no_grad():
        for s in (32, 16, 8, 4, 1):
            assert close(shift_and_stitch(m, x, s), m.to_fully_conv(s)(x)), s


def test_mirror_of_dense_posteriors_uses_the_flipped_images_own_grid() -> None:
    m = small_net("A", True)
    x = image(45, 71)
    with torch.no_grad():
        fcn = m.to_fully_conv(4)
        flipped = fcn(x.flip(3))
        # its grid positions are the stride-32 map of the flipped image...
        assert close(flipped[..., ::8, ::8], m.to_fully_conv()(x.flip(3)))
        # ...not the mirror of the original's map (the windows are anchored elsewhere)
        assert flipped.shape == fcn(x).shape
        assert not torch.allclose(flipped, fcn(x).flip(3))


@pytest.mark.parametrize("h,w", [(32, 32), (33, 63), (45, 71), (64, 96), (95, 33)])
@pytest.mark.parametrize("crop", [32, 64])
def test_map_size_formula(h: int, w: int, crop: int) -> None:
    if min(h, w) < crop:
        return
    m = small_net("A", crop=crop)
    with torch.no_grad():
        for s in DENSE_STRIDES:
            fcn = m.to_fully_conv(s)
            got = fcn(image(h, w, n=1)).shape[-2:]
            assert got == fcn.map_size(h, w) == (h // s - crop // s + 1, w // s - crop // s + 1)
            # the last position's window ends inside the image, one more would not
            hh, ww = got
            x0, y0, side = fcn.window(hh - 1, ww - 1)
            assert (x0 + side <= w < x0 + s + side) and (y0 + side <= h < y0 + s + side)
    with pytest.raises(ValueError, match=">= 32|>= 64"):
        m.to_fully_conv(4)(image(crop - 1, 100, n=1))


# ------------------------------------------------------------------------ features, windows

@pytest.mark.parametrize("arch,bn", [("A", True), ("A-LRN", False)])
def test_extract_follows_the_stride(arch: str, bn: bool) -> None:
    m = small_net(arch, bn)
    x = image(45, 71)
    names = list(m.layer_names) + ["fc6", "relu6", "relu7", "fc8"]
    with torch.no_grad():
        plain = m.to_fully_conv().extract(x, names)
        for s in (16, 4):
            fcn = m.to_fully_conv(s)
            dense = fcn.extract(x, names)
            assert close(dense["fc8"], fcn(x))
            assert close(fcn.forward_head(fcn.forward_features(x), pre_logits=True),
                         dense["relu7"])
            for name in names:
                pools = sum(1 for sp in layer_specs(m.config)[:m.layer_names[name] + 1]
                            if sp.kind == "pool") if name in m.layer_names else 5
                assert fcn.layer_stride(name) == min(2 ** pools, s)
                q = 2 ** pools // fcn.layer_stride(name)  # plain positions every q-th
                if q == 1:  # layers before the first stride-1 pool: the same computation
                    assert torch.equal(dense[name], plain[name]), name
                else:
                    assert close(dense[name][..., ::q, ::q], plain[name]), (s, name)
                    assert dense[name].shape[-1] > plain[name].shape[-1]


@pytest.mark.parametrize("crop", [32, 64])
def test_summary_shapes_and_macs_at_a_finer_stride(crop: int) -> None:
    m = small_net("A", True, crop)
    h, w = crop + 13, crop + 39
    with torch.no_grad():
        for s in (32, 16, 8, 4):
            rows = {r.name: r for r in summarize(m.config, (h, w), True, dense_stride=s)}
            got = m.to_fully_conv(s).extract(image(h, w, n=1), list(m.layer_names) + ["fc8"])
            for name, t in got.items():
                assert rows[name].out_shape == tuple(t.shape[1:]), (s, name)
    cfg = m.config
    # finer strides cost more, and exactly nothing more at stride 32
    macs = [total_macs(cfg, (h, w), True, dense_stride=s) for s in (32, 16, 8, 4)]
    assert macs == sorted(macs) and macs[0] == total_macs(cfg, (h, w), True)
    with pytest.raises(ConfigError, match="dense_stride"):
        summarize(cfg, (h, w), True, dense_stride=3)
    with pytest.raises(ValueError, match="fully_conv"):
        summarize(cfg, None, False, dense_stride=16)


def test_windows_and_box_map_decoded_at_each_offset() -> None:
    """An SCR localisation net's box map at stride 8, decoded with each position's own
    window, gives the boxes the stride-32 map of the shifted image gives, moved back by the
    shift (Appendix A boxes at a finer stride)."""
    m = small_net("A", head="scr")
    left, rf = receptive_field(m)
    x = image(left + rf + 40, left + rf + 45, n=1)
    fcn = m.to_fully_conv(8)
    assert fcn.window(2, 3) == (24, 16, 32)
    with torch.no_grad():
        bmap = fcn(x)                                   # (1, 4, h, w)
        h, w = bmap.shape[-2:]
        wins = fcn.windows(h, w)
        assert wins.dtype == torch.float64 and wins.shape == (h * w, 3)
        assert wins[w + 2].tolist() == [16.0, 8.0, 32.0]  # (i, j) = (1, 2), row-major
        boxes = decode(bmap[0].permute(1, 2, 0).reshape(-1, 4), wins).view(h, w, 4)
        for dy, dx in [(0, 0), (8, 16), (24, 8)]:
            ref_map = m.to_fully_conv()(x[..., dy:, dx:])
            hr, wr = ref_map.shape[-2:]
            ref = shift_boxes(decode(ref_map[0].permute(1, 2, 0).reshape(-1, 4),
                                     m.to_fully_conv().windows(hr, wr)), dx, dy)
            i, j = 2, 2  # receptive field inside the shifted image
            assert i in inside(m, x.shape[-2] - dy) and j in inside(m, x.shape[-1] - dx)
            assert torch.allclose(boxes[dy // 8 + 4 * i, dx // 8 + 4 * j],
                                  ref.view(hr, wr, 4)[i, j], rtol=1e-9, atol=1e-9)


def test_dense_net_follows_its_net() -> None:
    m = small_net("A", True)
    fcn = m.to_fully_conv(8)
    x = image(45, 71)
    other = small_net("A", True, seed=5)
    with torch.no_grad():
        before = fcn(x)
        m.load_state_dict(other.state_dict())
        assert close(fcn(x), other.to_fully_conv(8)(x)) and not close(fcn(x), before)
        m.reset_classifier(3)
        m.double()
        assert fcn(x).shape[1] == 3
        m.float()
        assert fcn(x.float()).dtype == torch.float32
    fcn.eval()
    assert "stride=8" in repr(fcn)
    assert fcn.predict(torch.rand(1, 3, 45, 71) * 255).shape == (1, 3, *fcn.map_size(45, 71))


def test_resolve_dense_stride_auto_and_given() -> None:
    from vgg.model import resolve_dense_stride

    assert resolve_dense_stride(None, 32) == 4 and resolve_dense_stride("auto", 64) == 8
    assert resolve_dense_stride(16, 32) == 16
    with pytest.raises(ConfigError, match="dense_stride"):
        resolve_dense_stride(3, 32)


def test_dense_stride_flag() -> None:
    import argparse

    from vgg.cli import Parser, add_dense_stride_flag

    p = Parser(prog="x")
    add_dense_stride_flag(p)
    assert p.parse_args([]).dense_stride is None
    assert p.parse_args(["--dense-stride", "auto"]).dense_stride is None
    assert p.parse_args(["--dense-stride", "8"]).dense_stride == 8
    for bad in ("3", "64", "x", "0"):
        with pytest.raises(SystemExit) as e:
            p.parse_args(["--dense-stride", bad])
        assert e.value.code == 2
    assert isinstance(p, argparse.ArgumentParser)
