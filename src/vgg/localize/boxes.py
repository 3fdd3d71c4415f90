"""Box geometry for localisation (Appendix A) on torch tensors.

Boxes are ``(N, 4)`` float tensors in ``xyxy`` order, 0-based pixel-EDGE coordinates:
``(x0, y0, x1, y1)`` with ``x1``/``y1`` exclusive, so a box covering pixel columns 3..5
is ``x0 = 3, x1 = 6`` and its width is ``x1 - x0``. This is the convention of
``vgg.data.folders.Box`` (the VOC reader maps ``xmin - 1, ymin - 1, xmax, ymax``). In edge
coordinates every image rescale, crop and mirror is an exact affine map of the box, which
is what ``scale_boxes`` / ``shift_boxes`` / ``hflip_boxes`` implement. Any float dtype and
device; results keep the input's.

The regressor of Appendix A predicts ``(centre x, centre y, width, height)``; ``encode`` /
``decode`` convert between image-pixel boxes and those parameters relative to a square
window ``(x0, y0, side)`` (the receptive field of one dense-evaluation position, or the
crop of the simple protocol).

The box head's outputs (``class_params``): an SCR net has 4, the box of every class; a PCR
net has 4 per class, outputs ``4 c .. 4 c + 3`` being class ``c``'s box.
"""

from __future__ import annotations

import torch
from torch import Tensor


def box_area(b: Tensor) -> Tensor:
    """(..., 4) xyxy -> (...) area in pixels^2; inverted boxes count as 0."""
    return (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)


def _pairwise_intersection(a: Tensor, b: Tensor) -> Tensor:
    """(N, 4), (M, 4) -> (N, M) intersection areas."""
    w = torch.minimum(a[:, None, 2], b[None, :, 2]) - torch.maximum(a[:, None, 0], b[None, :, 0])
    h = torch.minimum(a[:, None, 3], b[None, :, 3]) - torch.maximum(a[:, None, 1], b[None, :, 1])
    return w.clamp(min=0) * h.clamp(min=0)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union, (N, 4) x (M, 4) -> (N, M) in [0, 1].

    A pair whose union is empty (two zero-area boxes) gets 0, never NaN: the intersection
    is then 0 too, so dividing by a union clamped to the dtype's smallest normal is exact
    elsewhere and 0 there."""
    inter = _pairwise_intersection(a, b)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter / union.clamp(min=torch.finfo(union.dtype).tiny)


def xyxy_to_cxcywh(b: Tensor) -> Tensor:
    """(..., 4) ``(x0, y0, x1, y1)`` -> (..., 4) ``(centre x, centre y, width, height)``."""
    x0, y0, x1, y1 = b.unbind(-1)
    return torch.stack(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), dim=-1)


def cxcywh_to_xyxy(b: Tensor) -> Tensor:
    """(..., 4) ``(centre x, centre y, width, height)`` -> (..., 4) ``(x0, y0, x1, y1)``."""
    cx, cy, w, h = b.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def _window_parts(windows: Tensor, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(N, 3) or (3,) ``(x0, y0, side)`` -> three (N, 1)-broadcastable columns."""
    w = torch.as_tensor(windows, dtype=like.dtype, device=like.device)
    if w.shape[-1:] != (3,) or w.dim() > 2:
        raise ValueError(f"windows must be (N, 3) or (3,) = (x0, y0, side), got {tuple(w.shape)}")
    w = w.reshape(-1, 3)
    return w[:, 0:1], w[:, 1:2], w[:, 2:3]


def encode(boxes: Tensor, windows: Tensor) -> Tensor:
    """Appendix A regression targets: (N, 4) xyxy pixel boxes -> (N, 4) ``(cx, cy, w, h)``
    in units of the window side, measured from the window's top-left corner.

    ``windows`` is (N, 3) or (3,) ``(x0, y0, side)`` in pixels. A box exactly filling its
    window encodes to ``(0.5, 0.5, 1, 1)``; boxes reaching beyond the window give values
    outside [0, 1] (the object is rarely inside one receptive field)."""
    x0, y0, side = _window_parts(windows, boxes)
    c = xyxy_to_cxcywh(boxes)
    return torch.cat(((c[:, 0:1] - x0) / side, (c[:, 1:2] - y0) / side, c[:, 2:4] / side), dim=1)


def decode(params: Tensor, windows: Tensor) -> Tensor:
    """Inverse of ``encode``: (N, 4) ``(cx, cy, w, h)`` in window units -> (N, 4) xyxy
    pixel boxes; ``windows`` (N, 3) or (3,) ``(x0, y0, side)``."""
    x0, y0, side = _window_parts(windows, params)
    c = torch.cat((params[:, 0:1] * side + x0, params[:, 1:2] * side + y0,
                   params[:, 2:4] * side), dim=1)
    return cxcywh_to_xyxy(c)


def scale_boxes(b: Tensor, sx: float, sy: float) -> Tensor:
    """Boxes of an image resized by factors ``sx`` (width) and ``sy`` (height); the
    isotropic rescale of Sect. 3.1 (smallest side to S) is ``sx == sy == S / min(w, h)``."""
    return b * b.new_tensor([sx, sy, sx, sy])


def shift_boxes(b: Tensor, dx: float, dy: float) -> Tensor:
    """Boxes translated by ``(dx, dy)`` pixels; a crop whose top-left corner is
    ``(x0, y0)`` moves boxes by ``(-x0, -y0)`` (then ``clip_boxes`` to the crop size)."""
    return b + b.new_tensor([dx, dy, dx, dy])


def hflip_boxes(b: Tensor, width: float) -> Tensor:
    """Boxes of the horizontally mirrored image of ``width`` pixels (edge coordinates
    reflect about ``width / 2``: ``x0' = width - x1``, ``x1' = width - x0``)."""
    return torch.stack((width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]), dim=1)


def clip_boxes(b: Tensor, width: float, height: float) -> Tensor:
    """Boxes clamped to the image ``[0, width] x [0, height]`` (a box wholly outside
    collapses to zero area on the border)."""
    x = b[:, 0::2].clamp(min=0, max=width)
    y = b[:, 1::2].clamp(min=0, max=height)
    return torch.stack((x[:, 0], y[:, 0], x[:, 1], y[:, 1]), dim=1)


def intersection_area(b: Tensor, window: Tensor) -> Tensor:
    """(N, 4) boxes, (4,) xyxy window -> (N,) area of each box inside the window."""
    w = torch.as_tensor(window, dtype=b.dtype, device=b.device).reshape(1, 4)
    return _pairwise_intersection(b, w)[:, 0]


def visible_fraction(b: Tensor, window: Tensor) -> Tensor:
    """(N, 4) boxes, (4,) xyxy window -> (N,) fraction in [0, 1] of each box's area inside
    the window, e.g. how much of an object a crop keeps; 0 for zero-area boxes."""
    area = box_area(b)
    return intersection_area(b, window) / area.clamp(min=torch.finfo(area.dtype).tiny)


def class_params(out: Tensor, head: str, classes: Tensor | None = None) -> Tensor:
    """(N, 4 or 4K, ...) box-head outputs (the FC net's, or the dense map's) -> (N, 4, ...)
    the box parameters of each row's class: PCR, outputs ``4 c .. 4 c + 3`` of the class
    ``c = classes[n]`` ((N,) int64); SCR, the only 4 (``classes`` unused)."""
    if head == "scr":
        return out[:, :4]
    if classes is None:
        raise ValueError("a PCR head needs the class of each row")
    idx = (4 * classes)[:, None] + torch.arange(4, device=out.device)[None]   # (N, 4)
    idx = idx.reshape(idx.shape + (1,) * (out.dim() - 2)).expand(-1, -1, *out.shape[2:])
    return out.gather(1, idx)
