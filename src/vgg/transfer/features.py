"""Very deep features (Appendix B): dense multi-scale image descriptors of a fixed net.

The descriptor of an image, for one net: the net without its last FC layer applied
densely (fully-convolutional, Sect. 3.2) to the whole image rescaled to smallest side Q;
the penultimate map (relu7: ``fc_width`` channels, 4096 at full size; ``layer`` may name
another, such as relu5_3; at the output stride of SPEC 6b, 32 at crop 224, 4 at crop 32)
global-average-pooled; averaged with the descriptor of the
mirror image. The per-Q descriptors are combined by averaging (the paper's VOC setting)
or stacking (Caltech), then L2-normalised. Several nets: each net's descriptor
L2-normalised, the nets stacked, the whole L2-normalised again (the paper's fusion by
stacking, with every net weighted alike).

The data half is the evaluators' (:class:`vgg.eval.evaluate.RescaledImages`: one decode
and rescale per image and Q, batches of one rescaled size, bad files reported once and
left out). Extraction writes shards (``OUT.parts/``) as it goes, and a rerun with the
same settings continues where an interrupted one stopped; "the same settings" is one key
(:func:`descriptor_key`) for that and for the reuse of cached files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import Checkpoint
from ..devices import pick_device
from ..errors import ConfigError, DataError, VggError
from ..eval.results import stride_label
from ..interrupts import CtrlC
from ..model import (HEAD_NAMES, VGG, VGGFullyConv, init_weights, layer_specs,
                     resolve_dense_stride)
from ..precision import Precision, resolve_precision
from ..settings import MAX_BATCH, check_int, check_workers
from ..weights import open_weights as load_checkpoint
from .featurefile import Features, ShardStore, key_differences

log = logging.getLogger(__name__)

DEFAULT_LAYER = "relu7"             # the paper's: the penultimate layer, FC7 after its ReLU
SMALL_NET_LAYER = "pool5"           # what transferred best from scaled-down nets (measured)
PAPER_FC_WIDTH = 4096
COMBINES = ("average", "stack")
PAPER_CROP = 224
# Appendix B's test scales: VOC (descriptors averaged over Q), Caltech (stacked)
PAPER_SCALES = {"average": (256, 384, 512, 640, 768), "stack": (256, 384, 512)}
SHARD_IMAGES = 256                  # a shard is written every this many images
MIN_CONV_SIDE = 32                  # a conv layer needs pool5's input to keep a pixel


# ---------------------------------------------------------------------------- the nets

@dataclass
class FeatureNet:
    """A net to describe images with, and where it came from (``name``). ``identity``
    names its weights by content (a hash of the checkpoint file, or of the tensors of a
    net given in memory, computed when first asked: :meth:`key`), so that descriptors
    cached or half-extracted with other weights are never taken for its own."""

    model: VGG
    name: str
    identity: str = ""
    features_only: bool = False  # a converted "_notop" file: no FC layers to pool

    @property
    def crop(self) -> int:
        return self.model.config.crop

    def key(self) -> str:
        if not self.identity:
            self.identity = weights_identity(self.model)
        return self.identity


def weights_identity(model: VGG) -> str:
    """A hash of the net's architecture and every tensor of its state dict (names,
    shapes, values)."""
    h = hashlib.sha256(repr(model.config).encode())
    with torch.no_grad():
        for name, t in model.state_dict().items():
            t = t.detach().float().cpu().contiguous()
            h.update(f"{name}{tuple(t.shape)}".encode())
            h.update(t.numpy().tobytes())
    return "weights:" + h.hexdigest()[:24]


def file_identity(path: Path) -> str:
    """A hash of a checkpoint file's bytes, with its size: a net retrained into the same
    path is another net."""
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return f"file:{digest[:24]}:{path.stat().st_size}"


def as_feature_net(obj: VGG | Checkpoint | FeatureNet | str | os.PathLike[str],
                   index: int = 0) -> FeatureNet:
    """A checkpoint path (any head: the last FC layer is not used), ``Checkpoint``, ``VGG``
    or ``FeatureNet`` -> ``FeatureNet``."""
    if isinstance(obj, FeatureNet):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj)
        ckpt = load_checkpoint(path)
        return FeatureNet(ckpt.build_model(), str(path), file_identity(path),
                          bool(ckpt.meta.get("features_only")))
    if isinstance(obj, Checkpoint):
        return FeatureNet(obj.build_model(), str(obj.path or f"net{index}"),
                          features_only=bool(obj.meta.get("features_only")))
    if isinstance(obj, VGG):
        return FeatureNet(obj, f"net{index} ({obj.config.name})")
    raise TypeError(f"cannot take features from a {type(obj).__name__}")


def random_like(net: FeatureNet, seed: int = 0) -> FeatureNet:
    """The same architecture and preprocessing with the paper's random initialisation
    (N(0, 0.01) weights, zero biases; seeded): the baseline that shows what training
    added to the features."""
    torch.manual_seed(seed)
    model = VGG(net.model.config, net.model.classes, net.model.preprocess)
    init_weights(model)
    return FeatureNet(model.eval(), f"random {net.model.config.name} (seed {seed})",
                      f"random:{net.model.config!r}:{seed}", net.features_only)


def layer_dim(model: VGG, layer: str) -> int:
    """Channels of ``layer``'s output (the descriptor's length for one Q)."""
    if layer in HEAD_NAMES:
        i = HEAD_NAMES[layer]
        return model.config.out_features if i == 6 else model.config.fc_width
    for s in layer_specs(model.config):
        if s.name == layer:
            return s.out_ch
    raise ConfigError(f"unknown layer {layer!r} for {model.config.name}; known: "
                      f"{', '.join(list(model.layer_names) + list(HEAD_NAMES))}")


def paper_scales(combine: str, crop: int) -> list[int]:
    """Appendix B's Q for ``combine`` (average: VOC's 256..768; stack: Caltech's 256, 384,
    512), scaled by crop / 224 for a scaled-down net."""
    qs = PAPER_SCALES[check_combine(combine)]
    return sorted({max(crop, round(q * crop / PAPER_CROP)) for q in qs})


def check_combine(combine: str) -> str:
    if combine not in COMBINES:
        raise ConfigError(f"unknown --combine {combine!r}; choose from {', '.join(COMBINES)}")
    return combine


def resolve_layer(layer: str | None, nets: Sequence[FeatureNet]) -> str:
    """The layer whose map is pooled: ``layer`` itself, or for ``"auto"`` (and None) the
    paper's relu7 when every net has the paper's FC width (4096) and pool5 otherwise (also
    for a features-only net, which has no FC layers).

    Measured (docs/transfer.md, "Which layer transfers"): a crop-64 A-BN net (width 1/4,
    FC 1024) trained on 51 Caltech-101 classes, its descriptors on the other 51 classes
    (Caltech's protocol, 3 splits): mean class recall 53.0 +- 3.7 from pool5, 49.7 +- 1.8
    from relu6, 42.9 +- 2.6 from relu7, against 43.1-46.8 from a random net of the same
    shape: a scaled-down net's narrow FC layers fit its own classes, and its conv features
    are what transfers."""
    if layer is None or layer == "auto":
        paper_fc = all(n.model.config.fc_width >= PAPER_FC_WIDTH and not n.features_only
                       for n in nets)
        return DEFAULT_LAYER if paper_fc else SMALL_NET_LAYER
    return layer


def check_layer_scales(net: FeatureNet, layer: str, scales: Sequence[int]) -> list[int]:
    """``scales`` checked for ``layer`` of ``net``: FC layers (applied as convs) need
    Q >= crop, conv layers Q >= 32."""
    layer_dim(net.model, layer)
    if net.features_only and layer in HEAD_NAMES:
        raise ConfigError(f"{net.name} has no FC layers (converted from a features-only "
                          f"file): pool a conv layer, e.g. --layer relu5_3")
    low = net.crop if layer in HEAD_NAMES else MIN_CONV_SIDE
    qs = sorted({int(q) for q in scales})
    if not qs:
        raise ConfigError("no test scale given")
    bad = [q for q in qs if q < low]
    if bad:
        why = f"its FC layers see {net.crop}x{net.crop} windows" if layer in HEAD_NAMES \
            else "five poolings need 32 pixels"
        raise ConfigError(f"scale(s) {bad} too small for {layer} of {net.name}: Q must be "
                          f">= {low} ({why})")
    return qs


# ---------------------------------------------------------------------------- descriptors

def _pooled(fcn: VGGFullyConv, x: torch.Tensor, layer: str) -> torch.Tensor:
    return fcn.extract(x, [layer])[layer].float().mean(dim=(2, 3))


def dense_descriptor(fcn: VGGFullyConv, x: torch.Tensor, layer: str = DEFAULT_LAYER,
                     flip: bool = True) -> torch.Tensor:
    """(N, 3, H, W) normalised images -> (N, D): ``layer``'s map of the fully-convolutional
    net, global-average-pooled, averaged with the mirror image's (not normalised)."""
    d = _pooled(fcn, x, layer)
    if flip:
        d = 0.5 * (d + _pooled(fcn, x.flip(3), layer))
    return d


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (a zero row stays zero)."""
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(n > 0, n, 1.0)).astype(np.float32)


def combine_scales(per_scale: Sequence[np.ndarray], combine: str) -> np.ndarray:
    """Per-Q descriptors (each (N, D), in increasing Q) -> (N, D) averaged or (N, D * nQ)
    stacked, then L2-normalised."""
    check_combine(combine)
    x = np.mean(per_scale, axis=0) if combine == "average" else np.concatenate(per_scale, 1)
    return l2_normalise(x)


def stack_nets(per_net: Sequence[np.ndarray]) -> np.ndarray:
    """Descriptors of several nets (each L2-normalised) stacked and L2-normalised."""
    return l2_normalise(np.concatenate([l2_normalise(x) for x in per_net], 1))


# ---------------------------------------------------------------------------- the result

def stack_features(parts: Sequence[Features], what: str = "stacked") -> Features:
    """Descriptors of the same images from several sources (nets, or the image and its
    box) stacked side by side and L2-normalised (each part weighted alike)."""
    first = parts[0]
    for p in parts[1:]:
        if p.ids != first.ids or p.classes != first.classes:
            raise DataError("cannot stack features of different images or classes "
                            f"({len(first)} vs {len(p)} rows)")
    meta = dict(first.meta, stacked=[p.meta for p in parts], what=what)
    return dataclasses.replace(first, X=stack_nets([p.X for p in parts]), meta=meta)


# ---------------------------------------------------------------------------- extraction

def index_targets(index: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, K) multi-hot targets and (N, K) ignore mask (None without difficult marks)."""
    targets = index.label_matrix().astype(np.uint8)
    ignore = None
    if getattr(index, "difficult", None) is not None:
        ignore = np.zeros(targets.shape, bool)
        for i, ks in enumerate(index.difficult):
            ignore[i, ks] = True
    return targets, ignore


@dataclass
class ExtractOptions:
    """How descriptors are computed: :func:`extract_features`'s settings (``scales``,
    ``combine``, ``layer``, ``flip``, ``dense_stride``, ``batch_size``, ``device``,
    ``workers``, ``precision``, ``progress``, ``restart``), and, for :meth:`extract`, where
    they are kept (``cache``: a folder of resumable ``.npz`` files, one per tag; None:
    memory only)."""

    scales: Sequence[int] | None = None
    combine: str = "average"
    layer: str = "auto"  # relu7 for nets with the paper's FC width, else pool5
    flip: bool = True
    batch_size: int = 16
    device: str | torch.device | None = None
    workers: int | None = None
    precision: str | Precision = "fp32"
    progress: bool = True
    cache: Path | None = None
    restart: bool = False
    dense_stride: int | str | None = None  # None / "auto": the default for each net's crop

    def extract(self, nets: Sequence[FeatureNet], index: Any, tag: str,
                ids: Sequence[str] | None = None) -> Features:
        """The descriptors of ``index`` as ``cache/<tag>.npz``: read back when that file
        was made with exactly these settings (:func:`descriptor_key`: the nets' weights,
        layer, scales, combination, mirror, precision, dense stride and images) and
        ``restart`` is off, else extracted (and saved there)."""
        out = self.cache / f"{tag}.npz" if self.cache is not None else None
        job = _prepare(nets, index, self, ids)
        if out is not None and out.is_file() and not self.restart:
            feats = Features.load(out)
            if feats.meta.get("key") == job.digest:
                log.info("reusing the descriptors in %s", out)
                return feats
            log.info("%s was made with other settings (%s): extracting again", out,
                     key_differences(feats.meta.get("settings") or {}, job.key))
        return extract_with(job.nets, index, self, out=out, ids=job.ids, desc=tag)


def extract_features(models: Sequence[VGG | Checkpoint | FeatureNet | str | os.PathLike[str]]
                     | VGG | str | os.PathLike[str],
                     index: Any, scales: Sequence[int] | None = None,
                     combine: str = "average", layer: str = "auto", flip: bool = True,
                     batch_size: int = 16, device: str | torch.device | None = None,
                     workers: int | None = None, *, precision: str = "fp32",
                     progress: bool = True, out: str | os.PathLike[str] | None = None,
                     restart: bool = False, ids: Sequence[str] | None = None,
                     dense_stride: int | str | None = None,
                     on_bad: Callable[[str, str], None] | None = None,
                     desc: str = "features") -> Features:
    """Appendix B descriptors of every image of ``index`` (an ``ImageIndex``; its samples
    may be ``Region`` boxes) for one net or several stacked.

    ``scales``: the Q to describe at (default :func:`paper_scales` for ``combine``,
    scaled to the first net's crop); ``combine``: "average" (VOC) or "stack" (Caltech);
    ``layer``: the map to pool (default relu7, the penultimate layer); ``flip``: average
    with the mirror image. ``out``: save the result there (``.npz``), writing shards to
    ``OUT.parts/`` as it goes so that a rerun continues an interrupted extraction (the
    shards are removed once ``out`` is written; one run per ``out`` at a time);
    ``restart`` discards an earlier interrupted one. ``precision``: the networks' ("fp32",
    "bf16", "fp16" or "auto": bf16 where the hardware runs it natively; ``vgg.precision``;
    `vgg features` defaults to auto); pooling,
    mirror averaging and normalisation stay fp32; it is part of the settings a resumed
    extraction must share. ``dense_stride``: the output stride at which the net is
    applied (a divisor of 32; None or "auto": the default for each net's crop, SPEC 6b:
    about 7 positions per window side, so the pooled map covers as many positions as
    the paper's; 32 is the plain net), recorded in ``meta["dense_stride"]``. ``ids``: the
    row ids (default: paths relative to the index root). Unreadable images are reported to
    ``on_bad`` once, left out and listed in ``Features.skipped``. The settings travel as
    an :class:`ExtractOptions` (:func:`extract_with`)."""
    opts = ExtractOptions(scales=scales, combine=combine, layer=layer, flip=flip,
                          batch_size=batch_size, device=device, workers=workers,
                          precision=precision, progress=progress, restart=restart,
                          dense_stride=dense_stride)
    return extract_with(models, index, opts, out=out, ids=ids, on_bad=on_bad, desc=desc)


def extract_with(models: Sequence[VGG | Checkpoint | FeatureNet | str | os.PathLike[str]]
                 | VGG | str | os.PathLike[str], index: Any, opts: ExtractOptions, *,
                 out: str | os.PathLike[str] | None = None, ids: Sequence[str] | None = None,
                 on_bad: Callable[[str, str], None] | None = None,
                 desc: str = "features") -> Features:
    """:func:`extract_features` with its settings in ``opts`` (``opts.cache`` is not used:
    ``out`` names the file)."""
    return _run_job(_prepare(models, index, opts, ids), index, out, on_bad, desc)


@dataclass
class _Job:
    """An extraction with every setting resolved (:func:`_prepare`)."""

    nets: list[FeatureNet]
    run: ExtractOptions  # scales checked and sorted, device, workers, precision decided
    ids: list[str]
    strides: list[int]  # each net's dense output stride
    key: dict[str, Any]
    digest: str


def _prepare(models: Sequence[VGG | Checkpoint | FeatureNet | str | os.PathLike[str]]
             | VGG | str | os.PathLike[str], index: Any, opts: ExtractOptions,
             ids: Sequence[str] | None) -> _Job:
    from ..data.index import image_ids

    check_combine(opts.combine)
    batch_size = check_int("batch", opts.batch_size, 1, MAX_BATCH)
    workers = check_workers(opts.workers)
    if isinstance(models, (VGG, str, os.PathLike, Checkpoint, FeatureNet)):
        models = [models]
    nets = [as_feature_net(m, i) for i, m in enumerate(models)]
    if not nets:
        raise ConfigError("no net to take features from")
    layer = resolve_layer(opts.layer, nets)
    qs = check_layer_scales(nets[0], layer, opts.scales if opts.scales is not None
                            else paper_scales(opts.combine, nets[0].crop))
    for n in nets[1:]:
        check_layer_scales(n, layer, qs)
    strides = [resolve_dense_stride(opts.dense_stride, n.crop) for n in nets]
    if not index.samples:
        raise DataError(f"no images in {getattr(index, 'root', None) or 'the dataset'}")
    ids = list(ids) if ids is not None else image_ids(index)
    dev = pick_device(opts.device)
    prec = resolve_precision(opts.precision, dev)
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    run = dataclasses.replace(opts, scales=qs, layer=layer, batch_size=batch_size,
                              device=dev, workers=workers, precision=prec)
    key = descriptor_key(nets, index, ids, run, strides)
    return _Job(nets, run, ids, strides, key, key_digest(key))


def descriptor_key(nets: Sequence[FeatureNet], index: Any, ids: Sequence[str],
                   run: ExtractOptions, strides: Sequence[int]) -> dict[str, Any]:
    """Every setting that changes the descriptors of an extraction, as
    :func:`_prepare` resolves them: the nets by content (:meth:`FeatureNet.key`), the
    layer, the test scales, the combination, the mirror, the precision, each net's dense
    output stride, and the images (ids, files or boxes, targets). The one key both the
    reuse of a cached features file and the resume of interrupted shards compare."""
    prec = run.precision.name if isinstance(run.precision, Precision) else run.precision
    samples = "\n".join(f"{i}\t{s}" for i, (s, _) in zip(ids, index.samples))
    targets, _ = index_targets(index)
    return {"nets": [n.key() for n in nets], "layer": run.layer,
            "scales": [int(q) for q in run.scales or ()], "combine": run.combine,
            "flip": bool(run.flip), "precision": str(prec),
            "dense_stride": [int(s) for s in strides],
            "images": hashlib.sha256(samples.encode()).hexdigest()[:16],
            "n_images": len(ids),
            "targets": hashlib.sha256(json.dumps(
                [list(map(str, index.classes)), targets.tolist()]).encode()).hexdigest()[:16]}


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _run_job(job: _Job, index: Any, out: str | os.PathLike[str] | None,
             on_bad: Callable[[str, str], None] | None, desc: str) -> Features:
    if out is None:
        return _extract(job, index, None, on_bad, desc)
    from ..train.checkpoint import RunLock

    parts = Path(f"{out}.parts")
    with RunLock(parts), CtrlC() as ctrl_c:
        feats = _extract(job, index, ShardStore(parts, job.key), on_bad, desc)
        ctrl_c.check()  # a Ctrl-C lost in a clean-up: keep the shards, write no OUT
        feats.save(out)
    shutil.rmtree(parts, ignore_errors=True)
    return feats


def _extract(job: _Job, index: Any, store: ShardStore | None,
             on_bad: Callable[[str, str], None] | None, desc: str) -> Features:
    """The extraction itself, with the settings :func:`_prepare` resolved."""
    from ..data.rescaled import RescaledImages, normalise, warn_unreadable as _warn_bad

    nets, run, ids = job.nets, job.run, job.ids
    qs, layer = list(run.scales or ()), run.layer
    prec = resolve_precision(run.precision, run.device)  # resolved: the same Precision
    targets, ignore = index_targets(index)
    dims = [layer_dim(n.model, layer) for n in nets]
    n_img = len(ids)
    desc_at = {(j, q): np.zeros((n_img, d), np.float32) for j, d in enumerate(dims) for q in qs}
    filled = {q: np.zeros(n_img, bool) for q in qs}
    if store is not None:
        for s in store.open(run.restart):
            q, rows = int(s["q"]), s["rows"]
            if q in filled and rows.size and rows.max() < n_img:
                for j in range(len(nets)):
                    desc_at[(j, q)][rows] = s[f"net{j}"]
                filled[q][rows] = True
        done_before = sum(int(f.sum()) for f in filled.values())
        if done_before:
            log.info("continuing the extraction in %s: %d of %d (image, Q) descriptors "
                     "already computed", store.folder, done_before, n_img * len(qs))
    data = RescaledImages(index, run.batch_size, run.workers, run.device, run.progress,
                          on_bad or _warn_bad)
    models, fcns = [], []
    for n, stride in zip(nets, job.strides):
        m = prec.net(n.model.eval().to(run.device))  # the net itself, or its bf16/fp16 copy
        models.append(m)
        fcns.append(m.to_fully_conv(stride))
    for q in qs:
        todo = [r for r in data.ok_rows if not filled[q][r]]
        if not todo:
            continue
        buf_rows: list[np.ndarray] = []
        buf: list[list[np.ndarray]] = [[] for _ in nets]

        def flush() -> None:
            if store is not None and buf_rows:
                store.write(q, np.concatenate(buf_rows), [np.concatenate(b) for b in buf])
            buf_rows.clear()
            for b in buf:
                b.clear()

        with torch.inference_mode(), prec.autocast():
            for rows, x8 in data.batches(q, desc, rows=todo):
                for j, (m, fcn) in enumerate(zip(models, fcns)):
                    d = dense_descriptor(fcn, normalise(m, x8), layer, run.flip)
                    d = d.cpu().numpy()
                    desc_at[(j, q)][rows] = d
                    buf[j].append(d)
                filled[q][rows] = True
                buf_rows.append(rows)
                if sum(len(r) for r in buf_rows) >= SHARD_IMAGES:
                    flush()
        flush()
    done = np.logical_and.reduce([filled[q] for q in qs])
    keep = np.nonzero(done)[0]
    reasons = {ids[i]: data.bad.get(i, "could not be read") for i in np.nonzero(~done)[0]}
    if not keep.size:
        example = next(iter(reasons.items()), None)
        raise DataError(f"none of the {n_img} images could be read"
                        + (f" (e.g. {example[0]}: {example[1]})" if example else ""))
    if reasons:
        log.warning("%d of %d images could not be read and are left out", len(reasons), n_img)
    per_net = [combine_scales([desc_at[(j, q)][keep] for q in qs], run.combine)
               for j in range(len(nets))]
    X = per_net[0] if len(nets) == 1 else stack_nets(per_net)
    if not np.isfinite(X).all():
        bad = int((~np.isfinite(X).all(1)).sum())
        raise VggError(f"{bad} descriptors are not finite: the net's weights or inputs are "
                       f"broken ({', '.join(n.name for n in nets)})")
    meta = {"nets": [n.name for n in nets], "configs": [n.model.config.name for n in nets],
            "weights": [weights_identity(n.model) for n in nets],  # what check_pair compares
            "layer": layer, "scales": qs, "combine": run.combine, "flip": run.flip,
            "precision": prec.name, "dense_stride": stride_label(job.strides),
            "key": job.digest, "settings": job.key,
            "dims": dims, "multi_label": index.multilabels is not None,
            "data": str(getattr(index, "root", "") or ""),
            # the dataset folder (a split's own folder, DIR/val, belongs to DIR)
            "dataset": str(getattr(index, "meta", {}).get("data_dir") or
                           getattr(index, "root", "") or ""),
            "split": getattr(index, "meta", {}).get("split", ""),
            "class_names": index.display_names() if hasattr(index, "display_names") else None}
    out = Features(X=X, ids=[ids[i] for i in keep], targets=targets[keep],
                   classes=[str(c) for c in index.classes],
                   ignore=None if ignore is None else ignore[keep], meta=meta, skipped=reasons)
    return out
