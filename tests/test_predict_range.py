"""``model.predict`` takes RGB in 0..255 whatever the net was trained on: 0..1 floats
(torchvision's ToTensor), already-normalised tensors, 16-bit values and NaN are refused
with a message saying what is expected, and every legitimate 0..255 input still works."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vgg import build
from vgg.errors import InputRangeError, VggError
from vgg.preprocess import Preprocess, check_input_range

SMALL = dict(width=1 / 16, fc_width=32, crop=32, num_classes=4, init="kaiming")


@pytest.fixture
def net():  # noqa: ANN201
    g = torch.Generator().manual_seed(0)
    return build("A", generator=g, **SMALL).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(1))


def test_legitimate_inputs_are_accepted(net, images: torch.Tensor) -> None:  # noqa: ANN001
    p = net.predict(images)
    # floats on the 0..255 scale give the same posteriors, in any float dtype
    torch.testing.assert_close(net.predict(images.float()), p)
    torch.testing.assert_close(net.predict(images.double()), p)
    # bicubic resampling of a 0..255 image overshoots past 0 and 255 at edges: fine
    up = F.interpolate(images.float(), size=(64, 64), mode="bicubic", align_corners=False)
    assert up.min() < 0 or up.max() > 255
    assert net.to_fully_conv().predict(up).shape[:2] == (2, 4)
    assert net.predict(torch.zeros(1, 3, 32, 32)).shape == (1, 4)  # black is black
    assert net.predict(images.to(torch.int64)).shape == (2, 4)


@pytest.mark.parametrize("preprocess", [Preprocess.paper(), Preprocess.torchvision(),
                                        Preprocess.caffe()])
def test_zero_one_floats_are_refused_saying_what_is_expected(
        net, images: torch.Tensor, preprocess: Preprocess) -> None:  # noqa: ANN001
    # The case: a net trained on 0..1 inputs (torchvision's), fed ToTensor()
    # output; every stored preprocessing takes 0..255, so all three refuse it.
    net.preprocess = preprocess
    with pytest.raises(InputRangeError) as e:
        net.predict(images.float() / 255)
    msg = str(e.value)
    assert "expects RGB images in 0..255" in msg and "multiply them by 255" in msg
    assert "values in [0, 1]" in msg and "\n" not in msg
    assert isinstance(e.value, ValueError) and isinstance(e.value, VggError)
    # what the message asks for works and equals the uint8 answer
    torch.testing.assert_close(net.predict(images.float() / 255 * 255), net.predict(images),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make, hint", [
    (lambda x: (x.float() / 255 - 0.45) / 0.225, "normalised already"),
    (lambda x: x.float() - 120.0, "mean subtracted already"),
    (lambda x: x.float() * 257.0, "16-bit pixels"),
    (lambda x: torch.where(x > 128, float("nan"), x.float()), "NaN or inf"),
    (lambda x: x > 128, "torch.bool"),
])
def test_other_wrong_ranges_are_refused(net, images: torch.Tensor, make,  # noqa: ANN001
                                        hint: str) -> None:
    with pytest.raises(InputRangeError, match=hint):
        net.predict(make(images))


def test_the_check_can_be_skipped_and_costs_nothing_for_uint8(net, images: torch.Tensor,
                                                              monkeypatch) -> None:  # noqa: ANN001
    dim = images.float() / 255 * 2  # a really very dark 0..255 image: the user knows
    assert net.predict(dim, check_range=False).shape == (2, 4)
    with pytest.raises(InputRangeError, match="check_range=False"):
        net.predict(dim)
    # uint8 needs no pass over the data
    monkeypatch.setattr(torch, "aminmax", lambda *a, **k: pytest.fail("scanned uint8"))
    check_input_range(images)
    assert net.predict(images).shape == (2, 4)
