"""The result of a localisation evaluation (Appendix A): per-image guesses and ground
truth, the errors of the nets and of the two baselines (:mod:`.scoring`), and the saved
boxes file (``.npz``, readable with ``allow_pickle=False``) from which fusion and
re-scoring (:mod:`.fusion`) work without running a net."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import atomic_write
from ..errors import VggError
from ..model import NET_STRIDE
from ..npz import Array, json_meta, read_npz
from . import scoring


@dataclass
class LocResult:
    """Per-image guesses and ground truth of one localisation evaluation, with the
    errors of the nets and of the two baselines.

    ``guesses[i]``: [(class, score, (x0, y0, x1, y1))], best first (one for the simple
    protocol); ``gt[i]``: [(class, (x0, y0, x1, y1))]; ``sizes[i]`` = (width, height).
    ``raw``: the unmerged boxes (image, class, xyxy, score, scale Q) for fusion and
    re-scoring. Full protocol only: ``dense_stride``, the output stride of each
    localisation net (pixels between positions, SPEC 6b); ``class_choice``, "per-scale" or
    "image" (``vgg.localize.evaluate``); ``classifier_scales`` and ``classifier_stride``,
    the Q and stride of the classifier's image-level posterior (the rating).
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
    dense_stride: list[int] = field(default_factory=list)
    class_choice: str | None = None
    classifier_scales: list[int] | None = None
    classifier_stride: int | None = None
    errors: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        self.errors = scoring.loc_errors(self.protocol, self.guesses, self.gt, self.sizes,
                                         self.mean_box, self.posteriors, self.labels)

    @property
    def n_images(self) -> int:
        return len(self.image_ids)

    @property
    def top1_err(self) -> float:
        return self.errors["top1_err"]

    @property
    def top5_err(self) -> float | None:
        return self.errors.get("top5_err")

    def mean_iou(self) -> float:
        """:func:`.scoring.mean_iou` of the guesses (the first guess's IoU)."""
        return scoring.mean_iou(self.guesses, self.gt)

    def table_row(self) -> dict[str, Any]:
        return {"config": " & ".join(dict.fromkeys(self.configs)),
                "head": " & ".join(dict.fromkeys(self.heads)),
                "tuned": " & ".join(dict.fromkeys(self.tuned)),
                "train_scale": " & ".join(dict.fromkeys(self.train_scales)),
                "test_scale": " & ".join(dict.fromkeys(",".join(map(str, s))
                                                       for s in self.scales)),
                "dense_stride": " & ".join(dict.fromkeys(map(str, self.dense_stride))) or "-",
                "protocol": self.protocol + (" (fused)" if len(self.nets) > 1 else ""),
                "classes": self.class_choice or "-",
                "precision": self.precision,
                **{k: v for k, v in self.errors.items() if not k.startswith("cls_")}}

    def to_json(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "nets": self.nets, "config": self.configs,
                "head": self.heads, "tuned": self.tuned, "train_scale": self.train_scales,
                "scales": self.scales, "dense_stride": self.dense_stride or None,
                "classes": self.class_choice, "classifier": self.classifier,
                "classifier_scales": self.classifier_scales,
                "classifier_dense_stride": self.classifier_stride,
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
                "skipped": self.skipped, "precision": self.precision,
                "dense_stride": self.dense_stride, "classes": self.class_choice,
                "classifier_scales": self.classifier_scales,
                "classifier_dense_stride": self.classifier_stride}


# the arrays of a saved boxes file (vgg.npz: N images, K classes, G ground-truth boxes,
# M guesses per image, R raw boxes)
BOXES_NPZ = {"image_ids": Array("U", ("N",)), "classes": Array("U", ("K",)),
             "labels": Array("iu", ("N",)), "sizes": Array("f", ("N", 2)),
             "gt_image": Array("iu", ("G",)), "gt_class": Array("iu", ("G",)),
             "gt_boxes": Array("f", ("G", 4)), "guess_class": Array("iu", ("N", "M")),
             "guess_score": Array("f", ("N", "M")), "guess_boxes": Array("f", ("N", "M", 4)),
             "meta": Array("U", ()), "posteriors": Array("f", ("N", "K"), required=False),
             "raw_image": Array("iu", ("R",), False), "raw_class": Array("iu", ("R",), False),
             "raw_boxes": Array("f", ("R", 4), False), "raw_scores": Array("f", ("R",), False)}


def load_saved(path: str | os.PathLike[str]) -> LocResult:
    """A result written by :meth:`LocResult.save` (:func:`vgg.npz.read_npz`);
    ``VggError`` naming the file if it is missing or not such a file."""
    d = read_npz(path, BOXES_NPZ, "boxes")
    meta = json_meta(d, path)
    floats = [d[k] for k in ("sizes", "gt_boxes", "guess_boxes", "guess_score")]
    floats += [d[k] for k in d if k.startswith("raw_") or k == "posteriors"]
    if any(not np.isfinite(np.asarray(a, dtype=np.float64)).all() for a in floats
           if np.asarray(a).dtype.kind == "f"):
        raise VggError(f"{path} holds non-finite boxes or scores (NaN or inf); refusing "
                       f"to score them")
    n, k = len(d["image_ids"]), len(d["classes"])
    for key, hi in (("labels", k), ("gt_image", n), ("gt_class", k), ("guess_class", k),
                    ("raw_image", n), ("raw_class", k)):
        a = d.get(key)
        if a is not None and a.size and (a.min() < (-1 if key == "guess_class" else 0)
                                         or a.max() >= hi):
            raise VggError(f"{path}: {key!r} holds values outside 0..{hi - 1}")
    missing = {"protocol", "nets", "configs", "heads", "tuned", "train_scales", "scales",
               "mean_box"} - set(meta)
    if missing:
        raise VggError(f"{path}: its meta lacks {', '.join(sorted(missing))}; not a vgg "
                       f"boxes file")
    n = len(d["image_ids"])
    gt: list[list[tuple[int, tuple[float, ...]]]] = [[] for _ in range(n)]
    for i, c, b in zip(d["gt_image"], d["gt_class"], d["gt_boxes"]):
        gt[int(i)].append((int(c), tuple(float(v) for v in b)))
    guesses = [[(int(c), float(s), tuple(float(v) for v in b))
                for c, s, b in zip(d["guess_class"][i], d["guess_score"][i],
                                   d["guess_boxes"][i]) if c >= 0] for i in range(n)]
    raw = {k[4:]: d[k] for k in d if k.startswith("raw_")}
    full = meta["protocol"] == "full"
    # files written before the dense stride and the class choice were recorded: the
    # protocol of then (stride 32, the image-level top-5, the classifier at the test scales)
    old = full and "dense_stride" not in meta
    return LocResult(
        protocol=meta["protocol"], nets=meta["nets"], configs=meta["configs"],
        heads=meta["heads"], tuned=meta["tuned"], train_scales=meta["train_scales"],
        scales=meta["scales"], classes=[str(c) for c in d["classes"]],
        image_ids=[str(i) for i in d["image_ids"]], labels=d["labels"], sizes=d["sizes"],
        gt=gt, guesses=guesses, mean_box=tuple(meta["mean_box"]), raw=raw,
        posteriors=d.get("posteriors"), classifier=meta.get("classifier"),
        threshold=meta.get("threshold"), skipped=list(meta.get("skipped", [])),
        precision=str(meta.get("precision") or "fp32"),
        dense_stride=([NET_STRIDE] * len(meta["nets"]) if old
                      else [int(v) for v in meta.get("dense_stride") or []]),
        class_choice="image" if old else meta.get("classes"),
        classifier_scales=(sorted({q for qs in meta["scales"] for q in qs}) if old
                           else meta.get("classifier_scales")),
        classifier_stride=NET_STRIDE if old else meta.get("classifier_dense_stride"))
