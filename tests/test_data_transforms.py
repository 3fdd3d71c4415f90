"""The paper's transforms: geometry equals rescale-then-crop, determinism, colour shift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vgg.data.transforms import (CenterCropTransform, ColourStats, DeviceAugment,
                                 RescaleTransform, TrainTransform, rescale_size,
                                 resize_window)
from vgg.errors import ConfigError
from vgg.preprocess import Preprocess


def _img(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8))
    return small.resize((w, h), Image.Resampling.BICUBIC)


def test_rescale_size_is_isotropic() -> None:
    assert rescale_size(500, 375, 256) == (341, 256)
    assert rescale_size(375, 500, 256) == (256, 341)
    assert rescale_size(100, 100, 32) == (32, 32)
    with pytest.raises(ValueError):
        rescale_size(0, 10, 5)


def test_train_transform_matches_rescale_then_crop(tmp_path: Path) -> None:
    """Resampling only the crop window gives the pixels of a full rescale + crop, up to the
    snapping of the window to whole source pixels (a sub-pixel shift)."""
    img = _img(150, 110)
    img.save(tmp_path / "a.png")
    t = TrainTransform(crop=48, scale=(64, 96), flip=True)
    for seed in range(6):
        out = t(tmp_path / "a.png", np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        s = int(rng.integers(64, 97))
        nw, nh = rescale_size(150, 110, s)
        x0, y0 = int(rng.integers(0, nw - 48 + 1)), int(rng.integers(0, nh - 48 + 1))
        flip = rng.random() < 0.5
        ref = img.resize((nw, nh), Image.Resampling.BILINEAR).crop((x0, y0, x0 + 48, y0 + 48))
        if flip:
            ref = ref.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        ref_t = np.asarray(ref, np.int16).transpose(2, 0, 1)
        assert tuple(out["image"].shape) == (3, 48, 48) and out["image"].dtype == torch.uint8
        assert out["image"].is_contiguous()
        assert np.abs(out["image"].numpy().astype(np.int16) - ref_t).mean() < 1.5
        assert out["alpha"].shape == (3,) and out["alpha"].dtype == torch.float32


def test_resize_window_is_pillows_antialiased_bilinear() -> None:
    img = _img(300, 200)
    for scaled, win in [((150, 100), (10, 20, 74, 84)), ((600, 400), (100, 50, 164, 114)),
                        ((300, 200), (0, 0, 300, 200))]:
        out = resize_window(img, scaled, win).numpy().astype(int)
        f = 300 / scaled[0]
        box = tuple(round(v * f) for v in win)
        ref = img.crop(box).resize((win[2] - win[0], win[3] - win[1]),
                                   Image.Resampling.BILINEAR)
        assert np.abs(out - np.asarray(ref, int).transpose(2, 0, 1)).max() <= 1


def test_train_transform_is_deterministic_per_rng_and_varies(tmp_path: Path) -> None:
    _img(90, 70).save(tmp_path / "a.jpg")
    t = TrainTransform(32, (40, 60), colour_std=0.1)
    a = t(tmp_path / "a.jpg", np.random.default_rng([0, 1, 2]))
    b = t(tmp_path / "a.jpg", np.random.default_rng([0, 1, 2]))
    c = t(tmp_path / "a.jpg", np.random.default_rng([0, 2, 2]))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["alpha"], b["alpha"])
    assert not torch.equal(a["alpha"], c["alpha"])


def test_train_transform_alpha_distribution_and_flip_rate() -> None:
    flip_t = TrainTransform(8, 8, colour_std=0.1)
    plain_t = TrainTransform(8, 8, flip=False, colour_std=0.1)
    img = _img(16, 8)
    alphas, flips = [], 0
    for i in range(400):
        out = flip_t(img, np.random.default_rng(i))
        ref = plain_t(img, np.random.default_rng(i))["image"]  # same window, never flipped
        alphas.append(out["alpha"].numpy())
        if not torch.equal(out["image"], ref):
            assert torch.equal(out["image"], ref.flip(-1))
            flips += 1
    a = np.stack(alphas)
    assert abs(a.std() - 0.1) < 0.01 and abs(a.mean()) < 0.01
    assert 150 < flips < 250


def test_fixed_scale_and_bad_configs() -> None:
    t = TrainTransform(32, 40)
    assert (t.s_min, t.s_max) == (40, 40)
    with pytest.raises(ConfigError):
        TrainTransform(64, (32, 80))
    with pytest.raises(ConfigError):
        TrainTransform(32, (80, 40))
    with pytest.raises(ConfigError):
        CenterCropTransform(30, 32)


def test_rescale_and_center_crop(tmp_path: Path) -> None:
    img = _img(120, 80)
    img.save(tmp_path / "a.png")
    r = RescaleTransform(40)(tmp_path / "a.png")["image"]
    assert tuple(r.shape) == (3, 40, 60)
    c = CenterCropTransform(40, 32)(tmp_path / "a.png")["image"]
    assert tuple(c.shape) == (3, 32, 32)
    # the centre crop is the middle of the rescaled image
    assert np.abs(c.numpy().astype(int) - r[:, 4:36, 14:46].numpy().astype(int)).max() <= 1


def test_colour_stats_roundtrip_and_shift(tmp_path: Path) -> None:
    s = ColourStats.imagenet()
    s.save(tmp_path / "s.json")
    s2 = ColourStats.load(tmp_path / "s.json")
    assert s2 == s
    alpha = np.array([0.1, -0.2, 0.05])
    expect = 255 * sum(alpha[i] * s.eigval[i] * np.array(s.eigvec)[:, i] for i in range(3))
    assert np.allclose(s.shift(alpha), expect)


def test_device_augment_applies_shift_then_preprocess() -> None:
    stats = ColourStats.imagenet()
    pre = Preprocess.paper((100.0, 110.0, 120.0))
    aug = DeviceAugment(pre, stats)
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    alphas = torch.randn(4, 3) * 0.1
    y = aug(x, alphas)
    shift = torch.tensor(stats.shift(alphas.numpy()), dtype=torch.float32)
    ref = x.float() + shift[:, :, None, None] - torch.tensor([100.0, 110.0, 120.0])[:, None, None]
    assert y.dtype == torch.float32 and torch.allclose(y, ref, atol=1e-4)
    assert torch.allclose(aug(x), x.float() - torch.tensor([100.0, 110.0, 120.0])[:, None, None])
    # without stats no shift; channels_last / dtype options
    plain = DeviceAugment(pre, None, channels_last=True, dtype=torch.bfloat16)
    z = plain(x, alphas)
    assert z.dtype == torch.bfloat16 and z.is_contiguous(memory_format=torch.channels_last)
