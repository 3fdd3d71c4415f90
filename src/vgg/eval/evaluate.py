"""The testing framework of Sect. 3.2: dense, multi-crop, "multi-crop & dense" and centre-crop
evaluation at one or several test scales Q, for one net or a fusion of nets.

One pass over the data per test scale: every image is decoded and rescaled once (smaller
side Q), batched with images of the same rescaled size (aspect ratio kept;
``vgg.data.rescaled``), normalised on the device, and every requested (net, method) runs
on that batch. The result keeps the posteriors of each (net, method, scale) separately, so
single-scale, multi-scale, dense, multi-crop, "both" and fused numbers all come from one
run (``vgg.eval.results``).
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
from ..data.index import image_ids
from ..data.rescaled import RescaledImages, normalise, warn_unreadable
from ..devices import pick_device
from ..errors import ConfigError, DataError, VggError
from ..model import NET_STRIDE, VGG, check_dense_stride, resolve_dense_stride
from ..precision import Precision, resolve_precision
from ..settings import MAX_BATCH, check_int, check_workers
from ..weights import open_weights as load_checkpoint
from .dense import dense_posteriors
from .fusion import check_same_classes
from .multicrop import center_posteriors, multicrop_posteriors
from .results import METHODS, PIECE_METHODS, EvalResult, Piece
from .scales import check_scales, crop_train_scale, default_scales

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- nets

@dataclass
class EvalNet:
    """A net to evaluate, with the facts evaluation needs from its checkpoint."""

    model: VGG
    name: str
    train_scale: list[int] | None = None

    @property
    def crop(self) -> int:
        return self.model.config.crop

    @property
    def train_scale_label(self) -> str:
        return scale_label(self.train_scale, self.crop)


def scale_label(train_scale: Sequence[int] | None, crop: int) -> str:
    """A net's training scale as the paper's tables write it: "256" (fixed S) or
    "[256;512]" (jittered); unknown: :func:`crop_train_scale`."""
    ts = train_scale or [crop_train_scale(crop)] * 2
    return str(ts[0]) if ts[0] == ts[1] else f"[{ts[0]};{ts[1]}]"


def train_scale_of(meta: dict[str, Any]) -> list[int] | None:
    """A checkpoint's ``train_scale`` as [s_min, s_max] (None when it does not say)."""
    ts = meta.get("train_scale")
    if ts is None:
        return None
    if isinstance(ts, (int, float)):
        return [int(ts), int(ts)]
    ts = [int(v) for v in ts]
    return ts * 2 if len(ts) == 1 else ts


def as_net(obj: VGG | Checkpoint | EvalNet | str | os.PathLike[str],
           train_scale: Sequence[int] | None = None, index: int = 0) -> EvalNet:
    """A checkpoint path, ``Checkpoint``, ``VGG`` or ``EvalNet`` -> ``EvalNet``."""
    if isinstance(obj, EvalNet):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        obj = load_checkpoint(obj)
    if isinstance(obj, Checkpoint):
        require_head(obj, classifier=True, command="evaluate")
        net = EvalNet(obj.build_model(), str(obj.path or f"net{index}"),
                      train_scale_of(obj.meta))
    elif isinstance(obj, VGG):
        net = EvalNet(obj, f"net{index} ({obj.config.name})")
    else:
        raise TypeError(f"cannot evaluate a {type(obj).__name__}")
    if not net.model.config.is_classifier:
        raise ConfigError(f"{net.name} is a localisation net ({net.model.config.head.upper()} "
                          f"head); use vgg.localize to evaluate it")
    if train_scale is not None:
        net.train_scale = train_scale_of({"train_scale": list(train_scale)})
    return net


def _labels_for(index: Any, classes: list[str] | None, num_classes: int,
                name: str) -> np.ndarray:
    """The index's labels as indices into the net's classes, matched BY NAME (the dataset
    may hold a subset of the net's classes, in another order: ImageNet val folders
    n01530575... are classes 10... of a 1000-class net whatever their position here).

    A net without class names (e.g. bare torchvision weights) can only be evaluated on a
    dataset with exactly its number of classes, whose sorted order is then assumed to be
    the net's: that is refused otherwise, and warned even then."""
    labels = np.array([int(lbl) for _, lbl in index.samples], dtype=np.int64)
    data_classes = [str(c) for c in (getattr(index, "classes", None) or [])]
    if classes is not None:
        if not data_classes:
            raise DataError(f"the dataset has no class names to match with those of {name}")
        pos = {c: i for i, c in enumerate(classes)}
        missing = [c for c in data_classes if c not in pos]
        if missing:
            raise DataError(f"{len(missing)} class(es) of the dataset are unknown to {name}: "
                            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
                            f"(classes are matched by name; {name} has e.g. "
                            f"{', '.join(classes[:3])})")
        remap = np.array([pos[c] for c in data_classes], dtype=np.int64)
        return remap[labels] if labels.size else labels
    k = len(data_classes) if data_classes else int(labels.max(initial=-1)) + 1
    if k != num_classes:
        raise DataError(f"{name} has no class names, so its outputs cannot be matched to the "
                        f"dataset's {k} classes ({num_classes} outputs); give the net its "
                        f"class names (e.g. vgg.weights.from_torchvision(..., "
                        f"classes='imagenet'))")
    log.warning("%s has no class names: assuming its %d outputs are the dataset's classes in "
                "sorted order (%s, ...)", name, num_classes, ", ".join(data_classes[:3]))
    return labels


# ---------------------------------------------------------------------------- evaluation

def evaluate(models: Sequence[VGG | Checkpoint | EvalNet | str | os.PathLike[str]]
             | VGG | str | os.PathLike[str],
             index: Any, method: str = "dense", scales: Sequence[int] | None = None,
             flip: bool = True, batch_size: int = 16,
             device: str | torch.device | None = None, workers: int | None = None, *,
             precision: str = "fp32", train_scale: Sequence[int] | None = None,
             multi_scale: bool = True, progress: bool = True,
             allow_empty: bool = False, dense_stride: int | str | None = None,
             on_bad: Callable[[str, str], None] | None = None) -> EvalResult:
    """Sect. 3.2 testing of one net or a fusion of nets on ``index`` (an ``ImageIndex``:
    ``.samples`` [(path, label)], ``.classes``, ``.root``).

    ``method``: "dense", "multicrop" (5x5 grid + mirrors per scale), "both" (their
    average) or "center" (one centre crop, never mirrored). ``scales``: test scales Q for
    every net; default per net from its checkpoint's ``meta["train_scale"]``
    (:func:`default_scales`, three scales, or one with ``multi_scale=False`` or method
    "center"). ``flip`` averages with the mirror image (dense, multi-crop).
    ``precision``: the networks' precision, "fp32" (default: the paper's tables), "bf16",
    "fp16" or "auto" (``vgg.precision``); soft-max, averaging and fusion stay fp32 and the
    result records it (``result.precision``). ``train_scale`` overrides the nets' training
    scale (for bare ``VGG`` objects). Dataset classes are matched to the nets' classes by
    name.
    ``dense_stride``: the output stride of dense application (methods dense and both),
    a divisor of 32; None or "auto": each net's default for its crop (SPEC 6b:
    :func:`vgg.model.default_dense_stride`, 32 at crop 224, 4 at crop 32). The result
    records it (``result.dense_stride``, the table's "dense stride" column, the JSON and
    saved posteriors' ``dense_stride``). Multi-crop and centre crops are single windows:
    the stride does not apply to them, and giving one with those methods is refused.
    ``allow_empty``: return a result with zero images instead of raising when no image
    can be read (training validation on one rank's share). ``on_bad(path, reason)`` is
    told of each unreadable image (default: a warning per image).
    ``dense_stride``: the output stride of the fully-convolutional nets (a divisor of 32,
    or None / "auto": each net's default for its crop, SPEC 6b; ``vgg.model``).
    """
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    batch_size = check_int("batch", batch_size, 1, MAX_BATCH)
    workers = check_workers(workers)
    if isinstance(models, (VGG, str, os.PathLike, Checkpoint, EvalNet)):
        models = [models]
    nets = [as_net(m, train_scale, i) for i, m in enumerate(models)]
    if not nets:
        raise ConfigError("no net to evaluate")
    check_same_classes([n.model.classes for n in nets], [n.name for n in nets])
    ref = nets[0].model
    num = {n.model.config.num_classes for n in nets}
    if len(num) > 1:
        raise VggError(f"cannot fuse nets with {sorted(num)} outputs: "
                       f"{', '.join(n.name for n in nets)}")
    classes = list(ref.classes) if ref.classes is not None else [
        str(i) for i in range(ref.config.num_classes)]
    if not index.samples and not allow_empty:
        raise DataError(f"no images to evaluate in {getattr(index, 'root', None) or 'index'}")
    labels = _labels_for(index, ref.classes, ref.config.num_classes, nets[0].name)
    strides = dense_strides(nets, method, dense_stride)
    single = method == "center" or not multi_scale
    per_net = [check_scales(scales, n.crop, n.name) if scales is not None
               else default_scales(n.train_scale, n.crop, multi_scale=not single)
               for n in nets]
    strides = [resolve_dense_stride(dense_stride, n.crop) for n in nets]
    dev = pick_device(device)
    prec = resolve_precision(precision, dev)
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    kinds = PIECE_METHODS[method]
    ids = image_ids(index)
    n_img, k = len(index.samples), ref.config.num_classes
    pieces = {(j, m, q): np.zeros((n_img, k), dtype=np.float32)
              for j, qs in enumerate(per_net) for q in qs for m in kinds}
    filled = {key: np.zeros(n_img, dtype=bool) for key in pieces}
    bad = _run(nets, index, per_net, kinds, pieces, filled, flip=flip,
               batch_size=batch_size, dev=dev, workers=workers, prec=prec, progress=progress,
               method=method, on_bad=on_bad or warn_unreadable, strides=strides)
    # an image is scored when every piece saw it; a NaN posterior (a broken net) is
    # scored too, and counts as wrong
    done = np.logical_and.reduce(list(filled.values())) if filled else np.zeros(n_img, bool)
    skipped = [ids[i] for i in np.nonzero(~done)[0]]
    reasons = {ids[i]: bad.get(i, "could not be read") for i in np.nonzero(~done)[0]}
    if not done.any() and not allow_empty:
        example = f" (e.g. {skipped[0]}: {reasons[skipped[0]]})" if skipped else ""
        raise DataError(f"none of the {n_img} images could be read{example}")
    if skipped:
        log.warning("%d of %d images could not be read and are left out", len(skipped), n_img)
    keep = np.nonzero(done)[0]
    return EvalResult(
        method=method, nets=[n.name for n in nets], configs=[n.model.config.name for n in nets],
        train_scales=[n.train_scale_label for n in nets], scales=per_net,
        flip=flip and method != "center", classes=classes,
        image_ids=[ids[i] for i in keep], labels=labels[keep],
        skipped=skipped, skipped_reasons=reasons,
        pieces=[Piece(j, m, q, arr[keep], flip and m != "center",
                      strides[j] if m == "dense" else None)
                for (j, m, q), arr in pieces.items()], precision=prec.name)


def dense_strides(nets: Sequence[EvalNet], method: str,
                  dense_stride: int | str | None) -> list[int]:
    """Each net's output stride of dense application: ``dense_stride`` for every net, or
    (None, "auto") each net's default for its crop. A stride given with a method that has
    no dense part is refused rather than ignored."""
    if dense_stride is not None and dense_stride != "auto":
        check_dense_stride(dense_stride)
        if "dense" not in PIECE_METHODS[method]:
            raise ConfigError(f"dense_stride (--dense-stride) applies to dense evaluation "
                              f"(method dense or both), not to method {method}")
    return [resolve_dense_stride(dense_stride, n.crop) for n in nets]


def _run(nets: list[EvalNet], index: Any, per_net: list[list[int]], kinds: tuple[str, ...],
         pieces: dict[tuple[int, str, int], np.ndarray],
         filled: dict[tuple[int, str, int], np.ndarray], *, flip: bool, batch_size: int,
         dev: torch.device, workers: int, prec: Precision, progress: bool,
         method: str, on_bad: Callable[[str, str], None],
         strides: list[int]) -> dict[int, str]:
    """One pass over the data per test scale, every (net, method) on each batch; fills
    ``pieces`` and ``filled`` in place and returns {row: reason} of the unreadable images.
    Dense pieces use each net's ``strides``; crops (one window each) the plain stride-32
    net, which gives them the same 1 x 1 map without running the later layers dilated."""
    data = RescaledImages(index, batch_size, workers, dev, progress, on_bad)
    models, fcns = [], []
    for n, s in zip(nets, strides):
        m = prec.net(n.model.eval().to(dev))  # the net itself, or its bf16/fp16 copy
        models.append(m)
        plain = m.to_fully_conv()
        fcns.append((plain, plain if s == NET_STRIDE else m.to_fully_conv(s)))
    for q in sorted({q for qs in per_net for q in qs}):
        active = [j for j, qs in enumerate(per_net) if q in qs]
        with torch.inference_mode(), prec.autocast():
            for rows, x8 in data.batches(q, method):
                _forward(nets, models, fcns, active, kinds, pieces, q, rows, x8, flip)
                for j in active:
                    for m in kinds:
                        filled[(j, m, q)][rows] = True
    return data.bad


def _forward(nets: list[EvalNet], models: list[VGG], fcns: list[tuple[Any, Any]],
             active: list[int],
             kinds: tuple[str, ...], pieces: dict[tuple[int, str, int], np.ndarray], q: int,
             rows: np.ndarray, x8: torch.Tensor, flip: bool) -> None:
    for j in active:
        net, (fcn, dense) = nets[j], fcns[j]
        x = normalise(models[j], x8)
        for m in kinds:
            if m == "dense":
                p = dense_posteriors(dense, x, flip)
            elif m == "multicrop":
                p = multicrop_posteriors(fcn, x, net.crop, flip)
            else:
                p = center_posteriors(fcn, x, net.crop)
            pieces[(j, m, q)][rows] = p.float().cpu().numpy()

