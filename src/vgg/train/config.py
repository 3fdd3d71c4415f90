"""``TrainConfig``: every setting of ``vgg train`` (and ``vgg localize train``), with the
paper's recipe (Sect. 3.1) as defaults, and its YAML form (``configs/*.yaml``; CLI flags
given by the user override the file's values). Every value is checked by the same rules
whether it comes from a flag, a YAML file or Python (``vgg.settings``)."""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..model import (HEADS, INIT_SCHEMES, NET_STRIDE, PAPER_INIT_STD, NetShape, VGGConfig,
                     check_dense_stride, resolve_dense_stride)
from ..settings import (MAX_BATCH, MAX_SEED, MAX_SIDE, check_bool, check_choice, check_float,
                        check_int, check_str, check_workers)

AMP_MODES = ("none", "bf16", "fp16", "auto")
VAL_METHODS = ("center", "dense")
SCHEDULES = ("plateau", "cosine", "step")
TUNE = ("all", "fc")
MAX_EPOCHS = 100_000

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig(NetShape):
    """One training run: the net's shape (:class:`vgg.model.NetShape`: arch, batch_norm,
    width, fc_width, crop, dropout) and everything else. Scales are in pixels: ``scale`` =
    (s_min, s_max), equal for fixed-scale training (S = 256) and different for scale
    jittering ([256, 512]). ``head`` "classes" trains a classifier (Sect. 3.1); "scr" or
    "pcr" a box regressor (Appendix A), normally from a classification checkpoint
    (``finetune_from``)."""

    data: str | None = None          # DIR with train/ and val/ (ImageFolder or ImageNet)
    train_list: str | None = None    # file list of the training images (paths relative to DIR)
    val_list: str | None = None      # file list of the validation images
    val_split: float | None = None   # fraction of each class held out for validation
    split_seed: int = 0              # the seed of that split (not of training)
    out: str = "runs/train"          # run folder: last.pt, best.pt, metrics.jsonl, ...
    head: str = "classes"            # "classes" | "scr" | "pcr" (localisation)
    tune: str = "all"                # localisation: "all" layers, or "fc" (FC1, FC2, FC8)
    boxes: str | None = None         # localisation: annotation source (default: found)
    # Sect. 3.1 recipe
    scale: tuple[int, int] = (256, 256)
    epochs: int = 74
    batch: int = 256
    micro_batch: int | None = None   # images per forward/backward; None = the whole batch
    lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    decay_biases: bool = False       # biases (and BN affine) are not weight-decayed
    schedule: str = "plateau"        # the paper's; "cosine" / "step" for fixed budgets
    warmup: float = 0.0              # epochs of linear lr warm-up (any schedule)
    lr_factor: float = 0.1
    patience: int = 2
    plateau_threshold: float = 1e-3
    lr_decreases: int = 3
    flip: bool = True
    colour_std: float = 0.1          # alpha ~ N(0, 0.1) of the PCA colour shift; 0 = off
    # initialisation
    init: str = "gaussian"
    init_std: float = PAPER_INIT_STD
    init_from: str | None = None     # a trained net A: first 4 convs + 3 FCs
    finetune_from: str | None = None  # all weights from a checkpoint (S=256 -> 384 -> jitter)
    resume: str | None = None        # a run folder to continue (see resume_config)
    overwrite: bool = False          # start a new run in a folder that holds one
    # colour statistics for the mean subtraction and the PCA shift
    stats: str | None = None         # JSON written by `vgg data stats`; None = compute
    stats_limit: int = 2000          # images sampled to compute them
    # validation
    val_method: str = "center"
    val_scale: int | None = None     # Q; default (s_min + s_max) / 2
    dense_stride: int | None = None  # dense validation's output stride; None = the crop's
    val_batch: int | None = None
    # machinery
    device: str = "auto"
    amp: str = "none"                # mixed precision: none (fp32), bf16, fp16 or auto
    channels_last: bool = True       # net and batches NHWC (False: NCHW)
    compile: bool = False
    deterministic: bool = False
    workers: int | None = None       # loader processes; None = usable cores (max 8)
    seed: int = 0
    save_every_minutes: float = 30.0
    save_every_steps: int = 0        # 0 = off; also checkpoint every N optimizer steps
    tensorboard: bool = True
    plot: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        scale = self.scale
        if isinstance(scale, (int, str)) and not isinstance(scale, bool):
            scale = parse_scale(str(scale))
        if not isinstance(scale, (tuple, list)) or len(scale) not in (1, 2):
            raise ConfigError(f"scale (--scale) must be S or [s_min, s_max], got {scale!r}")
        scale = tuple(check_int("scale", s, 1, MAX_SIDE) for s in scale) * (3 - len(scale))
        object.__setattr__(self, "scale", scale[:2])
        s_min, s_max = self.scale
        if s_min > s_max:
            raise ConfigError(f"scale (--scale): s_min {s_min} > s_max {s_max}")
        if s_min < self.crop:
            raise ConfigError(f"scale (--scale) S={s_min} is smaller than the crop {self.crop}")
        ints = {"epochs": (1, MAX_EPOCHS), "batch": (1, MAX_BATCH), "patience": (0, 10_000),
                "lr_decreases": (0, 100), "stats_limit": (1, 10**9), "seed": (0, MAX_SEED),
                "save_every_steps": (0, 10**12), "split_seed": (0, MAX_SEED)}
        for name, (lo, hi) in ints.items():
            object.__setattr__(self, name, check_int(name, getattr(self, name), lo, hi))
        for name in ("micro_batch", "val_batch"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, check_int(name, getattr(self, name), 1,
                                                         MAX_BATCH))
        if self.micro_batch is not None and self.micro_batch > self.batch:
            raise ConfigError(f"micro_batch (--micro-batch) {self.micro_batch} > batch "
                              f"{self.batch}")
        floats = {"lr": (0.0, 10.0, True), "momentum": (0.0, 1.0, False),
                  "weight_decay": (0.0, 1.0, False), "lr_factor": (0.0, 1.0, True),
                  "plateau_threshold": (0.0, 1.0, False), "colour_std": (0.0, 10.0, False),
                  "init_std": (0.0, 10.0, True), "save_every_minutes": (0.0, 1e7, True)}
        for name, (lo, hi, lo_open) in floats.items():
            hi_open = name in ("momentum", "lr_factor")
            object.__setattr__(self, name, check_float(name, getattr(self, name), lo, hi,
                                                       lo_open=lo_open, hi_open=hi_open))
        warmup = check_float("warmup", self.warmup, 0.0, float(self.epochs))
        object.__setattr__(self, "warmup", warmup)
        for name in ("decay_biases", "flip", "overwrite", "channels_last", "compile",
                     "deterministic", "tensorboard", "plot", "progress"):
            check_bool(name, getattr(self, name))
        check_choice("head", self.head, HEADS)
        check_choice("tune", self.tune, TUNE)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("init", self.init, INIT_SCHEMES)
        check_choice("amp", self.amp, AMP_MODES)
        check_choice("val_method", self.val_method, VAL_METHODS)
        if self.dense_stride is not None:
            check_dense_stride(self.dense_stride)
            if self.val_method != "dense":
                raise ConfigError("dense_stride (--dense-stride) applies to dense validation "
                                  "(--val-method dense)")
        if not isinstance(self.device, str) or not (
                self.device in ("auto", "cpu", "cuda", "mps")
                or self.device.startswith("cuda:")):
            raise ConfigError(f"device (--device) must be auto, cpu, cuda, cuda:N or mps, "
                              f"got {self.device!r}")
        object.__setattr__(self, "workers", check_workers(self.workers))
        for name in ("data", "out", "boxes", "init_from", "finetune_from", "resume", "stats",
                     "train_list", "val_list"):
            check_str(name, getattr(self, name), allow_none=name != "out")
        if self.val_split is not None:
            object.__setattr__(self, "val_split", check_float(
                "val_split", self.val_split, 0.0, 1.0, lo_open=True, hi_open=True))
            if self.val_list is not None:
                raise ConfigError("give --val-list or --val-split, not both: --val-split "
                                  "holds out part of the training images, --val-list names "
                                  "the validation images")
        if self.val_scale is not None:
            object.__setattr__(self, "val_scale", check_int("val_scale", self.val_scale,
                                                            self.crop, MAX_SIDE))
        if self.init_from and self.finetune_from:
            raise ConfigError("give --init-from or --finetune-from, not both")
        if self.head != "classes" and self.init_from:
            raise ConfigError("a localisation net starts from a classification checkpoint "
                              "(--from / finetune_from), not --init-from")
        if self.head == "classes" and self.tune != "all":
            raise ConfigError("tune (--tune) fc applies to localisation nets only")
        if self.resume is None and self.data is None:
            raise ConfigError("no training data: give --data DIR (or --resume RUN)")

    @property
    def s_min(self) -> int:
        return self.scale[0]

    @property
    def s_max(self) -> int:
        return self.scale[1]

    @property
    def test_scale(self) -> int:
        """Q for validation: the training S, or the middle of the jitter range."""
        return self.val_scale or (self.s_min + self.s_max) // 2

    @property
    def val_dense_stride(self) -> int | None:
        """The output stride of dense validation (SPEC 6b: ``dense_stride``, or the
        default for the crop); None when validation is not dense."""
        if self.val_method != "dense":
            return None
        return resolve_dense_stride(self.dense_stride, self.crop)

    @property
    def is_localisation(self) -> bool:
        return self.head != "classes"

    def net_config(self, num_classes: int) -> VGGConfig:
        """The :class:`VGGConfig` of the net this run trains."""
        return VGGConfig(**self.shape_dict(), num_classes=num_classes, head=self.head)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["scale"] = list(self.scale)
        return d

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


FIELDS = {f.name for f in fields(TrainConfig)}


def parse_scale(text: str) -> tuple[int, int]:
    """``"256"`` -> (256, 256); ``"256-512"`` or ``"256,512"`` -> (256, 512)."""
    parts = str(text).replace(",", "-").replace(":", "-").split("-")
    try:
        vals = [int(p) for p in parts if p.strip()]
    except ValueError:
        raise ConfigError(f"scale must be S or SMIN-SMAX (e.g. 256-512), got {text!r}") from None
    if len(vals) == 1:
        return vals[0], vals[0]
    if len(vals) == 2:
        return vals[0], vals[1]
    raise ConfigError(f"scale must be S or SMIN-SMAX (e.g. 256-512), got {text!r}")


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error
    (plain PyYAML keeps the last value without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`
                continue
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            if not isinstance(key, (str, int, float, bool)):
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key]})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error on one line: what is wrong and where."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A config file's settings, keys normalised to field names (``micro-batch`` ->
    ``micro_batch``). A file that cannot be read, is not UTF-8 text, is not YAML, is not a
    mapping, gives a key twice, or names an unknown setting is one error naming the file."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config {path} is not UTF-8 text (byte {e.start}: "
                          f"{e.object[e.start:e.start + 1]!r}); a config is a YAML file"
                          ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config {path} is not valid YAML: {_yaml_problem(e)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path}: expected a mapping of settings (name: value "
                          f"lines), got a YAML {type(raw).__name__}")
    out: dict[str, Any] = {}
    for k, v in raw.items():
        name = str(k).replace("-", "_")
        if name in out:
            raise ConfigError(f"config {path}: setting {name!r} is given twice (as "
                              f"{name.replace('_', '-')!r} and {name!r})")
        out[name] = v
    unknown = sorted(set(out) - FIELDS)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {unknown}")
    if "scale" in out and not isinstance(out["scale"], (list, tuple)):
        out["scale"] = parse_scale(str(out["scale"]))
    return out


def resolve(file_values: dict[str, Any] | None = None,
            overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults <- config file <- explicit overrides (the flags the user gave)."""
    merged: dict[str, Any] = {}
    merged.update(file_values or {})
    merged.update(overrides or {})
    unknown = sorted(set(merged) - FIELDS)
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown}")
    if "scale" in merged and isinstance(merged["scale"], list):
        merged["scale"] = tuple(merged["scale"])
    try:
        return TrainConfig(**merged)
    except TypeError as e:
        raise ConfigError(f"bad config value: {e}") from None


# Settings a resumed run may change: they do not alter the arithmetic of training. The
# data folder and the list files may move; the trainer checks that they hold the same
# images (vgg.data.sources.fingerprint).
RESUME_OVERRIDABLE = ("data", "train_list", "val_list", "epochs", "device", "workers",
                      "save_every_minutes", "save_every_steps", "progress", "compile",
                      "tensorboard", "plot")


def resume_config(run: str | os.PathLike[str], given: dict[str, Any] | None = None
                  ) -> TrainConfig:
    """The configuration that continues the run in folder ``run``: its saved
    ``config.yaml``, changed by exactly the settings in ``given`` (what the user typed).

    A given setting in ``RESUME_OVERRIDABLE`` (``epochs`` to extend a run, ``data`` when
    the dataset moved, ...) replaces the saved value. Any other given setting must equal
    the saved value (typing the run's own ``--lr`` again is fine); a different value is a
    ``ConfigError`` naming it: the recipe of a run cannot change half-way. The decision
    depends only on what was given, never on whether a value equals a built-in default.
    """
    from ..errors import CheckpointError

    run = Path(run)
    saved_path = run / "config.yaml"
    if not run.is_dir():
        raise CheckpointError(f"--resume: no run folder {run}")
    if not saved_path.is_file():
        raise CheckpointError(f"--resume: {run} has no config.yaml (not a vgg train run)")
    saved = load_saved(saved_path)
    saved_cfg = resolve(saved)
    given = {k: v for k, v in (given or {}).items() if k not in ("resume", "out")}
    probe = resolve(saved, given)  # checks the given values by the usual rules
    changed = sorted(k for k in given if k not in RESUME_OVERRIDABLE
                     and getattr(probe, k) != getattr(saved_cfg, k))
    if changed:
        detail = ", ".join(f"{k} {getattr(saved_cfg, k)!r} -> {getattr(probe, k)!r}"
                           for k in changed)
        raise ConfigError(
            f"--resume {run} continues the run with its own settings ({saved_path}); "
            f"cannot change {detail}. Only {', '.join(RESUME_OVERRIDABLE)} may change; "
            f"start a new run (e.g. --finetune-from {run / 'last.pt'}) to change the others")
    merged = {**saved, **given, "resume": str(run), "out": str(run), "overwrite": False}
    return resolve(merged)


def load_saved(path: Path) -> dict[str, Any]:
    """A run's saved ``config.yaml``, read as that run was made: a run saved before
    ``dense_stride`` existed validated densely at stride 32, and keeps doing so when
    resumed (its best epoch and plateau schedule compare errors of one protocol)."""
    saved = load_yaml(path)
    if saved.get("val_method") == "dense" and "dense_stride" not in saved:
        log.info("%s predates dense_stride: its dense validation stays at stride %d",
                 path, NET_STRIDE)
        saved["dense_stride"] = NET_STRIDE
    return saved


def check_resume(cfg: TrainConfig) -> None:
    """A config that resumes ``cfg.resume`` must carry that run's recipe: build it with
    :func:`resume_config` (what ``vgg train --resume`` and :func:`vgg.train.resume` do);
    any other difference is refused, naming it."""
    from ..errors import CheckpointError

    run = Path(cfg.resume)  # type: ignore[arg-type]
    saved_path = run / "config.yaml"
    if not saved_path.is_file():
        raise CheckpointError(f"--resume: {run} has no config.yaml (not a vgg train run)")
    saved = resolve(load_saved(saved_path))
    skip = set(RESUME_OVERRIDABLE) | {"resume", "out", "overwrite"}
    changed = sorted(n for n in FIELDS - skip if getattr(cfg, n) != getattr(saved, n))
    if changed:
        raise ConfigError(f"resuming {run} with settings that differ from its config.yaml: "
                          f"{', '.join(changed)}; use vgg.train.resume({str(run)!r}, ...) "
                          f"(only {', '.join(RESUME_OVERRIDABLE)} may change)")


def save_yaml(cfg: TrainConfig, path: str | os.PathLike[str]) -> None:
    from ..checkpoint import atomic_write

    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    atomic_write(path, lambda f: f.write(text.encode()))
