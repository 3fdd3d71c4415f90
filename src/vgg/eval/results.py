"""What an evaluation returns: the posteriors of each (net, method, test scale) kept
apart (``Piece``), their fusion and errors (``EvalResult``), read back from or written to
a posteriors file (``vgg.eval.fusion``), so that single-scale, multi-scale, dense,
multi-crop, "both" and fused numbers all come from one run (:meth:`EvalResult.select`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, VggError
from ..model import NET_STRIDE
from . import metrics
from .fusion import Posteriors, fuse

METHODS = ("dense", "multicrop", "both", "center")
# the single-network methods a piece can hold; "both" = dense + multicrop
PIECE_METHODS = {"dense": ("dense",), "multicrop": ("multicrop",),
                 "both": ("dense", "multicrop"), "center": ("center",)}


@dataclass
class Piece:
    """Posteriors (N, K) of one net with one method at one test scale. ``flip``: whether
    the mirror image was averaged in (never for the centre crop). ``scale`` is None for
    posteriors read back from a file, whose scales are in the result's ``scales``.
    ``stride``: the output stride of dense application (SPEC 6b; None for multi-crop and
    centre pieces; for a file, its label: ``"32 & 4"`` when it fuses several)."""

    net: int
    method: str  # "dense" | "multicrop" | "center"
    scale: int | None
    posteriors: np.ndarray
    flip: bool = False
    stride: int | str | None = None


def stride_label(strides: Sequence[int | str | None]) -> int | str | None:
    """The dense output stride of several parts, as results record it (``dense_stride``):
    the stride when they share one, ``"32 & 4"`` (in order of appearance) when they
    differ, None when no part is dense. Labels of earlier fusions are split again."""
    seen: list[int] = []
    for s in strides:
        for v in ([] if s is None else str(s).split(" & ")):
            if int(v) not in seen:
                seen.append(int(v))
    if not seen:
        return None
    return seen[0] if len(seen) == 1 else " & ".join(map(str, seen))


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
    # of the dense pieces: one stride, "a & b" when they differ, None without dense pieces
    dense_stride: int | str | None = field(init=False)

    def __post_init__(self) -> None:
        self.posteriors = combine_pieces(self.pieces)
        self.dense_stride = stride_label([p.stride for p in self.pieces])
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
            pieces=[Piece(remap[p.net], p.method, p.scale, p.posteriors, p.flip, p.stride)
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
                "precision": self.precision, "dense_stride": self.dense_stride}

    def table_row(self) -> dict[str, Any]:
        """One row of the paper's tables (see ``vgg.report.paper_table``)."""
        return {"config": " & ".join(self.configs),
                "train_scale": " & ".join(dict.fromkeys(self.train_scales)),
                "test_scale": " & ".join(dict.fromkeys(",".join(map(str, s))
                                                       for s in self.scales)),
                "method": self.method, "dense_stride": self.dense_stride,
                "precision": self.precision,
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
            if p.stride is not None:
                entry["dense_stride"] = p.stride
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
    # ... and those written before dense strides existed applied the net at stride 32
    stride = stride_label([m.get("dense_stride", NET_STRIDE) if _has_dense(m) else None
                           for m in parts])
    return EvalResult(method=method, nets=nets, configs=configs, train_scales=train,
                      scales=scales, flip=flip, classes=post.classes,
                      image_ids=post.image_ids, labels=post.labels,
                      pieces=[Piece(0, method, None, post.posteriors, flip, stride)],
                      precision=precision)


def _has_dense(meta: dict[str, Any]) -> bool:
    """Whether a saved evaluation's method ("dense", "both", "center & dense", ...) holds
    dense posteriors."""
    method = str(meta.get("method", ""))
    return method == "both" or "dense" in method.split(" & ")


def fuse_results(results: Sequence[EvalResult]) -> EvalResult:
    """Average several results on the same images (e.g. two nets evaluated separately)."""
    return result_from_posteriors(fuse([r.to_posteriors() for r in results]))
