"""The net a run trains and what it starts from: the run being resumed, a checkpoint to
initialise from (Sect. 3.1: net A's layers) or fine-tune, or a fresh initialisation; its
preprocessing (Sect. 2.1) and colour statistics (the PCA colour shift); the optimizer's
parameter groups."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..checkpoint import Checkpoint
from ..errors import CheckpointError
from ..model import VGG, build, init_from
from ..preprocess import Preprocess
from ..weights import open_weights as load_checkpoint
from .checkpoint import load_run_state
from .config import TrainConfig
from .task import Task

if TYPE_CHECKING:
    from ..data.folders import ImageIndex
    from ..data.loaders import BadImages
    from ..data.transforms import ColourStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Start:
    """The checkpoints a run starts from, each read once: ``RUN/last.pt`` and its training
    state when resuming; the checkpoint of ``--finetune-from`` / ``--init-from``."""

    resume_ckpt: Checkpoint | None = None
    resume_state: dict[str, Any] | None = None
    source: Checkpoint | None = None

    @classmethod
    def read(cls, cfg: TrainConfig) -> Start:
        resume_ckpt, resume_state = load_run_state(cfg.resume) if cfg.resume else (None, None)
        source = None
        if cfg.finetune_from or cfg.init_from:
            source = load_checkpoint(cfg.finetune_from or cfg.init_from)
        return cls(resume_ckpt, resume_state, source)

    @property
    def classes(self) -> list[str] | None:
        """The classes of the net the run continues or starts from, if any."""
        start = self.resume_ckpt or self.source
        return start.classes if start is not None else None


def param_groups(model: nn.Module, weight_decay: float,
                 decay_biases: bool) -> list[dict[str, Any]]:
    """Weight decay on conv/FC weights; biases and BN affine parameters are decayed only
    with ``decay_biases`` (Caffe's global decay hits everything; MatConvNet's and most
    Caffe VGG ports set decay 0 on biases). Frozen parameters are left out."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if decay_biases or p.dim() > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_model(cfg: TrainConfig, task: Task, start: Start, train_index: ImageIndex) -> VGG:
    """The resumed net, or a new one (initialised by ``cfg.init``, then from
    ``--init-from`` or ``--finetune-from``) for the classes of ``train_index``; the task
    prepares it (e.g. freezes layers)."""
    classes = list(train_index.classes)
    want = cfg.net_config(len(classes))
    if start.resume_ckpt is not None:
        ck = start.resume_ckpt
        if ck.config != want:
            raise CheckpointError(f"{ck.path} holds a {ck.config.name} net "
                                  f"({ck.config.to_dict()}) but {cfg.resume}/config.yaml "
                                  f"describes {want.to_dict()}: the run folder was mixed "
                                  f"up; resume from a matching run")
        model = ck.build_model()
        if model.classes != classes:
            raise CheckpointError(f"the classes of {cfg.data} differ from those of the "
                                  f"run being resumed ({cfg.resume})")
        task.prepare(model, from_checkpoint=True)
        return model
    gen = torch.Generator().manual_seed(cfg.seed)
    model = build(cfg.arch, batch_norm=cfg.batch_norm, num_classes=len(classes),
                  width=cfg.width, fc_width=cfg.fc_width, crop=cfg.crop,
                  dropout=cfg.dropout, init=cfg.init, init_std=cfg.init_std,
                  classes=classes, generator=gen, head=cfg.head)
    source = start.source
    if cfg.init_from:
        if source.meta.get("features_only"):  # type: ignore[union-attr]
            raise CheckpointError(f"--init-from {cfg.init_from}: it has no FC layers to "
                                  f"copy (Sect. 3.1 copies four convs and fc6-fc8); use "
                                  f"--finetune-from to start from its conv layers")
        copied = init_from(model, source.build_model())  # type: ignore[union-attr]
        log.info("initialised %s from %s", ", ".join(copied), cfg.init_from)
    if cfg.finetune_from:
        load_finetune(model, source)  # type: ignore[arg-type]
    names = train_index.display_names()
    if source is not None and source.classes == classes and source.class_names:
        names = source.class_names
    model.set_class_names(names)
    task.prepare(model, from_checkpoint=bool(cfg.finetune_from))
    return model


def load_finetune(model: VGG, ck: Checkpoint) -> None:
    """All weights of ``ck``, except FC8 when it cannot mean the same thing here
    (another class count or class order, or a box head replacing class scores):
    FC8 then keeps its fresh initialisation. A features-only checkpoint (no FC layers,
    e.g. a Keras _notop file) gives the conv layers; FC6-FC8 start fresh."""
    path = ck.path
    own = model.state_dict()
    same_last = (ck.config.head == model.config.head and ck.classes == model.classes
                 and ck.config.out_features == model.config.out_features)
    fresh = "classifier." if ck.meta.get("features_only") else "classifier.6."
    state, skipped = {}, []
    for k, v in ck.state_dict.items():
        if k not in own:
            raise CheckpointError(f"{path}: layer {k} does not exist in {model.config.name}")
        if k.startswith(fresh) and (fresh == "classifier." or not same_last):
            skipped.append(k)
            continue
        if own[k].shape != v.shape:
            raise CheckpointError(f"{path}: {k} has shape {tuple(v.shape)}, the net being "
                                  f"trained needs {tuple(own[k].shape)} (same --arch, "
                                  f"--width, --fc-width and --crop are required)")
        state[k] = v
    missing = set(own) - set(state) - set(skipped)
    if missing:
        raise CheckpointError(f"{path} lacks {sorted(missing)[:4]} of {model.config.name}")
    model.load_state_dict(state, strict=False)
    if ck.meta.get("features_only"):
        log.info("fine-tuning from the conv layers of %s (it has no FC layers: fc6-fc8 "
                 "start random)", path)
    elif skipped:
        what = ("a box regressor" if not model.config.is_classifier
                else f"{len(model.classes)} classes")  # type: ignore[arg-type]
        log.info("fine-tuning from %s (every layer but the last, which starts random "
                 "for %s)", path, what)
    else:
        log.info("fine-tuning from %s (all layers)", path)


def colour_stats(cfg: TrainConfig, start: Start, train_index: ImageIndex, *,
                 progress: bool, bad_images: BadImages) -> ColourStats:
    """``--stats``, else those the resumed run or source checkpoint carries, else computed
    over (at most ``--stats-limit``) training images."""
    from ..data.stats import compute_stats
    from ..data.transforms import ColourStats

    if cfg.stats is not None:
        return ColourStats.load(cfg.stats)
    for ck in (start.resume_ckpt, start.source):
        if ck is not None and ck.meta.get("stats"):
            try:
                return ColourStats.from_dict(ck.meta["stats"])
            except (KeyError, TypeError, ValueError):
                log.warning("%s carries unreadable colour statistics; recomputing",
                            ck.path)
    log.info("computing colour statistics over %d training images (--stats-limit)",
             min(cfg.stats_limit, len(train_index)))
    return compute_stats(train_index, limit=cfg.stats_limit, seed=cfg.seed,
                         progress=progress, bad_images=bad_images)


def new_preprocess(cfg: TrainConfig, stats: ColourStats, source: Checkpoint | None
                   ) -> Preprocess:
    """Sect. 2.1: subtract this training set's mean RGB, unless the net starts from a
    checkpoint trained on other inputs (torchvision's mean/std, Caffe's BGR): its
    first layer then keeps seeing the inputs it was trained on."""
    paper = Preprocess.paper(stats.mean_rgb)
    if source is None:
        return paper
    p = source.preprocess
    flag = "--finetune-from" if cfg.finetune_from else "--init-from"
    if p.std != (1.0, 1.0, 1.0) or p.channel_order != "RGB":
        log.info("%s %s: its first layer was trained on %s inputs (mean %s, std %s); "
                 "keeping that preprocessing instead of the paper's mean subtraction",
                 flag, source.path, p.channel_order,
                 "/".join(f"{v:.1f}" for v in p.mean), "/".join(f"{v:.1f}" for v in p.std))
        return p
    if cfg.finetune_from:
        log.info("%s %s: keeping its mean RGB %s", flag, source.path,
                 "/".join(f"{v:.1f}" for v in p.mean))
        return p
    return paper
