"""The protocols of Appendix B (Table 11, and object boxes) on fixed descriptors;
Table 12's action classification is :mod:`.actions`.

- VOC-2007 / VOC-2012 (:func:`run_voc`): SVMs trained on trainval, tested on test (on val,
  trained on train, when the test images have no annotations, as for VOC-2012); per-class
  AP and mAP, VOC-2007's 11-point interpolated AP and VOC-2010+'s area AP, "difficult"
  images left out per class as the devkit does.
- Caltech-101 / 256 and any class-folder tree (:func:`run_splits`): N seeded random splits
  of ``train_per_class`` training and up to ``test_per_class`` test images per class;
  mean class recall, mean and standard deviation over the splits.
- Object-box classification (:func:`run_boxes`): every labelled object box is a sample,
  classified into the object classes from the descriptor of the whole image alone and
  stacked with the descriptor of the box. Table 12's setting applied to objects, not
  Table 12 itself (VOC-2012 actions: ``--protocol actions``, :mod:`.actions`).
- Saved features (:func:`run_saved`): any of these from ``vgg features`` files.

Every result also holds the same pipeline on randomly initialised nets of the same
architectures (``baseline``), which shows what the trained features add.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ..eval import metrics
from ..model import NET_STRIDE
from .features import ExtractOptions, Features, FeatureNet, random_like, stack_features
from .report import Outcome, TransferReport
from .svm import C_GRID, describe, train_svms

log = logging.getLogger(__name__)

PROTOCOLS = ("voc", "caltech", "classes", "boxes", "actions")
AP_NAMES = {"voc07_11point": "mAP (VOC-2007 11-point)", "area": "mAP (VOC-2010+ area)"}
RECALL = "mean class recall"
# Caltech's counts per class (Appendix B): 30 train / 50 test (101), 60 train (256)
CALTECH_TRAIN = {101: 30, 256: 60}
CALTECH_TEST = 50


# ---------------------------------------------------------------------------- scoring

def _settings(feats: Features) -> dict[str, Any]:
    m = feats.meta
    return {"nets": list(m.get("nets", [])), "scales": list(m.get("scales", [])),
            "combine": str(m.get("combine", "")), "layer": str(m.get("layer", "")),
            "precision": str(m.get("precision") or "fp32"),  # files before it: fp32
            "dense_stride": m.get("dense_stride", NET_STRIDE)}  # ... and stride 32


def _curves(scores: np.ndarray, test: Features) -> dict[str, tuple[list[float], list[float]]]:
    out = {}
    for k, c in enumerate(test.classes):
        ig = None if test.ignore is None else test.ignore[:, k]
        p, r = metrics.precision_recall(scores[:, k], test.targets[:, k] > 0, ig)
        step = max(1, len(p) // 400)  # enough points for a plot
        out[c] = ([float(v) for v in p[::step]], [float(v) for v in r[::step]])
    return out


def score_ap(train: Features, test: Features, label: str, seed: int = 0,
             C_grid: Sequence[float] = C_GRID, jobs: int | None = None,
             ap_kind: str = "voc07_11point", solver: str = "torch",
             kinds: Sequence[str] = ("voc07_11point", "area")) -> list[Outcome]:
    """SVMs on ``train``, AP per class on ``test``: one outcome per AP kind of ``kinds``
    (11-point, then area); the C is chosen by held-out mAP of ``ap_kind``; the first kind
    carries the precision-recall curves."""
    _same_classes(train, test)
    svm = train_svms(train.X, train.targets, train.ignore, multi_label=True, C_grid=C_grid,
                     seed=seed, jobs=jobs, ap_kind=ap_kind, solver=solver)
    scores = svm.scores(test.X)
    out = []
    for kind in kinds:
        ap = metrics.class_average_precisions(scores, test.targets, test.ignore, kind)
        scored = np.isfinite(ap)
        per = {c: float(a) for c, a in zip(test.classes, ap) if math.isfinite(a)}
        value = float(np.mean(ap[scored])) if scored.any() else float("nan")
        out.append(Outcome(label, metric=AP_NAMES[kind], values=[value], per_class=per,
                           details=[{**describe(svm), "n_train": len(train),
                                     "n_test": len(test),
                                     "classes_scored": int(scored.sum())}],
                           curves=_curves(scores, test) if kind == kinds[0] else None,
                           **_settings(train)))
    return out


def score_recall(train: Features, test: Features, seed: int = 0,
                 C_grid: Sequence[float] = C_GRID, jobs: int | None = None,
                 solver: str = "torch") -> tuple[float, np.ndarray, dict[str, Any]]:
    """SVMs on ``train`` (single-label), mean class recall on ``test``; also the (K,)
    per-class recalls and the fit's details."""
    _same_classes(train, test)
    svm = train_svms(train.X, train.targets, None, multi_label=False, C_grid=C_grid,
                     seed=seed, jobs=jobs, solver=solver)
    scores = svm.scores(test.X)
    r = metrics.class_recalls(scores, test.labels)
    return metrics.mean_class_recall(scores, test.labels), r, {
        **describe(svm), "n_train": len(train), "n_test": len(test)}


# the settings two features files must share to be trained on and tested on together
SETTINGS = ("configs", "layer", "scales", "combine", "flip", "precision", "dims",
            "dense_stride", "dataset")


def check_pair(train: Features, test: Features, train_name: str = "the training file",
               test_name: str = "the test file") -> None:
    """Refuse test features made otherwise than the training ones: another net (the
    weights' digest, or the net's name for files without one), layer, scales,
    combination, mirror, precision, dataset; or holding training images. Names every
    differing setting with both values."""
    a, b = train.meta, test.meta
    keys = [k for k in SETTINGS if k in a and k in b]
    keys.insert(0, "weights" if "weights" in a and "weights" in b else "nets")
    diff = [k for k in keys if a.get(k) != b.get(k)]
    if diff:
        what = "; ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in diff)
        raise DataError(f"{test_name} was not made like {train_name} (differing "
                        f"{', '.join(diff)}: {what}): extract both with the same nets and "
                        f"settings")
    if a.get("data") == b.get("data"):  # ids are relative to this root
        both = set(train.ids) & set(test.ids)
        if both:
            raise DataError(f"{len(both)} of the {len(test)} images of {test_name} are "
                            f"training images of {train_name} (e.g. {sorted(both)[0]}): "
                            f"give features of another split")


def _same_classes(train: Features, test: Features) -> None:
    if train.classes != test.classes:
        raise DataError(f"training and test features have different classes "
                        f"({len(train.classes)} vs {len(test.classes)}: "
                        f"{', '.join(train.classes[:3])} ... vs "
                        f"{', '.join(test.classes[:3])} ...)")
    if train.dim != test.dim:
        raise DataError(f"training and test descriptors differ in length "
                        f"({train.dim} vs {test.dim}): made with other nets or settings")


# ---------------------------------------------------------------------------- splits

def class_splits(labels: Sequence[int] | np.ndarray, num_classes: int, train_per_class: int,
                 test_per_class: int | None, splits: int = 3, seed: int = 0,
                 class_names: Sequence[str] | None = None
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Caltech's protocol: ``splits`` random draws, each of ``train_per_class`` training
    images per class and up to ``test_per_class`` (None: all the rest) test images from
    the rest; (train rows, test rows) per split, reproducible for a seed. A class with no
    image left for testing is an error naming it."""
    y = np.asarray(labels, np.int64)
    if train_per_class < 1:
        raise ConfigError(f"--train-per-class must be >= 1, got {train_per_class}")
    if test_per_class is not None and test_per_class < 1:
        raise ConfigError(f"--test-per-class must be >= 1, got {test_per_class}")
    if splits < 1:
        raise ConfigError(f"--splits must be >= 1, got {splits}")
    counts = np.bincount(y, minlength=num_classes)
    short = [k for k in range(num_classes) if counts[k] < train_per_class + 1]
    if short:
        names = class_names or [str(k) for k in range(num_classes)]
        ex = ", ".join(f"{names[k]} ({counts[k]})" for k in short[:5])
        raise DataError(f"{len(short)} class(es) have fewer than {train_per_class} + 1 images "
                        f"(train + at least one test): {ex}{' ...' if len(short) > 5 else ''}; "
                        f"lower --train-per-class (it is {train_per_class})")
    out = []
    for s in range(splits):
        rng = np.random.default_rng([seed, s])
        tr, te = [], []
        for k in range(num_classes):
            idx = rng.permutation(np.nonzero(y == k)[0])
            tr.extend(idx[:train_per_class].tolist())
            rest = idx[train_per_class:]
            te.extend((rest if test_per_class is None else rest[:test_per_class]).tolist())
        out.append((np.array(sorted(tr), np.int64), np.array(sorted(te), np.int64)))
    return out


def pool_splits(labels: Sequence[int] | np.ndarray, pool: np.ndarray, num_classes: int,
                train_per_class: int | None, test_per_class: int | None, splits: int = 1,
                seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """A dataset that comes split (``pool`` 0: its train images, 1: its test images):
    every split trains on ``train_per_class`` random training images per class (None: all)
    and tests on up to ``test_per_class`` random test images per class (None: all)."""
    y = np.asarray(labels, np.int64)
    out = []
    for s in range(splits):
        rng = np.random.default_rng([seed, s])
        tr, te = [], []
        for k in range(num_classes):
            a = rng.permutation(np.nonzero((y == k) & (pool == 0))[0])
            b = rng.permutation(np.nonzero((y == k) & (pool == 1))[0])
            tr.extend((a if train_per_class is None else a[:train_per_class]).tolist())
            te.extend((b if test_per_class is None else b[:test_per_class]).tolist())
        out.append((np.array(sorted(tr), np.int64), np.array(sorted(te), np.int64)))
    return out


def _split_tree(data_dir: Path) -> tuple[Any, np.ndarray, str] | None:
    """A class-folder dataset that comes split (DIR/train/<class>/ and DIR/val/ or
    DIR/test/): one index of both, the pool of every image (0 train, 1 test) and the test
    split's name; None for a plain tree of class folders."""
    from ..data.folders import ImageIndex, index_split

    if not (data_dir / "train").is_dir():
        return None
    test = next((t for t in ("test", "val") if (data_dir / t).is_dir()), None)
    if test is None:
        return None
    a = index_split(data_dir, "train")
    b = index_split(data_dir, test, list(a.classes))
    both = ImageIndex(a.samples + b.samples, list(a.classes), data_dir, a.class_names,
                      meta={"layout": "split folders", "split": f"train+{test}"})
    return both, np.array([0] * len(a) + [1] * len(b)), test


def score_splits(feats: Features, splits: list[tuple[np.ndarray, np.ndarray]], label: str,
                 seed: int = 0, C_grid: Sequence[float] = C_GRID,
                 jobs: int | None = None, solver: str = "torch") -> Outcome:
    """Mean class recall on each split (rows of ``feats``), mean and std over them."""
    values, details, recalls = [], [], []
    for s, (tr, te) in enumerate(splits):
        v, r, d = score_recall(feats.subset(tr), feats.subset(te), seed + s, C_grid, jobs,
                               solver)
        if not math.isfinite(v):
            raise DataError(f"{label}: split {s + 1} of {len(splits)} gave no mean class "
                            f"recall ({len(te)} test rows, none of a class): refusing to "
                            f"average the other splits as if it had not run")
        values.append(v)
        recalls.append(r)
        details.append({"split": s, "value": v, **d})
        log.info("%s: split %d/%d: mean class recall %.1f%% (C=%g)", label, s + 1,
                 len(splits), 100 * v, d["C"])
    with np.errstate(invalid="ignore"):
        mean_r = np.nanmean(np.array(recalls), axis=0)
    per = {c: float(v) for c, v in zip(feats.classes, mean_r) if math.isfinite(v)}
    return Outcome(label, metric=RECALL, values=values, per_class=per, details=details,
                   **_settings(feats))


def _rows_of(feats: Features, ids: Sequence[str]) -> np.ndarray:
    pos = {i: r for r, i in enumerate(feats.ids)}
    return np.array([pos[i] for i in ids if i in pos], np.int64)


# ---------------------------------------------------------------------------- pipelines

def _feature_sets(nets: Sequence[FeatureNet], baseline: bool, seed: int
                  ) -> list[tuple[str, str, list[FeatureNet]]]:
    sets = [("trained", "trained", list(nets))]
    if baseline:
        sets.append(("random init", "random", [random_like(n, seed + j)
                                               for j, n in enumerate(nets)]))
    return sets


def voc_splits(data_dir: Path) -> tuple[str, str, list[str]]:
    """(train split, test split, notes) of a VOC year folder: trainval / test, or train /
    val when the test images have no annotations (VOC-2012)."""
    main = data_dir / "ImageSets" / "Main"
    if not (main / "trainval.txt").is_file() and not (main / "train.txt").is_file():
        raise DataError(f"{data_dir} is not a VOC year folder (no ImageSets/Main/trainval.txt); "
                        f"give e.g. VOCdevkit/VOC2007")
    test = main / "test.txt"
    if test.is_file():
        ids = [t.split()[0] for t in test.read_text().splitlines() if t.strip()]
        labelled = sum((data_dir / "Annotations" / f"{i}.xml").is_file() for i in ids)
        if ids and labelled == len(ids):
            return "trainval", "test", []
        if labelled:
            raise DataError(f"only {labelled} of the {len(ids)} test images of {data_dir} have "
                            f"annotations: restore Annotations/ or remove ImageSets/Main/"
                            f"test.txt to score on val")
    if not (main / "val.txt").is_file() or not (main / "train.txt").is_file():
        raise DataError(f"{data_dir}: the test images have no annotations and there is no "
                        f"train/val split to score on instead")
    return "train", "val", ["the test images have no annotations (as for VOC-2012): trained "
                            "on train, tested on val"]


def dataset_name(data_dir: Path) -> str:
    name = data_dir.resolve().name
    for year in ("2007", "2012"):
        if year in name and "voc" in name.lower():
            return f"VOC-{year}"
    if name.startswith("101_ObjectCategories"):
        return "Caltech-101"
    if name.startswith("256_ObjectCategories"):
        return "Caltech-256"
    return name


def run_voc(nets: Sequence[FeatureNet], data_dir: str | Path, opts: ExtractOptions, *,
            baseline: bool = True, seed: int = 0, C_grid: Sequence[float] = C_GRID,
            jobs: int | None = None, solver: str = "torch") -> TransferReport:
    """Table 11's VOC columns on a VOC year folder."""
    from ..data.folders import index_voc

    data_dir = Path(data_dir)
    tr_split, te_split, notes = voc_splits(data_dir)
    train_idx = index_voc(data_dir, tr_split)
    test_idx = index_voc(data_dir, te_split, list(train_idx.classes))
    name = dataset_name(data_dir)
    kind = "area" if name == "VOC-2012" else "voc07_11point"
    outcomes, skipped = [], {}
    for label, tag, fnets in _feature_sets(nets, baseline, seed):
        tr = opts.extract(fnets, train_idx, f"{tag}-{tr_split}")
        te = opts.extract(fnets, test_idx, f"{tag}-{te_split}")
        skipped.update(tr.skipped)
        skipped.update(te.skipped)
        outcomes += score_ap(tr, te, label, seed, C_grid, jobs, kind, solver)
    n_hard = int(sum(bool(d) for d in (test_idx.difficult or [])))
    if n_hard:
        notes.append(f"{n_hard} test images hold only 'difficult' objects of some class: "
                     f"left out of that class's AP (the devkit's rule)")
    return TransferReport("voc", name, f"{tr_split} ({len(train_idx)} images)",
                          f"{te_split} ({len(test_idx)} images)", outcomes, notes, skipped)


def run_splits(nets: Sequence[FeatureNet], data_dir: str | Path, opts: ExtractOptions, *,
               train_per_class: int | None = None, test_per_class: int | None = CALTECH_TEST,
               splits: int = 3, baseline: bool = True, seed: int = 0,
               C_grid: Sequence[float] = C_GRID, jobs: int | None = None,
               protocol: str = "caltech", solver: str = "torch") -> TransferReport:
    """Table 11's Caltech columns (or the same on any class-folder tree): descriptors of
    every image some split uses, then SVMs and mean class recall per split."""
    from ..data.folders import index_folder

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"dataset folder not found: {data_dir}")
    notes = []
    tree = _split_tree(data_dir)
    if tree is not None:  # the dataset's own train / test split: draws within each part
        index, pool, test_name = tree
        if train_per_class is None:
            splits = 1
        draws = pool_splits(index.labels, pool, index.num_classes, train_per_class,
                            test_per_class, splits, seed)
        n_tr = "all" if train_per_class is None else str(train_per_class)
        report_train = (f"{splits} random draw(s) of {n_tr} train/ images per class "
                        f"(seed {seed})" if train_per_class else "train/ (all images)")
        report_test = f"{test_name}/ (up to {test_per_class} images per class)" \
            if test_per_class else f"{test_name}/ (all images)"
        notes.append(f"{data_dir} comes split: trained on train/, tested on {test_name}/")
    else:
        index = index_folder(data_dir)
        if train_per_class is None:
            k = index.num_classes
            train_per_class = CALTECH_TRAIN[256] if k >= 200 else CALTECH_TRAIN[101]
            notes.append(f"{train_per_class} training images per class (Caltech-"
                         f"{'256' if k >= 200 else '101'}'s protocol; --train-per-class to "
                         f"change)")
        draws = class_splits(index.labels, index.num_classes, train_per_class,
                             test_per_class, splits, seed, index.display_names())
        report_train = (f"{splits} random splits of {train_per_class} images per class "
                        f"(seed {seed})")
        tpc = "all the rest" if test_per_class is None else f"up to {test_per_class}"
        report_test = f"{tpc} other images per class"
    used = np.unique(np.concatenate([np.concatenate(d) for d in draws]))
    sub = index.subset(used)
    from ..data.index import image_ids
    all_ids = image_ids(index)
    outcomes, skipped = [], {}
    for label, tag, fnets in _feature_sets(nets, baseline, seed):
        feats = opts.extract(fnets, sub, f"{tag}-images", ids=[all_ids[i] for i in used])
        skipped.update(feats.skipped)
        rows = [(_rows_of(feats, [all_ids[i] for i in tr]),
                 _rows_of(feats, [all_ids[i] for i in te])) for tr, te in draws]
        outcomes.append(score_splits(feats, rows, label, seed, C_grid, jobs, solver))
    if skipped:
        notes.append(f"{len(skipped)} unreadable images left out of their splits")
    return TransferReport(protocol, dataset_name(data_dir), report_train, report_test,
                          outcomes, notes, skipped)


def run_saved(train: Features, test: Features | None = None, *, train_per_class: int | None
              = None, test_per_class: int | None = CALTECH_TEST, splits: int = 3,
              seed: int = 0, C_grid: Sequence[float] = C_GRID, jobs: int | None = None,
              train_name: str = "train", test_name: str = "test", solver: str = "torch"
              ) -> TransferReport:
    """The protocols on saved descriptors (``vgg features`` files): train on ``train`` and
    test on ``test``; or, with one file, random splits of it (single-label)."""
    name = Path(str(train.meta.get("data", "") or "features")).name
    if test is not None:
        check_pair(train, test, train_name, test_name)
        if train.multi_label or test.multi_label:
            outs = score_ap(train, test, "given", seed, C_grid, jobs, solver=solver)
        else:
            v, r, d = score_recall(train, test, seed, C_grid, jobs, solver)
            outs = [Outcome("given", metric=RECALL, values=[v], details=[d],
                            per_class={c: float(x) for c, x in zip(test.classes, r)
                                       if math.isfinite(x)}, **_settings(train))]
        return TransferReport("features", name, f"{train_name} ({len(train)} images)",
                              f"{test_name} ({len(test)} images)", outs,
                              ["from saved features: no random-net baseline (rerun with the "
                               "net to get one)"])
    if train.multi_label:
        raise ConfigError("random splits need single-label features; give --test FILE for "
                          "multi-label (VOC) features")
    if train_per_class is None:
        raise ConfigError("give --train-per-class for random splits of saved features")
    draws = class_splits(train.labels, len(train.classes), train_per_class, test_per_class,
                         splits, seed, train.classes)
    out = score_splits(train, draws, "given", seed, C_grid, jobs, solver)
    return TransferReport("features", name, f"{splits} random splits of {train_per_class} "
                          f"images per class (seed {seed})", f"up to {test_per_class} other "
                          f"images per class", [out], ["from saved features: no random-net "
                                                       "baseline"])


def box_index(index: Any) -> tuple[Any, list[str], list[str]]:
    """Every usable box of ``index`` as a sample (``Region`` of its image, labelled with
    the box's class): (index of boxes, their ids ``image#k``, the id of each box's image)."""
    from ..data.decode import Region
    from ..data.folders import ImageIndex
    from ..data.index import image_ids

    pos = {c: k for k, c in enumerate(index.classes)}
    ids = image_ids(index)
    samples, bids, owner = [], [], []
    for row, (path, _) in enumerate(index.samples):
        for k, b in enumerate((index.boxes or {}).get(path, [])):
            if b.name in pos:
                samples.append((Region(Path(path), (b.x0, b.y0, b.x1, b.y1)), pos[b.name]))
                bids.append(f"{ids[row]}#{k}")
                owner.append(ids[row])
    if not samples:
        raise DataError(f"no labelled box in {index.root or 'the dataset'}: the box protocol "
                        f"needs annotations (VOC XML, a detection CSV, ...)")
    return ImageIndex(samples, list(index.classes), index.root, index.class_names,
                      meta=dict(index.meta)), bids, owner


def _box_splits(data_dir: Path) -> tuple[Any, Any, list[str]]:
    from ..data.folders import has_split, index_split, index_voc, load_boxes

    if (data_dir / "ImageSets" / "Main").is_dir():
        tr, te, notes = voc_splits(data_dir)
        a = index_voc(data_dir, tr)
        return a, index_voc(data_dir, te, list(a.classes)), notes
    test = next((s for s in ("test", "val") if has_split(data_dir, s)), None)
    if not has_split(data_dir, "train") or test is None:
        raise DataError(f"{data_dir}: the box protocol needs a VOC year folder or train/ and "
                        f"val/ (or test/) splits with box annotations")
    a = index_split(data_dir, "train")
    b = index_split(data_dir, test, list(a.classes))
    for idx, split in ((a, "train"), (b, test)):
        if idx.boxes is None:
            load_boxes(idx, split=split)
    return a, b, []


def run_boxes(nets: Sequence[FeatureNet], data_dir: str | Path, opts: ExtractOptions, *,
              baseline: bool = True, seed: int = 0, C_grid: Sequence[float] = C_GRID,
              jobs: int | None = None, solver: str = "torch") -> TransferReport:
    """Object boxes (Table 12's setting applied to the object classes, not Table 12:
    that is :func:`.actions.run_actions`): classify labelled boxes into their classes from
    the whole image's descriptor alone ("image only") and from it stacked with the box's
    descriptor ("image + box"); mAP over the classes of the boxes."""
    data_dir = Path(data_dir)
    train_idx, test_idx, notes = _box_splits(data_dir)
    name = dataset_name(data_dir)
    outcomes, skipped = [], {}
    for label, tag, fnets in _feature_sets(nets, baseline, seed):
        parts = {}
        for part, idx in (("train", train_idx), ("test", test_idx)):
            split = idx.meta.get("split", part)
            bidx, bids, owner = box_index(idx)
            img = opts.extract(fnets, idx, f"{tag}-{split}-images")
            box = opts.extract(fnets, bidx, f"{tag}-{split}-boxes", ids=bids)
            skipped.update(img.skipped)
            skipped.update(box.skipped)
            irow = {i: r for r, i in enumerate(img.ids)}        # image id -> feature row
            image_of = dict(zip(bids, owner))
            keep = [r for r, b in enumerate(box.ids) if image_of[b] in irow]
            box = box.subset(keep)
            owners = [irow[image_of[b]] for b in box.ids]
            image_only = dataclasses.replace(box, X=img.X[owners])
            parts[part] = (image_only, stack_features([image_only, box], "image + box"))
        for v, variant in enumerate(("image only", "image + box")):
            outcomes += score_ap(parts["train"][v], parts["test"][v], f"{label}, {variant}",
                                 seed, C_grid, jobs, solver=solver)
    return TransferReport("boxes", name, f"boxes of {train_idx.meta.get('split', 'train')}",
                          f"boxes of {test_idx.meta.get('split', 'test')}", outcomes, notes,
                          skipped)
