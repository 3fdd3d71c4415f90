"""The study's plan: which nets each of the paper's experiments needs (Tables 3-6 and the
initialisation finding of Sect. 3.1), at a scale that fits the machine, and which
evaluations of them fill each table.

Scaled-down nets are the paper's nets (``width``, ``fc_width``, ``crop``); the paper's
scales are multiplied by crop / 224: S = 256 -> ``s``, S = 384 -> ``s_large``,
[256; 512] -> [``s``, ``s_max``]. As in Sect. 3.1, C, D and E at the large S are
fine-tuned from their small-S nets (lr / 10). The jittered nets are compared with fixed-S
nets given the same training: every arm trains ``epochs`` from scratch at S = ``s`` and
then one fine-tuning stage of ``finetune_epochs`` at lr / 10, at S = s, S = s_large or
jittered, all from the same small-S net (the paper fine-tuned its jittered nets from the
S = 384 nets; one shared parent gives equal training with three runs per net instead of
five, which the 90-minute CPU budget needs: docs/study.md).

The LRN comparison (Table 3: A vs A-LRN) and the initialisation study use nets without
batch norm, as the paper's; the other tables use batch norm so that every net trains from
scratch in few epochs (docs/study.md). The LRN pair starts from ``lrn_init`` (Glorot by
default: from the paper's N(0, 0.01) net A stays at chance at this scale, measured), and
that A is the net the initialisation study pre-initialises from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from ..errors import ConfigError

TABLES: tuple[str, ...] = ("table3", "table4", "table5", "table6", "init")
ARCHS: tuple[str, ...] = ("A", "A-LRN", "B", "C", "D", "E")  # by depth (Table 1)
SCALED: tuple[str, ...] = ("C", "D", "E")  # the nets trained at S=384 and jittered
PAPER_CROP = 224
NO_BN_LR = 0.01  # Sect. 3.1's learning rate, for the nets without batch norm
# Run-name labels of the initialisation schemes (vgg.model.INIT_SCHEMES)
INIT_LABELS = {"gaussian": "N(0,0.01)", "gaussian-scaled": "N(0,0.01)-scaled",
               "glorot": "Glorot", "kaiming": "He"}


@dataclass(frozen=True)
class StudyScale:
    """The sizes of one study: the generated data, the nets and the training budget."""

    classes: int
    train_per_class: int
    val_per_class: int
    min_side: int
    max_side: int
    object_size: tuple[float, float]
    clutter: float
    width: float
    fc_width: int
    crop: int
    epochs: int            # nets trained from scratch (A, B, C, D, E with BN, at small S)
    finetune_epochs: int   # each fine-tuning stage (S = 384-style, jittered, equal-pass arms)
    init_epochs: int       # the nets without batch norm (LRN pair, initialisation study)
    batch: int
    lr: float
    patience: int
    init_archs: tuple[str, ...]  # the deep nets of the initialisation study
    archs: tuple[str, ...] = ("A", "A-LRN", "B", "C", "D", "E")  # Table 3's nets, with BN
    # the nets without batch norm start from the paper's N(0, 0.01), scaled per layer
    # (SPEC 6b: "gaussian-scaled") or not ("gaussian")
    paper_init: str = "gaussian-scaled"
    # the LRN pair's init (and so net A's, which the deep nets are pre-initialised from):
    # the paper's Glorot alternative, since A from N(0, 0.01) stays at chance on a CPU
    lrn_init: str = "glorot"
    amp: str = "none"      # the training runs' mixed precision (TrainConfig.amp)
    scaled_archs: tuple[str, ...] = SCALED  # the nets trained at S = 384 and jittered

    @property
    def s(self) -> int:
        """The paper's S = 256, scaled with the crop."""
        return round(256 * self.crop / PAPER_CROP)

    @property
    def s_large(self) -> int:
        """The paper's S = 384, scaled."""
        return round(384 * self.crop / PAPER_CROP)

    @property
    def s_max(self) -> int:
        """The paper's Smax = 512, scaled."""
        return round(512 * self.crop / PAPER_CROP)

    def with_epochs(self, factor: float) -> StudyScale:
        """Every epoch count times ``factor`` (at least 2: one epoch gives no schedule)."""
        def f(n: int) -> int:
            return max(2, round(n * factor))
        return replace(self, epochs=f(self.epochs), finetune_epochs=f(self.finetune_epochs),
                       init_epochs=f(self.init_epochs))

    @property
    def chain_archs(self) -> tuple[str, ...]:
        """The nets trained at S = 384 and jittered: those of ``scaled_archs`` (C, D, E)
        that the study has."""
        return tuple(a for a in SCALED if a in self.archs and a in self.scaled_archs)

    @property
    def paper_init_label(self) -> str:
        return INIT_LABELS[self.paper_init]

    @property
    def lrn_init_label(self) -> str:
        return INIT_LABELS[self.lrn_init]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["object_size"] = list(self.object_size)
        d["init_archs"] = list(self.init_archs)
        d["archs"] = list(self.archs)
        d["scaled_archs"] = list(self.scaled_archs)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudyScale:
        try:
            d = dict(d)
            d["object_size"] = tuple(d["object_size"])
            d["init_archs"] = tuple(d["init_archs"])
            d["archs"] = tuple(d.get("archs", cls.archs))
            d["scaled_archs"] = tuple(d.get("scaled_archs", SCALED))
            # a study planned before the setting started its LRN pair from paper_init
            d.setdefault("lrn_init", d.get("paper_init", cls.paper_init))
            for k in ("paper_init", "lrn_init"):
                if d.get(k, getattr(cls, k)) not in INIT_LABELS:
                    raise TypeError(f"unknown {k} {d[k]!r}")
            return cls(**d)
        except (KeyError, TypeError) as e:
            raise ConfigError(f"study.json: unreadable plan ({e})") from None


def make_scale(quick: bool, device: torch.device) -> StudyScale:
    """The default sizes, chosen by measurement (docs/study.md, "Choosing the data").

    The data is harder than the demo's but learnable at crop 32: 10 shape classes,
    objects 30-80% of the smaller side (the demo: 40-90%), half a decoy polygon and
    1.5 extra lines per image on average (``clutter=0.5``), 600 training images per
    class. On it a width-1/4, FC-1024 net A with batch norm left chance after ~15k
    image passes and reached 68% top-1 error after 60k, still falling. A first choice,
    14 classes with objects of 20-60% and clutter 2, was not learnable at this size:
    A, and a ResNet-18 with Adam as a control, stayed at chance for 63k passes.

    The CPU plan gives each net trained from scratch 20 epochs (120k passes), each
    fine-tuning stage 4, the nets without batch norm 12, studies initialisation on E
    alone (the deepest net) and leaves out A-LRN with batch norm, so that the default
    three seeds fit 90 minutes on 2 cores in bf16 (docs/study.md, "Time": the previous
    24 / 6 / 16 epochs with five fine-tuning runs per net come to about two hours at the
    per-net rates measured there);
    ``quick`` is a check of the whole
    pipeline in a few minutes whose nets barely leave chance (its verdicts are then
    inconclusive, as they should be). A GPU doubles the crop and widens the nets."""
    common: dict[str, Any] = dict(object_size=(0.3, 0.8), clutter=0.5, batch=64,
                                  lr=0.02, patience=2, fc_width=1024)
    # bf16 where the hardware runs it natively (and, on a CPU, where it measured faster):
    # trained accuracy matched fp32 within seed noise (docs/benchmarks.md)
    common["amp"] = "bf16" if device.type == "cuda" else "auto"
    if device.type == "cuda":
        return StudyScale(classes=14, train_per_class=1500 if quick else 4000,
                          val_per_class=100 if quick else 200, min_side=72, max_side=160,
                          width=0.5, crop=64, epochs=8 if quick else 24,
                          finetune_epochs=3 if quick else 8, init_epochs=6 if quick else 16,
                          init_archs=("E",) if quick else ("D", "E"),
                          **common)
    if quick:
        return StudyScale(classes=10, train_per_class=300, val_per_class=40, min_side=40,
                          max_side=80, width=0.25, crop=32, epochs=6, finetune_epochs=2,
                          init_epochs=4, init_archs=("E",), **common)
    # A-LRN with batch norm (the "not the paper's comparison" LRN pair) is left out of
    # the CPU plan: the pair without batch norm trains here, and its 20 epochs a seed are
    # time the 90 minutes do not have
    return StudyScale(classes=10, train_per_class=600, val_per_class=60, min_side=40,
                      max_side=80, width=0.25, crop=32, epochs=20, finetune_epochs=4,
                      init_epochs=12, init_archs=("E",), archs=("A", "B", "C", "D", "E"),
                      **common)


@dataclass(frozen=True)
class RunSpec:
    """One training run of the study. ``parent``: the run whose best checkpoint this
    one starts from, fine-tuning all layers (``mode`` "finetune": the Sect. 3.1 chain
    S=256 -> 384 -> [256;512]) or copying four convs and the FC layers (``mode``
    "init_from": pre-initialisation from net A)."""

    name: str              # e.g. "D S=37", "E-noBN glorot"
    arch: str
    batch_norm: bool
    scale: tuple[int, int]
    epochs: int
    lr: float
    init: str
    seed: int
    parent: str | None = None
    mode: str | None = None  # "finetune" | "init_from"
    tables: tuple[str, ...] = ()

    @property
    def jittered(self) -> bool:
        return self.scale[0] != self.scale[1]

    @property
    def scale_label(self) -> str:
        a, b = self.scale
        return str(a) if a == b else f"[{a};{b}]"

    def settings(self, scale: StudyScale) -> dict[str, Any]:
        """What decides this run's result (the run folder's key hashes it, with the
        parent's key and the data's fingerprint)."""
        return {"arch": self.arch, "batch_norm": self.batch_norm, "scale": list(self.scale),
                "epochs": self.epochs, "lr": self.lr, "init": self.init, "seed": self.seed,
                "mode": self.mode, "width": scale.width, "fc_width": scale.fc_width,
                "crop": scale.crop, "batch": scale.batch, "patience": scale.patience,
                "amp": scale.amp}


@dataclass(frozen=True)
class EvalSpec:
    """One evaluation (Sect. 3.2) of one run: ``method`` at test scales ``scales``."""

    run: str
    method: str  # "dense" | "both" (dense and multi-crop pieces; select() splits them)
    scales: tuple[int, ...]

    @property
    def file(self) -> str:
        return f"eval-{self.method}-{'_'.join(map(str, self.scales))}.npz"


@dataclass
class StudyPlan:
    scale: StudyScale
    tables: tuple[str, ...]
    seeds: int
    runs: list[RunSpec] = field(default_factory=list)
    evals: list[EvalSpec] = field(default_factory=list)

    def run(self, name: str) -> RunSpec:
        for r in self.runs:
            if r.name == name:
                return r
        raise KeyError(name)

    def names(self, base: str) -> list[str]:
        """The run names of ``base`` ("D S=37") over the seeds."""
        return [seeded(base, s) for s in range(self.seeds)]

    def chain(self, name: str) -> list[RunSpec]:
        """The run ``name`` and its ancestors, the run trained from scratch first."""
        out = [self.run(name)]
        while out[0].parent is not None:
            out.insert(0, self.run(out[0].parent))
        return out

    def total_epochs(self, name: str) -> int:
        """Epochs of ``name`` counted from scratch: its own and its ancestors'."""
        return sum(r.epochs for r in self.chain(name))


def seeded(base: str, seed: int) -> str:
    return base if seed == 0 else f"{base} seed{seed}"


def parse_tables(text: str | None) -> tuple[str, ...]:
    """``--only table3,init`` -> ("table3", "init"); None -> every table."""
    if text is None:
        return TABLES
    chosen = [t.strip().lower() for t in text.split(",") if t.strip()]
    aliases = {"3": "table3", "4": "table4", "5": "table5", "6": "table6"}
    chosen = [aliases.get(t, t) for t in chosen]
    bad = [t for t in chosen if t not in TABLES]
    if bad or not chosen:
        raise ConfigError(f"--only: unknown table(s) {bad or [text]}; choose from "
                          f"{', '.join(TABLES)}")
    return tuple(t for t in TABLES if t in chosen)


# Which nets each table needs (the base names; the planner adds their parents)
def _fixed(a: str, sc: StudyScale) -> str:
    return f"{a} S={sc.s}"


def _large(a: str, sc: StudyScale) -> str:
    return f"{a} S={sc.s_large}"


def _jit(a: str, sc: StudyScale) -> str:
    return f"{a} S=[{sc.s};{sc.s_max}]"


def _fixed_ft(a: str, sc: StudyScale) -> str:
    """The S = 256 arm of the jittering comparison: one fine-tuning stage at S."""
    return f"{a} S={sc.s} +ft"


def no_bn(a: str, sc: StudyScale, how: str | None = None) -> str:
    """A net without batch norm: ``how`` is an init label or "from A" (default: the
    paper's init of this study)."""
    return f"{a}-noBN S={sc.s} {how or sc.paper_init_label}"


def lrn_a(sc: StudyScale, arch: str = "A") -> str:
    """Net A (or A-LRN) of the LRN pair without batch norm, from ``lrn_init``; the A that
    the initialisation study pre-initialises from."""
    return no_bn(arch, sc, sc.lrn_init_label)


def jitter_arms(a: str, sc: StudyScale) -> dict[str, str]:
    """The three arms of the jittering comparison for net ``a``, each trained for
    ``epochs`` + ``finetune_epochs``: fixed S = 256, fixed S = 384, jittered."""
    return {"256": _fixed_ft(a, sc), "384": _large(a, sc), "jittered": _jit(a, sc)}


def single_q(spec: RunSpec) -> int:
    """Sect. 3.2 single-scale testing: Q = S, or the middle of the jitter range."""
    return (spec.scale[0] + spec.scale[1]) // 2


def multi_q(spec: RunSpec, crop: int) -> tuple[int, ...]:
    """Sect. 3.2 multi-scale testing: {S-32, S, S+32} (32 scaled with the crop) for a
    fixed S, {Smin, (Smin+Smax)/2, Smax} for a jittered S."""
    from ..eval.evaluate import default_scales

    return tuple(default_scales(list(spec.scale), crop))


def _base_runs(sc: StudyScale, seed: int) -> dict[str, RunSpec]:
    """Every run the study can make for one seed, by name."""
    out: dict[str, RunSpec] = {}

    def add(spec: RunSpec) -> None:
        out[spec.name] = spec

    ft_lr = sc.lr / 10  # Sect. 3.1: S = 384 nets start from S = 256 with lr 1e-3

    def finetune(name: str, a: str, scale: tuple[int, int], parent: str) -> None:
        add(RunSpec(seeded(name, seed), a, True, scale, sc.finetune_epochs, ft_lr,
                    "kaiming", seed, parent=seeded(parent, seed), mode="finetune"))

    for a in sc.archs:
        add(RunSpec(seeded(_fixed(a, sc), seed), a, True, (sc.s, sc.s), sc.epochs, sc.lr,
                    "kaiming", seed))
    for a in sc.chain_archs:
        small, large = (sc.s, sc.s), (sc.s_large, sc.s_large)
        # the three arms of the jittering comparison, one fine-tuning stage each from the
        # same S = s net: S = s_large (the paper's S = 384 net), jittered, and S = s
        finetune(_large(a, sc), a, large, _fixed(a, sc))
        finetune(_jit(a, sc), a, (sc.s, sc.s_max), _fixed(a, sc))
        finetune(_fixed_ft(a, sc), a, small, _fixed(a, sc))
    # Sect. 3.1 and Table 3's LRN pair, without batch norm: A and A-LRN from lrn_init;
    # deep nets from the paper's init, from that A, and Glorot
    for a in ("A", "A-LRN"):
        add(RunSpec(seeded(lrn_a(sc, a), seed), a, False, (sc.s, sc.s), sc.init_epochs,
                    NO_BN_LR, sc.lrn_init, seed))
    for a in sc.init_archs:
        add(RunSpec(seeded(no_bn(a, sc), seed), a, False, (sc.s, sc.s), sc.init_epochs,
                    NO_BN_LR, sc.paper_init, seed))
        add(RunSpec(seeded(no_bn(a, sc, "from A"), seed), a, False, (sc.s, sc.s),
                    sc.init_epochs, NO_BN_LR, sc.paper_init, seed,
                    parent=seeded(lrn_a(sc), seed), mode="init_from"))
        add(RunSpec(seeded(no_bn(a, sc, "Glorot"), seed), a, False, (sc.s, sc.s),
                    sc.init_epochs, NO_BN_LR, "glorot", seed))
    return out


def table_runs(table: str, sc: StudyScale) -> list[str]:
    """The base names (seed 0) of the nets a table reports."""
    scaled = sc.chain_archs
    if table == "table3":
        return ([lrn_a(sc, a) for a in ("A", "A-LRN")]
                + [_fixed(a, sc) for a in sc.archs]
                + [f(a, sc) for a in scaled for f in (_large, _jit, _fixed_ft)])
    if table == "table4":
        return [f(a, sc) for a in scaled for f in (_large, _jit)]
    if table in ("table5", "table6"):
        need = [a for a in ("D", "E") if a in sc.chain_archs]
        if len(need) < 2 and table == "table6":
            raise ConfigError("Table 6 fuses the jittered D and E: the study's nets must "
                              "include both")
        return [_jit(a, sc) for a in need]
    if table == "init":
        return [lrn_a(sc)] + [no_bn(a, sc, how) for a in sc.init_archs
                                   for how in (None, "from A", "Glorot")]
    raise ConfigError(f"unknown table {table!r}")


def table_evals(table: str, spec: RunSpec, crop: int) -> list[EvalSpec]:
    """The evaluations of one net that a table reads: Table 3 dense at one scale, Table 4
    dense at three, Tables 5 and 6 dense and multi-crop at three, the init study dense at
    one."""
    if table in ("table3", "init"):
        return [EvalSpec(spec.name, "dense", (single_q(spec),))]
    if table == "table4":
        return [EvalSpec(spec.name, "dense", (single_q(spec),)),
                EvalSpec(spec.name, "dense", multi_q(spec, crop))]
    return [EvalSpec(spec.name, "both", multi_q(spec, crop))]


def plan_study(scale: StudyScale, tables: tuple[str, ...], seeds: int) -> StudyPlan:
    """Every run (parents first) and evaluation the chosen tables need, for each seed."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    plan = StudyPlan(scale=scale, tables=tables, seeds=seeds)
    order: dict[str, RunSpec] = {}
    evals: dict[tuple[str, str, tuple[int, ...]], EvalSpec] = {}
    for seed in range(seeds):
        every = _base_runs(scale, seed)

        def need(name: str, table: str, every: dict[str, RunSpec] = every) -> None:
            spec = every[name]
            if spec.parent is not None:
                need(spec.parent, "", every)  # a parent is trained, not necessarily reported
            old = order.get(name, spec)
            tabs = old.tables + ((table,) if table and table not in old.tables else ())
            order[name] = replace(spec, tables=tabs)

        for table in tables:
            for base in table_runs(table, scale):
                name = seeded(base, seed)
                need(name, table)
                for ev in table_evals(table, every[name], scale.crop):
                    evals.setdefault((ev.run, ev.method, ev.scales), ev)
    plan.runs = list(order.values())
    plan.evals = list(evals.values())
    return plan
