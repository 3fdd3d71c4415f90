import pytest

from vgg.errors import ConfigError
from vgg.eval import default_scales, parse_scales
from vgg.eval.scales import check_scales, crop_train_scale


def test_paper_rules_at_224() -> None:
    assert default_scales([256, 256]) == [224, 256, 288]
    assert default_scales(384) == [352, 384, 416]
    assert default_scales([256, 512]) == [256, 384, 512]
    assert default_scales([256, 512], multi_scale=False) == [384]
    assert default_scales([256, 256], multi_scale=False) == [256]


def test_missing_train_scale_uses_crop() -> None:
    assert crop_train_scale(224) == 256
    assert default_scales(None) == [224, 256, 288]
    assert crop_train_scale(32) == 37
    # the 32-pixel step scales with the crop: 5 pixels for a 32 crop
    assert default_scales(None, crop=32) == [32, 37, 42]


def test_scales_below_crop_are_raised() -> None:
    assert default_scales([32, 32], crop=32) == [32, 37]  # 27 -> 32
    assert default_scales([20, 40], crop=32, multi_scale=False) == [32]


def test_bad_train_scale() -> None:
    with pytest.raises(ConfigError, match="s_min <= s_max"):
        default_scales([512, 256])


def test_parse_and_check() -> None:
    assert parse_scales("512, 256,384") == [256, 384, 512]
    for bad in ("a,b", "", "0", "-3"):
        with pytest.raises(ConfigError, match="--scales"):
            parse_scales(bad)
    with pytest.raises(ConfigError, match=r"\[200\] smaller than the crop 224 of net"):
        check_scales([200, 256], 224, "net")
