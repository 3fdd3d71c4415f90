"""Localisation testing (Appendix A.1-A.2) and the ILSVRC localisation error.

``simple_protocol``: the central crop of the image rescaled to Q = S; the box predicted
for the ground-truth class (PCR) or the one box (SCR); correct when its IoU with a
ground-truth box of that class exceeds 0.5 (Table 8).

``full_protocol``: the classification net (dense evaluation at the test scales, image and
mirror; ``vgg.eval.evaluate``) names the top-5 classes. The localisation net is applied
densely to the whole image at each scale Q and its mirror: every position of its box map
predicts a box (per class for PCR) relative to its receptive window, the ``crop`` x
``crop`` window at (32 j, 32 i) of the rescaled image, mapped back to image pixels. Each
box of a top-5 class is scored by the classification net's soft-max probability of that
class at the same position (same crop, same scale: the two score maps align; otherwise by
the image's probability). The boxes of each class (from every scale, the mirror, and
every localisation net when several are fused: Table 10) are merged greedily (OverFeat,
``vgg.localize.merge``); each merged box carries the summed scores of the windows it
holds, and the best-scored merged box is the class's box. Five (class, box) guesses, in
the order of the classification posterior: an image is correct at top-k when one of the
first k guesses has a ground-truth class and IoU > 0.5 with a box of that class.

Every result also scores two baselines on the same images with the same classes: the
whole image as the box, and the mean training box (as fractions of the image size, stored
in the localisation checkpoint) placed at the centre. Per-image boxes are saved (npz) so
that fusion and re-scoring (``fuse_saved``) never rerun a net.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import Checkpoint, atomic_write, load_checkpoint, require_head
from ..devices import pick_device
from ..errors import ConfigError, DataError, VggError
from ..data.index import image_ids
from ..data.rescaled import RescaledImages, normalise
from ..eval.evaluate import EvalNet, as_net, evaluate
from ..eval.multicrop import center_crop
from ..eval.scales import check_scales, default_scales
from ..model import VGG
from ..precision import resolve_precision
from ..settings import MAX_BATCH, check_float, check_int, check_workers
from .boxes import box_iou, decode, hflip_boxes, scale_boxes
from .data import boxes_tensor
from .merge import DEFAULT_MERGE_THRESHOLD, greedy_merge

log = logging.getLogger(__name__)

IOU_CORRECT = 0.5  # ILSVRC: a box is right when IoU > 0.5 with a ground-truth box
TOP_K = 5
PROTOCOLS = ("simple", "full")
STRIDE = 32  # five 2x2 pools: the dense net's positions are 32 pixels apart


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
        ts = self.train_scale or [round(self.crop * 256 / 224)] * 2
        return str(ts[0]) if ts[0] == ts[1] else f"[{ts[0]};{ts[1]}]"

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
        ts = obj.meta.get("train_scale")
        mb = obj.meta.get("mean_box") or (0.5, 0.5)
        return LocNet(obj.build_model(), str(obj.path or f"loc{index}"),
                      [int(v) for v in ts] * (2 if len(ts) == 1 else 1) if ts else None,
                      str(obj.meta.get("tune", "?")), (float(mb[0]), float(mb[1])))
    if isinstance(obj, VGG):
        if obj.config.is_classifier:
            raise ConfigError(f"net{index} is a classification net, not a localisation net")
        return LocNet(obj, f"loc{index} ({obj.config.name}-{obj.config.head.upper()})")
    raise TypeError(f"cannot evaluate a {type(obj).__name__}")


# ---------------------------------------------------------------------------- results

@dataclass
class LocResult:
    """Per-image guesses and ground truth of one localisation evaluation, with the
    errors of the nets and of the two baselines.

    ``guesses[i]``: [(class, score, (x0, y0, x1, y1))], best first (one for the simple
    protocol); ``gt[i]``: [(class, (x0, y0, x1, y1))]; ``sizes[i]`` = (width, height).
    ``raw``: the unmerged boxes (image, class, xyxy, score) for fusion and re-scoring.
    """

    protocol: str
    nets: list[str]
    configs: list[str]
    heads: list[str]
    tuned: list[str]
    train_scales: list[str]
    scales: list[list[int]]
    classes: list[str]
    image_ids: list[str]
    labels: np.ndarray
    sizes: np.ndarray
    gt: list[list[tuple[int, tuple[float, float, float, float]]]]
    guesses: list[list[tuple[int, float, tuple[float, float, float, float]]]]
    mean_box: tuple[float, float]
    raw: dict[str, np.ndarray] = field(default_factory=dict)
    posteriors: np.ndarray | None = None
    classifier: str | None = None
    threshold: float | None = None
    skipped: list[str] = field(default_factory=list)
    precision: str = "fp32"  # of the networks (vgg.precision)
    errors: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        self.errors = self._score()

    @property
    def n_images(self) -> int:
        return len(self.image_ids)

    def _baseline(self, kind: str) -> list[list[tuple[int, float, tuple[float, ...]]]]:
        out = []
        mw, mh = self.mean_box
        for (w, h), guesses in zip(self.sizes, self.guesses):
            if kind == "whole":
                box = (0.0, 0.0, float(w), float(h))
            else:
                bw, bh = mw * w, mh * h
                box = ((w - bw) / 2, (h - bh) / 2, (w + bw) / 2, (h + bh) / 2)
            out.append([(c, s, box) for c, s, _ in guesses])
        return out

    def _score(self) -> dict[str, float]:
        errs = {}
        for prefix, guesses in (("", self.guesses), ("whole_", self._baseline("whole")),
                                ("mean_", self._baseline("mean"))):
            right = correct_at(guesses, self.gt)
            n = max(len(right), 1)
            errs[f"{prefix}top1_err"] = float(1 - right[:, 0].sum() / n) if len(right) else \
                float("nan")
            if self.protocol == "full":
                errs[f"{prefix}top5_err"] = float(1 - right.any(1).sum() / n) if len(right) \
                    else float("nan")
        if self.posteriors is not None and len(self.labels):
            from ..eval.metrics import top1_error, top5_error

            errs["cls_top1_err"] = top1_error(self.posteriors, self.labels)
            errs["cls_top5_err"] = top5_error(self.posteriors, self.labels)
        return errs

    @property
    def top1_err(self) -> float:
        return self.errors["top1_err"]

    @property
    def top5_err(self) -> float | None:
        return self.errors.get("top5_err")

    def mean_iou(self) -> float:
        """Mean over images of the best IoU of the first guess with a ground-truth box of
        its class (0 when the class is wrong)."""
        ious = [_best_iou(g[0], gt) if g else 0.0 for g, gt in zip(self.guesses, self.gt)]
        return float(np.mean(ious)) if ious else float("nan")

    def table_row(self) -> dict[str, Any]:
        return {"config": " & ".join(dict.fromkeys(self.configs)),
                "head": " & ".join(dict.fromkeys(self.heads)),
                "tuned": " & ".join(dict.fromkeys(self.tuned)),
                "train_scale": " & ".join(dict.fromkeys(self.train_scales)),
                "test_scale": " & ".join(dict.fromkeys(",".join(map(str, s))
                                                       for s in self.scales)),
                "protocol": self.protocol + (" (fused)" if len(self.nets) > 1 else ""),
                "precision": self.precision,
                **{k: v for k, v in self.errors.items() if not k.startswith("cls_")}}

    def to_json(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "nets": self.nets, "config": self.configs,
                "head": self.heads, "tuned": self.tuned, "train_scale": self.train_scales,
                "scales": self.scales, "classifier": self.classifier,
                "merge_threshold": self.threshold, "n_images": self.n_images,
                "n_skipped": len(self.skipped), "skipped": self.skipped[:100],
                "mean_iou_first_guess": self.mean_iou(), "mean_box": list(self.mean_box),
                "precision": self.precision, **self.errors}

    # -- saved boxes --------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Everything needed to re-score or fuse without a net, as an ``.npz`` readable
        with ``allow_pickle=False``."""
        gi = [(i, c, b) for i, gts in enumerate(self.gt) for c, b in gts]
        k = max((len(g) for g in self.guesses), default=0)
        gc = np.full((self.n_images, k), -1, np.int64)
        gs = np.zeros((self.n_images, k), np.float32)
        gb = np.zeros((self.n_images, k, 4), np.float32)
        for i, guesses in enumerate(self.guesses):
            for j, (c, s, b) in enumerate(guesses):
                gc[i, j], gs[i, j], gb[i, j] = c, s, b
        arrays = {
            "image_ids": np.array(self.image_ids, dtype=np.str_),
            "classes": np.array(self.classes, dtype=np.str_),
            "labels": np.asarray(self.labels, np.int64),
            "sizes": np.asarray(self.sizes, np.float32).reshape(-1, 2),
            "gt_image": np.array([i for i, _, _ in gi], np.int64),
            "gt_class": np.array([c for _, c, _ in gi], np.int64),
            "gt_boxes": np.array([b for _, _, b in gi], np.float32).reshape(-1, 4),
            "guess_class": gc, "guess_score": gs, "guess_boxes": gb,
            "meta": np.array(json.dumps(self._meta())),
            **{f"raw_{k}": v for k, v in self.raw.items()},
        }
        if self.posteriors is not None:
            arrays["posteriors"] = self.posteriors.astype(np.float32)
        try:
            return atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
        except OSError as e:
            raise VggError(f"cannot write boxes {path}: {e.strerror or e}") from None

    def _meta(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "nets": self.nets, "configs": self.configs,
                "heads": self.heads, "tuned": self.tuned, "train_scales": self.train_scales,
                "scales": self.scales, "mean_box": list(self.mean_box),
                "classifier": self.classifier, "threshold": self.threshold,
                "skipped": self.skipped, "precision": self.precision}


def _best_iou(guess: tuple[int, float, tuple[float, ...]],
              gt: list[tuple[int, tuple[float, ...]]]) -> float:
    c, _, box = guess
    same = [b for gc, b in gt if gc == c]
    if not same:
        return 0.0
    iou = box_iou(torch.tensor([box], dtype=torch.float64),
                  torch.tensor(same, dtype=torch.float64))
    return float(iou.max())


def correct_at(guesses: Sequence[Sequence[tuple[int, float, tuple[float, ...]]]],
               gt: Sequence[Sequence[tuple[int, tuple[float, ...]]]],
               k: int = TOP_K) -> np.ndarray:
    """(N, k) bool: guess j of image i has a ground-truth class of the image and IoU >
    0.5 with a ground-truth box of that class (ILSVRC localisation). Missing guesses are
    wrong."""
    out = np.zeros((len(guesses), k), dtype=bool)
    for i, (gs, gts) in enumerate(zip(guesses, gt)):
        for j, g in enumerate(gs[:k]):
            out[i, j] = _best_iou(g, gts) > IOU_CORRECT
    return out


def load_saved(path: str | os.PathLike[str]) -> LocResult:
    """A result written by :meth:`LocResult.save`; ``VggError`` naming the file if it is
    missing or not such a file."""
    path = Path(path)
    if not path.is_file():
        raise VggError(f"boxes file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            need = {"image_ids", "classes", "labels", "sizes", "gt_image", "gt_class",
                    "gt_boxes", "guess_class", "guess_score", "guess_boxes", "meta"}
            if need - set(z.files):
                raise VggError(f"{path} is not a vgg boxes file (no "
                               f"{', '.join(sorted(need - set(z.files)))})")
            d = {k: z[k] for k in z.files}
        meta = json.loads(str(d["meta"]))
    except (OSError, ValueError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise VggError(f"cannot read boxes {path}: {e}") from None
    floats = [d[k] for k in ("sizes", "gt_boxes", "guess_boxes", "guess_score")]
    floats += [d[k] for k in d if k.startswith("raw_") or k == "posteriors"]
    if any(not np.isfinite(np.asarray(a, dtype=np.float64)).all() for a in floats
           if np.asarray(a).dtype.kind == "f"):
        raise VggError(f"{path} holds non-finite boxes or scores (NaN or inf); refusing "
                       f"to score them")
    n = len(d["image_ids"])
    gt: list[list[tuple[int, tuple[float, ...]]]] = [[] for _ in range(n)]
    for i, c, b in zip(d["gt_image"], d["gt_class"], d["gt_boxes"]):
        gt[int(i)].append((int(c), tuple(float(v) for v in b)))
    guesses = [[(int(c), float(s), tuple(float(v) for v in b))
                for c, s, b in zip(d["guess_class"][i], d["guess_score"][i],
                                   d["guess_boxes"][i]) if c >= 0] for i in range(n)]
    raw = {k[4:]: d[k] for k in d if k.startswith("raw_")}
    return LocResult(
        protocol=meta["protocol"], nets=meta["nets"], configs=meta["configs"],
        heads=meta["heads"], tuned=meta["tuned"], train_scales=meta["train_scales"],
        scales=meta["scales"], classes=[str(c) for c in d["classes"]],
        image_ids=[str(i) for i in d["image_ids"]], labels=d["labels"], sizes=d["sizes"],
        gt=gt, guesses=guesses, mean_box=tuple(meta["mean_box"]), raw=raw,
        posteriors=d.get("posteriors"), classifier=meta.get("classifier"),
        threshold=meta.get("threshold"), skipped=list(meta.get("skipped", [])),
        precision=str(meta.get("precision") or "fp32"))


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


def _params(out: torch.Tensor, head: str, classes: torch.Tensor | None) -> torch.Tensor:
    """(N, 4) or (N, 4K) net outputs -> (N, 4) box parameters (PCR: of ``classes``)."""
    if head == "scr":
        return out[:, :4]
    assert classes is not None
    idx = (4 * classes)[:, None] + torch.arange(4, device=out.device)[None]
    return out.gather(1, idx)


def window_grid(h: int, w: int, crop: int) -> torch.Tensor:
    """(h * w, 3) windows (x0, y0, side) of the positions of a dense h x w map, row-major:
    position (i, j) sees the crop x crop window at (32 j, 32 i) of its input (Sect. 3.2)."""
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([STRIDE * jj.flatten(), STRIDE * ii.flatten(),
                        torch.full((h * w,), crop)], dim=1).to(torch.float64)


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
            params = _params(out, model.config.head, lab).double().cpu()
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
                  batch_size: int = 16, device: str | torch.device | None = None,
                  workers: int | None = None, precision: str = "fp32", progress: bool = True,
                  on_bad: Callable[[str, str], None] | None = None,
                  require_boxes: bool = True) -> LocResult:
    """The full protocol (module docstring) for one localisation net or the fusion of
    several (the union of their boxes is merged). ``scales``: test scales Q for every
    net; default Q = S of each net. The classification net's posterior is its dense
    evaluation over the union of the scales (image and mirror). ``require_boxes=False``
    runs on images without annotations (prediction; the errors are then meaningless)."""
    if isinstance(nets, (LocNet, VGG, Checkpoint, str, os.PathLike)):
        nets = [nets]
    locs = [as_loc_net(n, i) for i, n in enumerate(nets)]
    if not locs:
        raise ConfigError("no localisation net to evaluate")
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
    all_q = sorted({q for qs in per_net for q in qs})
    dev = pick_device(device)
    prec = resolve_precision(precision, dev)
    # 1. the classification net's top-5 classes: dense evaluation, Sect. 3.2
    cls_res = evaluate(cls_net, index, method="dense", scales=all_q, flip=flip,
                       batch_size=batch_size, device=dev, workers=workers, precision=prec,
                       progress=progress, on_bad=on_bad)
    ids = image_ids(index)
    row_of = {iid: i for i, iid in enumerate(ids)}
    n = len(ids)
    post = np.zeros((n, len(classes)), np.float32)
    scored = np.zeros(n, bool)
    for iid, p in zip(cls_res.image_ids, cls_res.posteriors):
        post[row_of[iid]], scored[row_of[iid]] = p, True
    k = min(TOP_K, len(classes))
    top = np.argsort(-post, axis=1, kind="stable")[:, :k]
    # 2. every box of the top-k classes, from every net, scale and mirror
    raw_i: list[np.ndarray] = []
    raw_c: list[np.ndarray] = []
    raw_b: list[np.ndarray] = []
    raw_s: list[np.ndarray] = []
    data = RescaledImages(index, batch_size, workers, dev, progress, on_bad)
    cls_model = prec.net(cls_net.model.eval().to(dev))
    cls_fcn = cls_model.to_fully_conv()
    for j, loc in enumerate(locs):
        model = prec.net(loc.model.eval().to(dev))
        fcn = model.to_fully_conv()
        for q in per_net[j]:
            with torch.inference_mode(), prec.autocast():
                for rows, x8 in data.batches(q, f"boxes net {j + 1}"):
                    for i, c, b, s in _dense_boxes(model, fcn, cls_model, cls_fcn, x8, rows,
                                                   top, data.sizes, flip):
                        raw_i.append(i), raw_c.append(c), raw_b.append(b), raw_s.append(s)
    raw = {"image": np.concatenate(raw_i) if raw_i else np.zeros(0, np.int64),
           "class": np.concatenate(raw_c) if raw_c else np.zeros(0, np.int64),
           "boxes": np.concatenate(raw_b) if raw_b else np.zeros((0, 4), np.float32),
           "scores": np.concatenate(raw_s) if raw_s else np.zeros(0, np.float32)}
    # 3. greedy merging per image and class; five guesses
    guesses = merge_guesses(raw, post, top, threshold, rows=np.nonzero(scored)[0])
    gt_all = _gt_of(index, classes)
    labels = np.array([lbl for _, lbl in index.samples], dtype=np.int64)
    for r in np.nonzero(~scored)[0]:
        data.bad.setdefault(int(r), "could not be read")
    res = _finish("full", locs, per_net, index, classes, gt_all, labels, data, guesses,
                  raw=raw, posteriors=post, classifier=cls_net.name, threshold=threshold,
                  allow_empty=False)
    res.precision = prec.name
    return res


def _dense_boxes(model: VGG, fcn: Any, cls_model: VGG, cls_fcn: Any, x8: torch.Tensor,
                 rows: np.ndarray, top: np.ndarray, sizes: list[Any], flip: bool
                 ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The boxes every position predicts for each image's top classes, in image pixels,
    with the classifier's probability of the class at that position as the score."""
    out = []
    x_loc, x_cls = normalise(model, x8), normalise(cls_model, x8)
    nh, nw = x8.shape[-2:]
    crop, head = model.config.crop, model.config.head
    for mirrored in ((False, True) if flip else (False,)):
        xl = x_loc.flip(3) if mirrored else x_loc
        xc = x_cls.flip(3) if mirrored else x_cls
        bmap = fcn(xl).float()            # (n, 4 or 4K, h, w)
        scores = cls_fcn(xc).float()      # (n, K, h', w')
        aligned = scores.shape[-2:] == bmap.shape[-2:]
        # per position: the class posterior of that window; with another crop the maps do
        # not align, and every position gets the image's posterior (Sect. 3.2 dense)
        prob = (torch.softmax(scores, dim=1) if aligned
                else torch.softmax(scores.mean((2, 3)), dim=1)[..., None, None])
        h, w = bmap.shape[-2:]
        windows = window_grid(h, w, crop)          # (P, 3)
        for b in range(len(rows)):
            r = int(rows[b])
            size = sizes[r]
            for c in top[r]:
                c = int(c)
                if head == "pcr":
                    p = bmap[b, 4 * c:4 * c + 4]
                else:
                    p = bmap[b, :4]
                params = p.permute(1, 2, 0).reshape(-1, 4).double().cpu()   # (P, 4)
                boxes = _to_image(decode(params, windows), size, (nw, nh), mirrored)
                score = prob[b, c].expand(h, w).reshape(-1).cpu() if aligned else \
                    prob[b, c].reshape(1).expand(h * w).cpu()
                out.append((np.full(h * w, r, np.int64), np.full(h * w, c, np.int64),
                            boxes.float().numpy(), score.float().numpy()))
    return out


def merge_guesses(raw: dict[str, np.ndarray], post: np.ndarray, top: np.ndarray,
                  threshold: float, rows: Sequence[int] | None = None
                  ) -> dict[int, list[tuple[int, float, tuple[float, ...]]]]:
    """Per image: greedy-merge the raw boxes of each of its top classes; the class's box
    is the merged box with the largest summed score; guesses ordered by the classifier's
    posterior (the rating of Appendix A)."""
    order = np.argsort(raw["image"], kind="stable")
    img_sorted = raw["image"][order]
    guesses: dict[int, list[tuple[int, float, tuple[float, ...]]]] = {}
    for r in (range(len(post)) if rows is None else rows):
        r = int(r)
        lo, hi = np.searchsorted(img_sorted, [r, r + 1])
        sel = order[lo:hi]
        boxes = torch.from_numpy(raw["boxes"][sel].astype(np.float64))
        scores = torch.from_numpy(raw["scores"][sel].astype(np.float64))
        labels = torch.from_numpy(raw["class"][sel].astype(np.int64))
        merged = greedy_merge(boxes, scores, labels, threshold) if len(sel) else None
        out = []
        for c in top[r]:
            c = int(c)
            if merged is None:
                continue
            mine = (merged.labels == c).nonzero().squeeze(1)
            if len(mine) == 0:
                continue
            best = int(mine[int(torch.argmax(merged.scores[mine]))])
            out.append((c, float(post[r, c]), tuple(float(v) for v in merged.boxes[best])))
        guesses[r] = out
    return guesses


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


def fuse_results(parts: Sequence[LocResult], names: Sequence[str] | None = None,
                 threshold: float | None = None) -> LocResult:
    """Table 10's fusion of full-protocol results on the same images: the union of the
    nets' raw boxes merged again (per image and class), classes rated by the mean of the
    results' classification posteriors. With one result: re-scoring (e.g. another merge
    ``threshold``). No net is run."""
    if not parts:
        raise VggError("nothing to fuse")
    names = list(names) if names is not None else [f"result {i}" for i in range(len(parts))]
    ref = parts[0]
    for p, name in zip(parts, names):
        if p.protocol != "full" or p.posteriors is None or not p.raw:
            raise VggError(f"{name} holds {p.protocol}-protocol boxes; fusion needs the full "
                           f"protocol's (vgg localize evaluate --protocol full --save-boxes)")
        if p.classes != ref.classes or p.image_ids != ref.image_ids:
            raise VggError(f"cannot fuse {names[0]} and {name}: different classes or images")
    thr = ref.threshold if threshold is None else check_float("merge_threshold", threshold,
                                                              0.0, 100.0)
    post = np.mean([p.posteriors for p in parts], axis=0)  # type: ignore[misc]
    raw = {k: np.concatenate([p.raw[k] for p in parts]) for k in ref.raw}
    k = min(TOP_K, len(ref.classes))
    top = np.argsort(-post, axis=1, kind="stable")[:, :k]
    guesses = merge_guesses(raw, post, top, float(thr or DEFAULT_MERGE_THRESHOLD))
    return LocResult(
        protocol="full", nets=[n for p in parts for n in p.nets],
        configs=[c for p in parts for c in p.configs], heads=[h for p in parts for h in p.heads],
        tuned=[t for p in parts for t in p.tuned],
        train_scales=[s for p in parts for s in p.train_scales],
        scales=[s for p in parts for s in p.scales], classes=ref.classes,
        image_ids=ref.image_ids, labels=ref.labels, sizes=ref.sizes, gt=ref.gt,
        guesses=[guesses[i] for i in range(len(ref.image_ids))],
        mean_box=tuple(float(v) for v in np.mean([p.mean_box for p in parts], axis=0)),
        raw=raw, posteriors=post.astype(np.float32), classifier=ref.classifier,
        threshold=thr, skipped=ref.skipped,
        precision=" & ".join(dict.fromkeys(p.precision for p in parts)))


def fuse_saved(paths: Sequence[str | os.PathLike[str]],
               threshold: float | None = None) -> LocResult:
    """:func:`fuse_results` of boxes saved by :meth:`LocResult.save` (``vgg localize
    fuse``)."""
    return fuse_results([load_saved(p) for p in paths], [str(p) for p in paths], threshold)
