"""Localisation testing (Appendix A.1-A.2): the simple and full protocols.

``simple_protocol``: the central crop of the image rescaled to Q = S; the box predicted
for the ground-truth class (PCR) or the one box (SCR); correct when its IoU with a
ground-truth box of that class exceeds 0.5 (Table 8).

``full_protocol`` (greedy merging as OverFeat states it, SPEC 5): the localisation net and
the classification net are applied densely (Sect. 3.2) to the whole image at each test
scale Q and to its mirror, at the output stride ``dense_stride`` (default: the net's
default for its crop, SPEC 6b: 4 pixels at crop 32, 32 at crop 224; ``vgg.model``). Every
position of the box map predicts a box (per class for PCR) relative to its receptive
window, the ``crop`` x ``crop`` window at (s j, s i) of the rescaled image
(``VGGFullyConv.windows``), mapped back to image pixels.

- Classes (``class_choice``): "per-scale" (OverFeat, the default): at each scale the k = 5
  classes with the largest maximum over the positions (image and mirror) of the
  classifier's per-position posterior, C_s; the boxes of a class come only from the scales
  that chose it. "image": the 5 classes of the classifier's image-level posterior, at
  every scale (this project's earlier protocol).
- Each box is scored by the classification net's soft-max probability of its class at
  the same position (same crop, same stride: the two maps align; with another crop the
  classifier runs at its own stride and every position gets the image's probability at
  that scale).
- The boxes of each class (from every scale, the mirror, and every localisation net when
  several are fused: Table 10) are merged greedily (``vgg.localize.merge``); each merged
  box carries the summed scores of the windows it holds, and the best-scored merged box is
  the class's box.
- Rating (Appendix A: "rated by the class scores of the classification net"): the
  classes that have a box are ordered by the classifier's image-level posterior, its
  dense evaluation at ``classifier_scales`` (default: the classifier's own multi-scale Q,
  Sect. 3.2), image and mirror; the first five are the guesses. An image is correct at
  top-k when one of its first k guesses has a ground-truth class and IoU > 0.5 with a box
  of that class.

Every result (:class:`.result.LocResult`) also scores two baselines on the same images
with the same classes (:mod:`.scoring`): the whole image as the box, and the mean training
box (as fractions of the image size, stored in the localisation checkpoint) placed at the
centre. Per-image boxes are saved (npz) so that fusion and re-scoring (:mod:`.fusion`)
never rerun a net.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..checkpoint import Checkpoint, require_head
from ..devices import pick_device
from ..data.index import image_ids
from ..data.rescaled import RescaledImages, normalise
from ..errors import ConfigError, DataError
from ..eval.evaluate import EvalNet, as_net, evaluate, scale_label, train_scale_of
from ..eval.metrics import top_classes
from ..eval.multicrop import center_crop
from ..eval.scales import check_scales, default_scales
from ..model import VGG, resolve_dense_stride
from ..precision import resolve_precision
from ..settings import MAX_BATCH, check_float, check_int, check_workers
from ..weights import open_weights as load_checkpoint
from .boxes import class_params, decode, hflip_boxes, scale_boxes
from .data import boxes_tensor
from .fusion import merge_guesses
from .merge import DEFAULT_MERGE_THRESHOLD
from .result import LocResult
from .scoring import TOP_K

log = logging.getLogger(__name__)

PROTOCOLS = ("simple", "full")
CLASS_CHOICES = ("per-scale", "image")
DEFAULT_CLASSES = "per-scale"


# ---------------------------------------------------------------------------- nets

@dataclass
class LocNet:
    """A localisation net with the facts testing needs from its checkpoint."""

    model: VGG
    name: str
    train_scale: list[int] | None = None
    tuned: str = "?"
    mean_box: tuple[float, float] = (0.5, 0.5)

    @property
    def crop(self) -> int:
        return self.model.config.crop

    @property
    def head(self) -> str:
        return self.model.config.head.upper()

    def scale_label(self) -> str:
        return scale_label(self.train_scale, self.crop)

    def default_q(self) -> int:
        """Q = S (the middle of the range for a jittered net)."""
        return default_scales(self.train_scale, self.crop, multi_scale=False)[0]


def as_loc_net(obj: LocNet | VGG | Checkpoint | str | os.PathLike[str],
               index: int = 0) -> LocNet:
    """A checkpoint path, ``Checkpoint``, ``VGG`` (SCR/PCR head) or ``LocNet``."""
    if isinstance(obj, LocNet):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        obj = load_checkpoint(obj)
    if isinstance(obj, Checkpoint):
        require_head(obj, classifier=False, command="evaluate")
        mb = obj.meta.get("mean_box") or (0.5, 0.5)
        return LocNet(obj.build_model(), str(obj.path or f"loc{index}"),
                      train_scale_of(obj.meta), str(obj.meta.get("tune", "?")),
                      (float(mb[0]), float(mb[1])))
    if isinstance(obj, VGG):
        if obj.config.is_classifier:
            raise ConfigError(f"net{index} is a classification net, not a localisation net")
        return LocNet(obj, f"loc{index} ({obj.config.name}-{obj.config.head.upper()})")
    raise TypeError(f"cannot evaluate a {type(obj).__name__}")


# ---------------------------------------------------------------------------- geometry

def _gt_of(index: Any, classes: list[str]) -> list[list[tuple[int, tuple[float, ...]]]]:
    out = []
    for p, _ in index.samples:
        xy, cls = boxes_tensor((index.boxes or {}).get(p, []), classes)
        out.append([(int(c), tuple(float(v) for v in b)) for b, c in zip(xy, cls)])
    return out


def _to_image(boxes: torch.Tensor, size: tuple[int, int], scaled: tuple[int, int],
              flipped: bool) -> torch.Tensor:
    """Boxes in the (possibly mirrored) rescaled image -> original image pixels."""
    nw, nh = scaled
    if flipped:
        boxes = hflip_boxes(boxes, nw)
    return scale_boxes(boxes, size[0] / nw, size[1] / nh)


# ---------------------------------------------------------------------------- protocols

def _common(index: Any, batch_size: int, workers: int | None,
            require_boxes: bool = True) -> tuple[int, int]:
    if require_boxes and not getattr(index, "boxes", None):
        raise DataError(f"{getattr(index, 'root', None) or 'the dataset'} has no boxes: "
                        f"localisation needs annotations (see `vgg data boxes`)")
    b = check_int("batch", batch_size, 1, MAX_BATCH)
    w = check_workers(workers)
    return b, (min(4, os.cpu_count() or 1) if w is None else w)


def simple_protocol(net: LocNet | VGG | Checkpoint | str | os.PathLike[str], index: Any,
                    scale: int | None = None, *, batch_size: int = 16,
                    device: str | torch.device | None = None, workers: int | None = None,
                    precision: str = "fp32", progress: bool = True, allow_empty: bool = False,
                    on_bad: Callable[[str, str], None] | None = None,
                    losses: list[float] | None = None) -> LocResult:
    """Table 8's protocol on ``index`` (an ``ImageIndex`` with ``boxes``; labels are
    positions in the net's classes): one central crop at Q (default S), the box of the
    ground-truth class. ``losses``, when given, receives each image's L2 loss against the
    ground-truth box it overlaps most (training validation)."""
    loc = as_loc_net(net)
    batch_size, workers = _common(index, batch_size, workers)
    q = check_scales([scale], loc.crop, loc.name)[0] if scale is not None else loc.default_q()
    dev = pick_device(device)
    prec = resolve_precision(precision, dev)
    model = prec.net(loc.model.eval().to(dev))
    classes = list(model.classes or [str(i) for i in range(model.config.num_classes)])
    gt_all = _gt_of(index, classes)
    labels = np.array([lbl for _, lbl in index.samples], dtype=np.int64)
    data = RescaledImages(index, batch_size, workers, dev, progress, on_bad)
    crop = loc.crop
    guesses: dict[int, list[tuple[int, float, tuple[float, ...]]]] = {}
    with torch.inference_mode(), prec.autocast():
        for rows, x8 in data.batches(q, "simple"):
            x = center_crop(normalise(model, x8), crop)
            out = model(x).float()
            lab = torch.as_tensor(labels[rows], device=dev)
            params = class_params(out, model.config.head, lab).double().cpu()
            nh, nw = x8.shape[-2:]
            window = torch.tensor([(nw - crop) // 2, (nh - crop) // 2, crop], dtype=torch.float64)
            boxes = decode(params, window)
            for r, b, p in zip(rows.tolist(), boxes, params):
                size = data.sizes[r]
                img_box = _to_image(b, size, (nw, nh), False)  # type: ignore[arg-type]
                guesses[r] = [(int(labels[r]), 1.0, tuple(float(v) for v in img_box))]
                if losses is not None:
                    losses.append(_l2_loss(p, gt_all[r], int(labels[r]), size, (nw, nh), window))
    res = _finish("simple", [loc], [[q]], index, classes, gt_all, labels, data, guesses,
                  raw=None, posteriors=None, classifier=None, threshold=None,
                  allow_empty=allow_empty)
    res.precision = prec.name
    return res


def _l2_loss(params: torch.Tensor, gt: list[tuple[int, tuple[float, ...]]], label: int,
             size: tuple[int, int], scaled: tuple[int, int], window: torch.Tensor) -> float:
    """0.5 ||params - target||^2 against the ground-truth box of the class that overlaps
    the window most (the training loss, on the validation crop)."""
    from .boxes import encode, intersection_area

    same = [b for c, b in gt if c == label] or [b for _, b in gt]
    if not same:
        return 0.0
    nw, nh = scaled
    b = scale_boxes(torch.tensor(same, dtype=torch.float64), nw / size[0], nh / size[1])
    x0, y0, side = (float(v) for v in window)
    inside = intersection_area(b, torch.tensor([x0, y0, x0 + side, y0 + side],
                                               dtype=torch.float64))
    target = encode(b[int(inside.argmax())][None], window)[0]
    return float(0.5 * ((params - target) ** 2).sum())


def full_protocol(nets: Sequence[LocNet | VGG | Checkpoint | str | os.PathLike[str]]
                  | LocNet | VGG | str | os.PathLike[str],
                  classifier: EvalNet | VGG | Checkpoint | str | os.PathLike[str],
                  index: Any, scales: Sequence[int] | None = None, *,
                  threshold: float = DEFAULT_MERGE_THRESHOLD, flip: bool = True,
                  dense_stride: int | str | None = None,
                  class_choice: str = DEFAULT_CLASSES,
                  classifier_scales: Sequence[int] | None = None,
                  batch_size: int = 16, device: str | torch.device | None = None,
                  workers: int | None = None, precision: str = "fp32", progress: bool = True,
                  on_bad: Callable[[str, str], None] | None = None,
                  require_boxes: bool = True) -> LocResult:
    """The full protocol (module docstring) for one localisation net or the fusion of
    several (the union of their boxes is merged). ``scales``: test scales Q for every
    net; default Q = S of each net. ``dense_stride``: the output stride of the dense
    nets, a divisor of 32, or None / "auto" (each net's default for its crop, SPEC 6b).
    ``class_choice``: "per-scale" (OverFeat's C_s) or "image" (the classifier's image-level
    top-5 at every scale). ``classifier_scales``: the Q of the classifier's image-level
    posterior (the rating); default its own multi-scale Q (Sect. 3.2).
    ``require_boxes=False`` runs on images without annotations (prediction; the errors
    are then meaningless)."""
    if isinstance(nets, (LocNet, VGG, Checkpoint, str, os.PathLike)):
        nets = [nets]
    locs = [as_loc_net(n, i) for i, n in enumerate(nets)]
    if not locs:
        raise ConfigError("no localisation net to evaluate")
    if class_choice not in CLASS_CHOICES:
        raise ConfigError(f"classes must be one of {', '.join(CLASS_CHOICES)}, got "
                          f"{class_choice!r}")
    threshold = check_float("merge_threshold", threshold, 0.0, 100.0)
    batch_size, workers = _common(index, batch_size, workers, require_boxes)
    cls_net = as_net(classifier)
    classes = list(cls_net.model.classes or [])
    for loc in locs:
        if loc.model.classes != cls_net.model.classes:
            raise ConfigError(f"{loc.name} and the classifier {cls_net.name} have different "
                              f"class lists: a box of class k must mean the class the "
                              f"classifier calls k")
    per_net = [check_scales(scales, n.crop, n.name) if scales is not None else [n.default_q()]
               for n in locs]
    strides = [resolve_dense_stride(dense_stride, n.crop) for n in locs]
    cls_stride = resolve_dense_stride(dense_stride, cls_net.crop)
    cls_q = (check_scales(classifier_scales, cls_net.crop, cls_net.name)
             if classifier_scales is not None
             else default_scales(cls_net.train_scale, cls_net.crop, multi_scale=True))
    dev = pick_device(device)
    prec = resolve_precision(precision, dev)
    # 1. the classification net's image-level posterior: dense evaluation, Sect. 3.2
    cls_res = evaluate(cls_net, index, method="dense", scales=cls_q, flip=flip,
                       batch_size=batch_size, device=dev, workers=workers, precision=prec,
                       progress=progress, on_bad=on_bad, dense_stride=cls_stride)
    ids = image_ids(index)
    row_of = {iid: i for i, iid in enumerate(ids)}
    n = len(ids)
    post = np.zeros((n, len(classes)), np.float32)
    scored = np.zeros(n, bool)
    for iid, p in zip(cls_res.image_ids, cls_res.posteriors):
        post[row_of[iid]], scored[row_of[iid]] = p, True
    top = top_classes(post, TOP_K) if class_choice == "image" else None
    # 2. every box of the chosen classes, from every net, scale and mirror
    parts: list[dict[str, np.ndarray]] = []
    data = RescaledImages(index, batch_size, workers, dev, progress, on_bad)
    cls_model = prec.net(cls_net.model.eval().to(dev))
    cls_fcn = cls_model.to_fully_conv(cls_stride)
    for j, loc in enumerate(locs):
        model = prec.net(loc.model.eval().to(dev))
        fcn = model.to_fully_conv(strides[j])
        for q in per_net[j]:
            with torch.inference_mode(), prec.autocast():
                for rows, x8 in data.batches(q, f"boxes net {j + 1}"):
                    parts += _dense_boxes(model, fcn, cls_model, cls_fcn, x8, rows, top,
                                          data.sizes, flip, q)
    raw = {k: (np.concatenate([p[k] for p in parts]) if parts else
               np.zeros((0, 4) if k == "boxes" else 0, RAW_DTYPES[k])) for k in RAW_DTYPES}
    # 3. greedy merging per image and class; five guesses rated by the posterior
    guesses = merge_guesses(raw, post, threshold, rows=np.nonzero(scored)[0])
    gt_all = _gt_of(index, classes)
    labels = np.array([lbl for _, lbl in index.samples], dtype=np.int64)
    for r in np.nonzero(~scored)[0]:
        data.bad.setdefault(int(r), "could not be read")
    res = _finish("full", locs, per_net, index, classes, gt_all, labels, data, guesses,
                  raw=raw, posteriors=post, classifier=cls_net.name, threshold=threshold,
                  allow_empty=False)
    res.precision = prec.name
    res.dense_stride = strides
    res.class_choice = class_choice
    res.classifier_scales = list(cls_q)
    res.classifier_stride = cls_stride
    return res


RAW_DTYPES = {"image": np.int64, "class": np.int64, "boxes": np.float32,
              "scores": np.float32, "scale": np.int64}


def scale_classes(probs: Sequence[torch.Tensor], k: int = TOP_K) -> torch.Tensor:
    """OverFeat's C_s (SPEC 5 (a)): ``probs``, the classifier's per-position posteriors of
    a batch at one scale, (n, K, h, w) each (the image's map and its mirror's) -> (n,
    min(k, K)) int64, each image's k classes with the largest maximum over all positions,
    best first (ties in class order)."""
    smax = torch.stack([p.amax(dim=(2, 3)) for p in probs]).amax(dim=0)  # (n, K)
    return torch.argsort(-smax, dim=1, stable=True)[:, :min(k, smax.shape[1])]


def _dense_boxes(model: VGG, fcn: Any, cls_model: VGG, cls_fcn: Any, x8: torch.Tensor,
                 rows: np.ndarray, top: np.ndarray | None, sizes: list[Any], flip: bool,
                 q: int) -> list[dict[str, np.ndarray]]:
    """The boxes every position predicts for each image's classes (``top``: the same
    classes at every scale; None: the scale's own top-k, :func:`scale_classes`), in image
    pixels, with the classifier's probability of the class at that position as the
    score."""
    x_loc, x_cls = normalise(model, x8), normalise(cls_model, x8)
    nh, nw = x8.shape[-2:]
    head = model.config.head
    passes = []
    for mirrored in ((False, True) if flip else (False,)):
        xl = x_loc.flip(3) if mirrored else x_loc
        xc = x_cls.flip(3) if mirrored else x_cls
        bmap = fcn(xl).float()                   # (n, 4 or 4K, h, w)
        smap = cls_fcn(xc).float()               # (n, K, h', w') class scores
        passes.append((mirrored, bmap, smap, torch.softmax(smap, dim=1)))
    chosen = (scale_classes([p for *_, p in passes]).cpu().numpy() if top is None
              else top[rows])
    out = []
    for mirrored, bmap, smap, pmap in passes:
        # per position: the class posterior of that window; with another crop the maps do
        # not align, and every position gets the image's posterior at this scale (Sect. 3.2
        # dense)
        if pmap.shape[-2:] != bmap.shape[-2:]:
            pmap = torch.softmax(smap.mean((2, 3)), dim=1)[..., None, None]
        h, w = bmap.shape[-2:]
        windows = fcn.windows(h, w)                        # (P, 3) (x0, y0, crop)
        for b in range(len(rows)):
            r = int(rows[b])
            size = sizes[r]
            cls = torch.as_tensor(chosen[b], dtype=torch.int64, device=bmap.device)
            per_class = class_params(bmap[b].expand(len(cls), -1, -1, -1), head, cls)
            for c, p in zip(chosen[b].tolist(), per_class):   # p: (4, h, w), class c's box map
                params = p.permute(1, 2, 0).reshape(-1, 4).double().cpu()   # (P, 4)
                boxes = _to_image(decode(params, windows), size, (nw, nh), mirrored)
                score = pmap[b, c].expand(h, w).reshape(-1).cpu()
                out.append({"image": np.full(h * w, r, np.int64),
                            "class": np.full(h * w, c, np.int64),
                            "boxes": boxes.float().numpy(),
                            "scores": score.float().numpy(),
                            "scale": np.full(h * w, q, np.int64)})
    return out


def _finish(protocol: str, locs: list[LocNet], scales: list[list[int]], index: Any,
            classes: list[str], gt_all: list[Any], labels: np.ndarray, data: RescaledImages,
            guesses: dict[int, list[Any]], *, raw: dict[str, np.ndarray] | None,
            posteriors: np.ndarray | None, classifier: str | None,
            threshold: float | None, allow_empty: bool) -> LocResult:
    ids = image_ids(index)
    keep = [r for r in range(len(ids)) if r in guesses and r not in data.bad]
    skipped = [ids[r] for r in range(len(ids)) if r not in set(keep)]
    if not keep and not allow_empty:
        raise DataError(f"none of the {len(ids)} images could be read")
    if skipped:
        log.warning("%d of %d images could not be read and are left out", len(skipped),
                    len(ids))
    remap = {r: i for i, r in enumerate(keep)}
    raw_kept: dict[str, np.ndarray] = {}
    if raw is not None:
        sel = np.isin(raw["image"], keep)
        raw_kept = {k: v[sel] for k, v in raw.items()}
        raw_kept["image"] = np.array([remap[int(r)] for r in raw_kept["image"]], np.int64)
    mb = tuple(float(v) for v in np.mean([n.mean_box for n in locs], axis=0))
    return LocResult(
        protocol=protocol, nets=[n.name for n in locs],
        configs=[n.model.config.name for n in locs], heads=[n.head for n in locs],
        tuned=[n.tuned for n in locs], train_scales=[n.scale_label() for n in locs],
        scales=scales, classes=classes, image_ids=[ids[r] for r in keep],
        labels=labels[keep], sizes=np.array([data.sizes[r] for r in keep],
                                            np.float32).reshape(-1, 2),
        gt=[gt_all[r] for r in keep], guesses=[guesses[r] for r in keep],
        mean_box=mb, raw=raw_kept,  # type: ignore[arg-type]
        posteriors=None if posteriors is None else posteriors[keep],
        classifier=classifier, threshold=threshold, skipped=skipped)
