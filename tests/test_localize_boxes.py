import numpy as np
import pytest
import torch

from vgg.localize import (box_area, box_iou, class_params, clip_boxes, cxcywh_to_xyxy, decode,
                          encode, hflip_boxes, intersection_area, scale_boxes, shift_boxes,
                          visible_fraction, xyxy_to_cxcywh)


def t(*rows, dtype=torch.float32):
    return torch.tensor(rows, dtype=dtype)


def test_iou_hand_cases() -> None:
    a = t([0, 0, 10, 10])
    b = t([0, 0, 10, 10], [20, 20, 30, 30], [5, 0, 15, 10], [2, 2, 4, 4], [10, 0, 20, 10])
    iou = box_iou(a, b)
    assert iou.shape == (1, 5)
    # identical, disjoint, half overlap (50 / 150), contained (4 / 100), touching edges
    torch.testing.assert_close(iou[0], t(1.0, 0.0, 1 / 3, 0.04, 0.0))
    torch.testing.assert_close(box_iou(b, a)[:, 0], iou[0])  # symmetric


def test_iou_zero_area_is_zero_not_nan() -> None:
    z = t([3, 3, 3, 3], [5, 5, 5, 9])
    iou = box_iou(z, torch.cat([z, t([0, 0, 10, 10])]))
    assert not torch.isnan(iou).any()
    assert (iou == 0).all()
    assert box_area(t([4, 4, 2, 6])).item() == 0  # inverted box: no negative area


def test_iou_shape_empty_and_float64() -> None:
    assert box_iou(torch.zeros(0, 4), t([0, 0, 1, 1])).shape == (0, 1)
    a = torch.rand(6, 4, dtype=torch.float64)
    a[:, 2:] += a[:, :2]
    iou = box_iou(a, a)
    assert iou.dtype == torch.float64 and iou.shape == (6, 6)
    torch.testing.assert_close(iou.diagonal(), torch.ones(6, dtype=torch.float64))


def test_cxcywh_round_trip() -> None:
    b = t([0, 0, 10, 20], [-5.5, 3, 7.25, 4])
    c = xyxy_to_cxcywh(b)
    torch.testing.assert_close(c, t([5, 10, 10, 20], [0.875, 3.5, 12.75, 1]))
    torch.testing.assert_close(cxcywh_to_xyxy(c), b)
    r = torch.randn(3, 5, 4, dtype=torch.float64)  # any leading shape
    torch.testing.assert_close(xyxy_to_cxcywh(cxcywh_to_xyxy(r)), r)


def test_encode_fills_window_and_round_trips() -> None:
    window = t(16, 32, 64)  # (x0, y0, side)
    full = t([16, 32, 80, 96])
    torch.testing.assert_close(encode(full, window), t([0.5, 0.5, 1, 1]))
    # boxes reaching beyond the window: parameters outside [0, 1]
    boxes = t([0, 0, 200, 150], [70, 90, 75, 95], [-30, 40, 10, 300])
    windows = t([16, 32, 64], [0, 0, 32], [100, 100, 16])
    p = encode(boxes, windows)
    assert (p < 0).any() and (p > 1).any()
    torch.testing.assert_close(decode(p, windows), boxes)
    torch.testing.assert_close(decode(encode(boxes, window), window), boxes)


def test_encode_rejects_bad_windows() -> None:
    with pytest.raises(ValueError, match="windows"):
        encode(t([0, 0, 1, 1]), t([0, 0, 1, 1]))


def rect_image(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    img = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = 1  # pixel-edge box: columns x0..x1-1
    return img


def extent(img: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(img)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def test_rescale_crop_flip_chain_moves_box_with_pixels() -> None:
    h, w, box = 30, 40, (7, 5, 19, 23)
    img = rect_image(h, w, box)
    b = t(list(map(float, box)))
    # 2x nearest-neighbour upscale (integer scaling is exact for pixel-edge boxes)
    img = img.repeat(2, axis=0).repeat(2, axis=1)
    b = scale_boxes(b, 2.0, 2.0)
    assert extent(img) == b[0].tolist()
    # crop with top-left (16, 4), 32 x 40, that cuts the rectangle on the left and bottom
    cx, cy, cw, ch = 16, 4, 32, 40
    img = img[cy:cy + ch, cx:cx + cw]
    b = clip_boxes(shift_boxes(b, -cx, -cy), cw, ch)
    assert extent(img) == b[0].tolist()
    # horizontal mirror
    img = img[:, ::-1]
    b = hflip_boxes(b, cw)
    assert extent(img) == b[0].tolist()
    # 2x nearest downscale (a subsample; the box has even edges here)
    assert all(v % 2 == 0 for v in b[0].tolist())
    img = img[::2, ::2]
    b = scale_boxes(b, 0.5, 0.5)
    assert extent(img) == b[0].tolist()


def test_anisotropic_scale() -> None:
    torch.testing.assert_close(scale_boxes(t([1, 2, 3, 4]), 2.0, 0.5), t([2, 1, 6, 2]))


def test_hflip_twice_is_identity_and_mirrors() -> None:
    b = torch.rand(8, 4, dtype=torch.float64) * 50
    b[:, 2:] += b[:, :2]
    torch.testing.assert_close(hflip_boxes(hflip_boxes(b, 123.0), 123.0), b)
    torch.testing.assert_close(hflip_boxes(t([0, 1, 10, 5]), 40), t([30, 1, 40, 5]))


def test_clip() -> None:
    b = t([-5, -3, 12, 8], [2, 2, 5, 5], [50, 50, 60, 60])
    torch.testing.assert_close(clip_boxes(b, 10, 6),
                               t([0, 0, 10, 6], [2, 2, 5, 5], [10, 6, 10, 6]))
    assert box_area(clip_boxes(b, 10, 6))[2] == 0  # wholly outside: zero area


def test_visible_fraction_and_intersection() -> None:
    window = t(0, 0, 10, 10)
    b = t([0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [4, 4, 4, 8], [-10, -10, 20, 20])
    torch.testing.assert_close(intersection_area(b, window), t(100, 50, 0, 0, 100))
    torch.testing.assert_close(visible_fraction(b, window), t(1.0, 0.5, 0.0, 0.0, 1 / 9))
    assert visible_fraction(torch.zeros(0, 4), window).shape == (0,)


def test_class_params_pcr_layout_and_scr() -> None:
    """PCR: outputs 4c..4c+3 are class c's box, for the FC net's (N, 4K) outputs and the
    dense (N, 4K, h, w) map alike; SCR: the only 4, whatever the class."""
    out = torch.arange(2 * 12, dtype=torch.float32).reshape(2, 12)   # K = 3 classes
    got = class_params(out, "pcr", torch.tensor([2, 0]))
    torch.testing.assert_close(got, t([8, 9, 10, 11], [12, 13, 14, 15]))
    dense = torch.randn(2, 12, 3, 5)
    got = class_params(dense, "pcr", torch.tensor([1, 1]))
    assert got.shape == (2, 4, 3, 5)
    torch.testing.assert_close(got, dense[:, 4:8])
    torch.testing.assert_close(class_params(dense[:, :4], "scr"), dense[:, :4])
    with pytest.raises(ValueError, match="class of each row"):
        class_params(out, "pcr")
