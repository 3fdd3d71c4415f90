"""The testing framework of Sect. 3.2: dense, multi-crop, "multi-crop & dense" and centre-crop
evaluation at one or several test scales Q, for one net or a fusion of nets.

One pass over the data per test scale: every image is decoded and rescaled once (smaller
side Q), batched with images of the same rescaled size (aspect ratio kept), normalised on
the device, and every requested (net, method) runs on that batch. The result keeps the
posteriors of each (net, method, scale) separately, so single-scale, multi-scale, dense,
multi-crop, "both" and fused numbers all come from one run (:meth:`EvalResult.select`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..checkpoint import Checkpoint, require_head
from ..devices import pick_device
from ..errors import BadImageError, ConfigError, DataError, VggError
from ..model import VGG
from ..precision import Precision, resolve_precision
from ..progress import Progress
from ..settings import MAX_BATCH, check_int, check_scales as _check_sides, check_workers
from ..weights import open_weights as load_checkpoint
from . import metrics
from .dense import dense_posteriors, size_buckets
from .fusion import Posteriors, check_same_classes, fuse
from .multicrop import center_posteriors, multicrop_posteriors

log = logging.getLogger(__name__)

METHODS = ("dense", "multicrop", "both", "center")
# the single-network methods a piece can hold; "both" = dense + multicrop
PIECE_METHODS = {"dense": ("dense",), "multicrop": ("multicrop",),
                 "both": ("dense", "multicrop"), "center": ("center",)}
PAPER_CROP = 224
PAPER_SCALE_STEP = 32  # Q = {S-32, S, S+32} for 224 crops


# ---------------------------------------------------------------------------- test scales

def crop_train_scale(crop: int) -> int:
    """The fixed training scale a net of this crop is assumed to have when its checkpoint
    does not say: the paper's 256 for 224 crops, scaled (round(crop * 256 / 224))."""
    return int(round(crop * 256 / PAPER_CROP))


def default_scales(train_scale: Sequence[int] | int | None, crop: int = PAPER_CROP,
                   multi_scale: bool = True) -> list[int]:
    """Sect. 3.2 test scales Q for a net trained at ``train_scale`` (S or [s_min, s_max]).

    Fixed S: Q = {S-32, S, S+32}; jittered: Q = {s_min, (s_min+s_max)/2, s_max}. Single
    scale (``multi_scale=False``): Q = S, or the middle of the range. The step 32 is the
    paper's for 224 crops and scales with the crop (5 pixels for a 32 crop). Q below the
    crop is raised to the crop (logged). ``None`` means S = round(crop * 256 / 224).
    """
    if train_scale is None:
        s_min = s_max = crop_train_scale(crop)
    elif isinstance(train_scale, (int, np.integer)):
        s_min = s_max = int(train_scale)
    else:
        ts = [int(v) for v in train_scale]
        if len(ts) == 1:
            ts = ts * 2
        if len(ts) != 2 or ts[0] > ts[1] or ts[0] < 1:
            raise ConfigError(f"train scale must be S or [s_min, s_max] with s_min <= s_max, "
                              f"got {list(train_scale)}")
        s_min, s_max = ts
    mid = (s_min + s_max) // 2
    if not multi_scale:
        qs = [mid]
    elif s_min == s_max:
        step = max(1, int(round(PAPER_SCALE_STEP * crop / PAPER_CROP)))
        qs = [s_min - step, s_min, s_min + step]
    else:
        qs = [s_min, mid, s_max]
    if min(qs) < crop:
        log.info("test scales %s raised to at least the crop %d", qs, crop)
    return sorted(set(max(q, crop) for q in qs))


def parse_scales(text: str) -> list[int]:
    """``"256,384,512"`` -> [256, 384, 512]; ConfigError on anything else."""
    try:
        qs = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise ConfigError(f"--scales wants comma-separated integers like 256,384,512, "
                          f"got {text!r}") from None
    if not qs:
        raise ConfigError(f"--scales wants positive integers, got {text!r}")
    return _check_sides("scales", qs)


def check_scales(scales: Sequence[int], crop: int, name: str) -> list[int]:
    qs = _check_sides("scales", list(scales))
    small = [q for q in qs if q < crop]
    if small:
        raise ConfigError(f"test scale(s) {small} smaller than the crop {crop} of {name}: "
                          f"the image's smaller side Q must be >= the crop")
    return qs


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


# ---------------------------------------------------------------------------- data

def _collate_by_shape(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``ImageDataset`` samples of one size bucket -> ``{"groups": [(indices int64 (n,),
    images uint8 (n, 3, H, W))], "bad": [(row, path, reason)]}``. A bucket normally holds
    one shape; grouping by the decoded shape keeps a header that lied from breaking it."""
    groups: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}
    bad = []
    for s in samples:
        if "bad" in s:
            bad.append((s["index"], s["bad"], s.get("reason", "")))
            continue
        groups.setdefault(tuple(s["image"].shape), []).append((s["index"], s["image"]))
    return {"groups": [(torch.tensor([i for i, _ in g], dtype=torch.int64),
                        torch.stack([img for _, img in g])) for g in groups.values()],
            "bad": bad}


def _sizes(paths: Sequence[Path], progress: bool) -> tuple[list[tuple[int, int] | None],
                                                          dict[int, str]]:
    """Header sizes (no decoding) and the reasons of the files that cannot be read."""
    from ..data.decode import image_size

    out: list[tuple[int, int] | None] = []
    bad: dict[int, str] = {}
    with Progress(len(paths), "image sizes", "img",
                  enabled=progress and len(paths) >= 2000) as bar:
        for i, p in enumerate(paths):
            try:
                out.append(tuple(image_size(p)))  # type: ignore[arg-type]
            except BadImageError as e:
                out.append(None)
                bad[i] = e.reason
            bar.update(1)
    return out, bad


def image_ids(index: Any) -> list[str]:
    """Stable ids: the path relative to the index root (else the path as given)."""
    root = getattr(index, "root", None)
    ids = []
    for path, _ in index.samples:
        p = Path(path)
        if root is not None:
            with contextlib.suppress(ValueError):
                p = p.relative_to(root)
        ids.append(p.as_posix())
    return ids


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


# ---------------------------------------------------------------------------- results

@dataclass
class Piece:
    """Posteriors (N, K) of one net with one method at one test scale. ``flip``: whether
    the mirror image was averaged in (never for the centre crop). ``scale`` is None for
    posteriors read back from a file, whose scales are in the result's ``scales``."""

    net: int
    method: str  # "dense" | "multicrop" | "center"
    scale: int | None
    posteriors: np.ndarray
    flip: bool = False


def combine_pieces(pieces: Sequence[Piece]) -> np.ndarray:
    """Fused posteriors: the mean over nets of each net's own mean over its (method,
    scale) pieces (Sect. 3.2 multi-scale and multi-crop & dense within a net, Sect. 4.4
    ConvNet fusion across nets). A net evaluated at three scales weighs as much as one
    evaluated at two."""
    if not pieces:
        raise VggError("no posteriors to combine")
    per_net = []
    for j in sorted({p.net for p in pieces}):
        mine = [p.posteriors for p in pieces if p.net == j]
        per_net.append(np.mean(mine, axis=0, dtype=np.float64))
    return np.mean(per_net, axis=0).astype(np.float32)


@dataclass
class EvalResult:
    """Metrics and per-image posteriors of one evaluation (:func:`combine_pieces` of its
    pieces).

    ``pieces`` keep each (net, method, scale) apart; :meth:`select` recombines a subset
    without rerunning a network."""

    method: str
    nets: list[str]
    configs: list[str]
    train_scales: list[str]
    scales: list[list[int]]  # per net
    flip: bool
    classes: list[str]
    image_ids: list[str]
    labels: np.ndarray
    pieces: list[Piece]
    skipped: list[str] = field(default_factory=list)
    skipped_reasons: dict[str, str] = field(default_factory=dict)
    precision: str = "fp32"  # of the networks ("fp32", "bf16", "fp16"; "a & b" when fused)
    posteriors: np.ndarray = field(init=False)
    top1_err: float = field(init=False)
    top5_err: float = field(init=False)

    def __post_init__(self) -> None:
        self.posteriors = combine_pieces(self.pieces)
        self.top1_err = metrics.top1_error(self.posteriors, self.labels)
        self.top5_err = metrics.top5_error(self.posteriors, self.labels)

    @property
    def n_images(self) -> int:
        return int(self.labels.shape[0])

    def select(self, method: str | None = None, scales: Sequence[int] | None = None,
               nets: Sequence[int] | None = None) -> EvalResult:
        """The result restricted to some method ("dense", "multicrop", "both", "center"),
        test scales and nets (indices), by recombining the kept pieces."""
        if method is not None and method not in METHODS:
            raise ConfigError(f"unknown method {method!r}; choose from {METHODS}")
        keep_m = PIECE_METHODS[method] if method else None
        keep = [p for p in self.pieces
                if (keep_m is None or p.method in keep_m)
                and (scales is None or p.scale in scales)
                and (nets is None or p.net in nets)]
        if not keep:
            raise VggError(f"this result holds no posteriors for method={method}, "
                           f"scales={scales}, nets={nets} (it has "
                           f"{sorted({(p.method, p.scale) for p in self.pieces}, key=str)})")
        if method == "both" and {p.method for p in keep} != {"dense", "multicrop"}:
            raise VggError("'both' needs dense and multicrop posteriors in the result")
        used = sorted({p.net for p in keep})
        remap = {old: new for new, old in enumerate(used)}
        methods = {p.method for p in keep}
        m = "both" if methods == {"dense", "multicrop"} else " & ".join(sorted(methods))
        return EvalResult(
            method=m, nets=[self.nets[i] for i in used], configs=[self.configs[i] for i in used],
            train_scales=[self.train_scales[i] for i in used],
            scales=[sorted({p.scale for p in keep if p.net == i}) if all(
                p.scale is not None for p in keep) else self.scales[i] for i in used],
            flip=any(p.flip for p in keep), classes=self.classes, image_ids=self.image_ids,
            labels=self.labels, skipped=self.skipped, skipped_reasons=self.skipped_reasons,
            pieces=[Piece(remap[p.net], p.method, p.scale, p.posteriors, p.flip)
                    for p in keep], precision=self.precision)

    def to_posteriors(self) -> Posteriors:
        return Posteriors(image_ids=self.image_ids, classes=self.classes, labels=self.labels,
                          posteriors=self.posteriors, meta=self._meta())

    def save_posteriors(self, path: str | os.PathLike[str]) -> Path:
        """``.npz`` with image ids, class list, labels and float32 posteriors (for
        ``vgg fuse``)."""
        return self.to_posteriors().save(path)

    def _meta(self) -> dict[str, Any]:
        return {"method": self.method, "nets": self.nets, "config": self.configs,
                "train_scale": self.train_scales, "scales": self.scales, "flip": self.flip,
                "precision": self.precision}

    def table_row(self) -> dict[str, Any]:
        """One row of the paper's tables (see ``vgg.report.paper_table``)."""
        return {"config": " & ".join(self.configs),
                "train_scale": " & ".join(dict.fromkeys(self.train_scales)),
                "test_scale": " & ".join(dict.fromkeys(",".join(map(str, s))
                                                       for s in self.scales)),
                "method": self.method, "precision": self.precision,
                "top1_err": self.top1_err, "top5_err": self.top5_err}

    def to_json(self, confused: int = 10) -> dict[str, Any]:
        """JSON-ready: ``top1_err``, ``top5_err`` (fractions), ``n_images``, per-class
        accuracy, most confused pairs, what was evaluated, and each (net, method, scale)
        piece's own errors (pieces read back from a file have no scale of their own)."""
        summary = metrics.summarize(self.posteriors, self.labels, self.classes, confused)
        pieces = []
        for p in self.pieces:
            entry: dict[str, Any] = {"net": p.net, "method": p.method, "flip": p.flip}
            if p.scale is not None:
                entry["scale"] = p.scale
            entry |= {"top1_err": metrics.top1_error(p.posteriors, self.labels),
                      "top5_err": metrics.top5_error(p.posteriors, self.labels)}
            pieces.append(entry)
        return summary | self._meta() | {
            "n_skipped": len(self.skipped), "skipped": self.skipped[:100],
            "pieces": pieces}


def result_from_posteriors(post: Posteriors) -> EvalResult:
    """An ``EvalResult`` around saved (possibly fused) posteriors, for reports."""
    meta = post.meta

    def flat(m: dict[str, Any]) -> list[dict[str, Any]]:  # fusions of fusions
        return [x for f in m["fused"] for x in flat(f)] if "fused" in m else [m]

    parts = flat(meta)
    # the same net at several scales or methods is one row entry with merged scales
    by_net: dict[str, tuple[str, str, set[int]]] = {}
    for m in parts:
        names = m.get("nets") or [m.get("source") or post.name]
        for i, name in enumerate(names):
            cfg = (m.get("config") or ["?"] * len(names))[i]
            ts = (m.get("train_scale") or ["?"] * len(names))[i]
            qs = (m.get("scales") or [[]] * len(names))[i]
            by_net.setdefault(name, (cfg, ts, set()))[2].update(int(q) for q in qs)
    nets = list(by_net)
    configs = [by_net[n][0] for n in nets]
    train = [by_net[n][1] for n in nets]
    scales = [sorted(by_net[n][2]) for n in nets]
    methods = {m.get("method", "?") for m in parts}
    if "both" in methods:
        methods = (methods - {"both"}) | {"dense", "multicrop"}
    method = "both" if methods == {"dense", "multicrop"} else " & ".join(sorted(methods))
    flip = any(bool(m.get("flip", False)) for m in parts)
    # files written before precisions existed were fp32
    precision = " & ".join(dict.fromkeys(str(m.get("precision") or "fp32") for m in parts))
    return EvalResult(method=method, nets=nets, configs=configs, train_scales=train,
                      scales=scales, flip=flip, classes=post.classes,
                      image_ids=post.image_ids, labels=post.labels,
                      pieces=[Piece(0, method, None, post.posteriors, flip)],
                      precision=precision)


# ---------------------------------------------------------------------------- evaluation

def evaluate(models: Sequence[VGG | Checkpoint | EvalNet | str | os.PathLike[str]]
             | VGG | str | os.PathLike[str],
             index: Any, method: str = "dense", scales: Sequence[int] | None = None,
             flip: bool = True, batch_size: int = 16,
             device: str | torch.device | None = None, workers: int | None = None, *,
             precision: str = "fp32", train_scale: Sequence[int] | None = None,
             multi_scale: bool = True, progress: bool = True,
             allow_empty: bool = False,
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
    ``allow_empty``: return a result with zero images instead of raising when no image
    can be read (training validation on one rank's share). ``on_bad(path, reason)`` is
    told of each unreadable image (default: a warning per image).
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
    single = method == "center" or not multi_scale
    per_net = [check_scales(scales, n.crop, n.name) if scales is not None
               else default_scales(n.train_scale, n.crop, multi_scale=not single)
               for n in nets]
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
               method=method, on_bad=on_bad or _warn_bad)
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
        pieces=[Piece(j, m, q, arr[keep], flip and m != "center")
                for (j, m, q), arr in pieces.items()], precision=prec.name)


def _warn_bad(path: str, reason: str) -> None:
    log.warning("skipping unreadable image %s: %s", path, reason)


class RescaledImages:
    """The images of an index rescaled to test scales Q (Sect. 3.2), in batches of one
    rescaled size: the data half of every evaluator (classification here, localisation in
    ``vgg.localize.evaluate``). Image sizes are read from the headers once; unreadable
    files are reported to ``on_bad(path, reason)`` once and left out (``bad``)."""

    def __init__(self, index: Any, batch_size: int, workers: int, dev: torch.device,
                 progress: bool, on_bad: Callable[[str, str], None] | None = None) -> None:
        from ..data.decode import Region

        self.index = index
        # a sample may be a box of an image (``Region``: box-level features)
        self.paths = [p if isinstance(p, Region) else Path(p) for p, _ in index.samples]
        self.batch_size, self.workers, self.dev = batch_size, workers, dev
        self.progress = progress
        self.on_bad = on_bad or _warn_bad
        self.sizes, self.bad = _sizes(self.paths, progress)
        for i, reason in self.bad.items():
            self.on_bad(str(self.paths[i]), reason)

    @property
    def ok_rows(self) -> list[int]:
        return [i for i, s in enumerate(self.sizes) if s is not None and i not in self.bad]

    def batches(self, q: int, desc: str, rows: Sequence[int] | None = None
                ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """(rows (n,) int64 numpy, images uint8 (n, 3, H, W) on the device) per batch of
        images rescaled so that their smaller side is ``q``; only ``rows`` when given
        (the rest of an interrupted pass)."""
        from ..data.loaders import ImageDataset
        from ..data.transforms import RescaleTransform, rescale_size

        rows_ok = self.ok_rows
        if rows is not None:
            wanted = set(int(r) for r in rows)
            rows_ok = [r for r in rows_ok if r in wanted]
        rescaled = [rescale_size(*self.sizes[i], q) for i in rows_ok]  # type: ignore[misc]
        buckets = [[rows_ok[i] for i in b] for b in size_buckets(rescaled, self.batch_size)]
        dataset = ImageDataset(self.index, RescaleTransform(q), check=False)
        loader = DataLoader(dataset, batch_sampler=buckets, collate_fn=_collate_by_shape,
                            num_workers=self.workers, pin_memory=self.dev.type == "cuda",
                            persistent_workers=False)
        with Progress(len(rows_ok), f"{desc} Q={q}", "img", enabled=self.progress) as bar:
            for batch in loader:
                for row, path, reason in batch["bad"]:
                    if row not in self.bad:
                        self.bad[row] = reason
                        self.on_bad(path, reason)
                for rows, images in batch["groups"]:
                    yield rows.numpy(), images.to(self.dev, non_blocking=True)
                    bar.update(len(rows))
                bar.update(len(batch["bad"]))


def normalise(model: VGG, x8: torch.Tensor) -> torch.Tensor:
    """uint8 RGB batch -> the net's input (its stored preprocessing computed in fp32, then
    cast to the dtype of its weights; NHWC on CUDA)."""
    x = model.preprocess(x8, dtype=next(model.parameters()).dtype)
    if x.is_cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _run(nets: list[EvalNet], index: Any, per_net: list[list[int]], kinds: tuple[str, ...],
         pieces: dict[tuple[int, str, int], np.ndarray],
         filled: dict[tuple[int, str, int], np.ndarray], *, flip: bool, batch_size: int,
         dev: torch.device, workers: int, prec: Precision, progress: bool,
         method: str, on_bad: Callable[[str, str], None]) -> dict[int, str]:
    """One pass over the data per test scale, every (net, method) on each batch; fills
    ``pieces`` and ``filled`` in place and returns {row: reason} of the unreadable images."""
    data = RescaledImages(index, batch_size, workers, dev, progress, on_bad)
    models, fcns = [], []
    for n in nets:
        m = prec.net(n.model.eval().to(dev))  # the net itself, or its bf16/fp16 copy
        models.append(m)
        fcns.append(m.to_fully_conv())
    for q in sorted({q for qs in per_net for q in qs}):
        active = [j for j, qs in enumerate(per_net) if q in qs]
        with torch.inference_mode(), prec.autocast():
            for rows, x8 in data.batches(q, method):
                _forward(nets, models, fcns, active, kinds, pieces, q, rows, x8, flip)
                for j in active:
                    for m in kinds:
                        filled[(j, m, q)][rows] = True
    return data.bad


def _forward(nets: list[EvalNet], models: list[VGG], fcns: list[Any], active: list[int],
             kinds: tuple[str, ...], pieces: dict[tuple[int, str, int], np.ndarray], q: int,
             rows: np.ndarray, x8: torch.Tensor, flip: bool) -> None:
    for j in active:
        net, fcn = nets[j], fcns[j]
        x = normalise(models[j], x8)
        for m in kinds:
            if m == "dense":
                p = dense_posteriors(fcn, x, flip)
            elif m == "multicrop":
                p = multicrop_posteriors(fcn, x, net.crop, flip)
            else:
                p = center_posteriors(fcn, x, net.crop)
            pieces[(j, m, q)][rows] = p.float().cpu().numpy()


def fuse_results(results: Sequence[EvalResult]) -> EvalResult:
    """Average several results on the same images (e.g. two nets evaluated separately)."""
    return result_from_posteriors(fuse([r.to_posteriors() for r in results]))
