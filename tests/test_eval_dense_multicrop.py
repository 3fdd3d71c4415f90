import pytest
import torch

from vgg.eval import center_posteriors, dense_posteriors, grid_crops, grid_offsets, \
    multicrop_posteriors
from vgg.eval.dense import score_posteriors

from _eval_util import tiny_net


class Spy(torch.nn.Module):
    """Records every input batch of the wrapped net."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.inputs = net, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        return self.net(x)


def test_dense_equals_centre_crop_at_q_equal_crop() -> None:
    m = tiny_net()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        fc = torch.softmax(m(x), 1)
        dense = dense_posteriors(m.to_fully_conv(), x, flip=False)
        centre = center_posteriors(m, x, 32)
    torch.testing.assert_close(dense, fc, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(centre, fc, atol=1e-5, rtol=1e-5)


def test_flip_averages_image_and_mirror() -> None:
    fcn = tiny_net().to_fully_conv()
    x = torch.randn(2, 3, 40, 56)
    with torch.inference_mode():
        a = dense_posteriors(fcn, x, flip=False)
        b = dense_posteriors(fcn, x.flip(3), flip=False)
        both = dense_posteriors(fcn, x, flip=True)
    torch.testing.assert_close(both, 0.5 * (a + b))
    assert not torch.allclose(a, b)
    torch.testing.assert_close(both.sum(1), torch.ones(2))


def test_score_map_is_averaged_before_softmax() -> None:
    # Sect. 3.2: sum-pool the class score map, then soft-max. On a 1x3 map with class
    # scores [6, 0, 0] and [0, 1, 1] the two orders differ: 0.79 vs 0.51 for class 0.
    s = torch.tensor([[[[6.0, 0.0, 0.0]], [[0.0, 1.0, 1.0]]]])  # (1, 2, 1, 3)
    got = score_posteriors(s)
    torch.testing.assert_close(got, torch.softmax(torch.tensor([[2.0, 2.0 / 3]]), 1))
    assert got[0, 0].item() == pytest.approx(0.7914, abs=1e-4)
    soft_then_mean = torch.softmax(s, 1).mean((2, 3))
    assert soft_then_mean[0, 0].item() == pytest.approx(0.5118, abs=1e-4)


def test_dense_on_bigger_image_uses_the_whole_score_map() -> None:
    fcn = tiny_net().to_fully_conv()
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        smap = fcn(x)
        assert smap.shape[-2:] == (2, 3)
        torch.testing.assert_close(dense_posteriors(fcn, x, flip=False),
                                   torch.softmax(smap.mean((2, 3)), 1))


def test_grid_offsets_cover_both_borders() -> None:
    assert grid_offsets(256, 224) == [0, 8, 16, 24, 32]
    assert grid_offsets(40, 32) == [0, 2, 4, 6, 8]
    assert grid_offsets(32, 32) == [0] * 5
    assert grid_offsets(50, 32, n=1) == [9]
    with pytest.raises(ValueError, match="smaller than the crop"):
        grid_offsets(31, 32)


def test_grid_crops_positions_incl_corners() -> None:
    x = torch.arange(2 * 3 * 40 * 48, dtype=torch.float32).view(2, 3, 40, 48)
    c = grid_crops(x, 32)
    assert c.shape == (2, 25, 3, 32, 32)
    torch.testing.assert_close(c[:, 0], x[..., :32, :32])      # top-left
    torch.testing.assert_close(c[:, 4], x[..., :32, 16:])      # top-right
    torch.testing.assert_close(c[:, 20], x[..., 8:, :32])      # bottom-left
    torch.testing.assert_close(c[:, 24], x[..., 8:, 16:])      # bottom-right
    torch.testing.assert_close(c[:, 12], x[..., 4:36, 8:40])   # centre


def test_multicrop_runs_50_crops_and_averages() -> None:
    m = tiny_net()
    spy = Spy(m)
    x = torch.randn(2, 3, 40, 48)
    with torch.inference_mode():
        p = multicrop_posteriors(spy, x, 32, flip=True, chunk=7)
    crops = torch.cat(spy.inputs)
    assert crops.shape == (2 * 50, 3, 32, 32)
    grid = grid_crops(x, 32)  # (2, 25, ...)
    # order: [unflipped (N*25), flipped (N*25)], image-major inside each half
    torch.testing.assert_close(crops[:50].view(2, 25, 3, 32, 32), grid)
    torch.testing.assert_close(crops[50:].view(2, 25, 3, 32, 32), grid.flip(-1))
    with torch.inference_mode():
        expect = torch.softmax(m(grid.flatten(0, 1)), 1).view(2, 25, -1)
        expect_f = torch.softmax(m(grid.flip(-1).flatten(0, 1)), 1).view(2, 25, -1)
    torch.testing.assert_close(p, torch.cat([expect, expect_f], 1).mean(1))
    spy.inputs.clear()
    with torch.inference_mode():
        multicrop_posteriors(spy, x, 32, flip=False)
    assert sum(len(i) for i in spy.inputs) == 2 * 25


def test_multicrop_with_fully_conv_net_matches_fc_net() -> None:
    m = tiny_net()
    x = torch.randn(1, 3, 36, 44)
    with torch.inference_mode():
        torch.testing.assert_close(multicrop_posteriors(m, x, 32),
                                   multicrop_posteriors(m.to_fully_conv(), x, 32))

