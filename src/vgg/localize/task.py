"""Training a localisation net (Appendix A.1) with the classification trainer: a
:class:`vgg.train.task.Task` whose loss is the Euclidean loss between predicted and
ground-truth box parameters and whose validation is the simple protocol (Table 8's
number), so checkpoints, resume, DDP, schedules, metrics.jsonl and curves.png are those of
classification."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch

from ..train.task import Task, TaskContext, val_precision, val_workers
from .boxes import box_iou, class_params, cxcywh_to_xyxy

if TYPE_CHECKING:
    from ..data.folders import ImageIndex
    from ..model import VGG

log = logging.getLogger(__name__)


def box_loss(out: torch.Tensor, target: torch.Tensor, labels: torch.Tensor,
             valid: torch.Tensor, head: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Appendix A.1's Euclidean loss, summed over images: 0.5 ||p - t||^2 of the 4 box
    parameters (PCR: only the 4 outputs of the target's class are penalised; SCR: the
    only 4); crops without a target (``valid`` False) cost nothing. Returns (loss sum,
    images whose box has IoU > 0.5 with the target, images counted)."""
    out = out.float()
    pred = class_params(out, head, labels)
    mask = valid.to(out.dtype)
    diff = (pred - target.to(out.dtype)) * mask[:, None]
    loss = 0.5 * (diff ** 2).sum()
    with torch.no_grad():
        a, b = cxcywh_to_xyxy(pred.detach()), cxcywh_to_xyxy(target.to(out.dtype))
        iou = box_iou(a, b).diagonal() if len(a) else a.new_zeros(0)
        hits = ((iou > 0.5) & valid).sum()
    return loss, hits, valid.sum()


class LocalisationTask(Task):
    """Appendix A.1. ``cfg.head``: "scr" or "pcr"; ``cfg.tune``: "all" layers or "fc"
    (FC1, FC2 and the new last layer learn; the conv layers, batch-norm statistics
    included, stay as the classification net left them)."""

    name = "localisation"
    primary = "val_loc_err"
    train_error = "train_loc_err"

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.mean_box = (0.5, 0.5)
        self.dropped: dict[str, int] = {}

    def indexes(self, net_classes: list[str] | None = None
                ) -> tuple[ImageIndex, ImageIndex]:
        """The images with boxes, labelled as positions in the classes of the net the run
        starts from (the classification checkpoint) or resumes. The images are chosen as
        for classification (DIR's splits, file lists or --val-split)."""
        from ..data.sources import DataSpec, train_val_indexes
        from .data import box_index, mean_box

        cfg = self.cfg
        classes = net_classes
        what = cfg.finetune_from or cfg.resume or "the net"
        train_all, val_all = train_val_indexes(DataSpec.of(cfg))
        train, self.dropped["train"] = box_index(cfg.data, "train", classes, cfg.boxes,
                                                 what=str(what), index=train_all)
        source = cfg.boxes if cfg.boxes is None or not str(cfg.boxes).endswith(".csv") \
            or cfg.val_split is not None else None  # a train CSV lacks the val boxes
        val, self.dropped["val"] = box_index(cfg.data, "val", list(train.classes), source,
                                             what=str(what), index=val_all)
        self.mean_box = mean_box(train)
        log.info("localisation data: %d training and %d validation images with boxes "
                 "(%d and %d without a usable box left out); mean box %.0f%% x %.0f%% of "
                 "the image", len(train), len(val), self.dropped["train"],
                 self.dropped["val"], 100 * self.mean_box[0], 100 * self.mean_box[1])
        return train, val

    def prepare(self, model: VGG, from_checkpoint: bool) -> None:
        if self.cfg.tune == "fc":
            for p in model.features.parameters():
                p.requires_grad_(False)

    def train_mode(self, model: VGG) -> None:
        model.train()
        if self.cfg.tune == "fc":
            model.features.eval()  # frozen: batch-norm statistics do not move either

    def transform(self, train_index: ImageIndex) -> Any:
        from .data import LocTrainTransform

        return LocTrainTransform(super().transform(train_index), train_index.boxes or {},
                                 train_index.classes)

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return box_loss(out, batch["boxes"], batch["box_labels"], batch["box_valid"],
                        self.cfg.head)

    def empty_batch(self, crop: int) -> dict[str, torch.Tensor]:
        return super().empty_batch(crop) | {
            "boxes": torch.zeros(0, 4, dtype=torch.float32),
            "box_labels": torch.zeros(0, dtype=torch.int64),
            "box_valid": torch.zeros(0, dtype=torch.bool)}

    def validate(self, model: VGG, val_index: ImageIndex, ctx: TaskContext
                 ) -> dict[str, float]:
        from .evaluate import LocNet, simple_protocol

        cfg = self.cfg
        part = ctx.shard(val_index)
        sums = torch.zeros(5, dtype=torch.float64)  # loss, right, iou, n, bad
        if len(part):
            losses: list[float] = []
            net = LocNet(model, "validation", list(cfg.scale), cfg.tune,
                         self.mean_box)
            r = simple_protocol(net, part, cfg.test_scale, batch_size=cfg.val_batch or 16,
                                device=ctx.device,
                                workers=val_workers(cfg.workers, len(part)),
                                precision=val_precision(ctx.amp), progress=False,
                                allow_empty=True,
                                on_bad=ctx.note_bad, losses=losses)
            if r.n_images:
                sums[0] = sum(losses)
                sums[1] = round(r.n_images * (1.0 - r.top1_err))
                sums[2] = r.mean_iou() * r.n_images
                sums[3] = r.n_images
            sums[4] = len(r.skipped)
            model.train()
        return ctx.sum_over_ranks(sums, ["val_loss", "val_loc_err", "val_mean_iou",
                                         "val_images", "val_bad"])

    def meta(self) -> dict[str, Any]:
        return {"mean_box": list(self.mean_box), "tune": self.cfg.tune,
                "head": self.cfg.head}


def localisation_config(given: dict[str, Any], config_file: str | None = None) -> Any:
    """The TrainConfig of a localisation run (``vgg localize train``): Appendix A's
    defaults (PCR head, all layers tuned, lr 1e-3), the net's shape and single training
    scale S from the classification checkpoint ``given["source"]`` (its classes and
    colour statistics come with its weights), then the YAML file, then the other
    settings in ``given`` (what the user typed). With ``given["resume"]``: the saved run,
    changed by ``given`` as for classification."""
    from ..checkpoint import require_head
    from ..errors import ConfigError
    from ..eval.evaluate import default_scales
    from ..train import load_yaml, resolve, resume_config
    from ..weights import open_weights as load_checkpoint

    given = dict(given)
    if given.get("resume"):
        return resume_config(given["resume"], given)
    file_values = load_yaml(config_file) if config_file else {}
    source = given.pop("source", None) or file_values.pop("finetune_from", None)
    if not source:
        raise ConfigError("a new localisation net starts from a classification checkpoint: "
                          "give --from CKPT (or --resume RUN)")
    src = load_checkpoint(source)
    require_head(src, classifier=True, command="train")
    ts = src.meta.get("train_scale")
    s = default_scales(ts, src.config.crop, multi_scale=False)[0]
    if ts and ts[0] != ts[-1]:
        log.info("%s was trained with jittered S in [%d, %d]: the localisation net is "
                 "trained at the single scale S = %d (Appendix A; --scale to change)",
                 source, ts[0], ts[-1], s)
    values = {**src.config.shape_dict(), "head": "pcr", "tune": "all", "lr": 1e-3,
              "scale": (s, s), "out": "runs/localize", **file_values, **given,
              "finetune_from": str(source)}
    return resolve({}, values)
