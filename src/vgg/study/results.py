"""The study's numbers read back from its run folders: per-seed, per-image errors of every
saved evaluation, the rows of the paper's tables, and the findings with their verdicts.

A finding is declared before anything is measured (:func:`finding_specs`): its claim and
its two sides, each a list of runs (pooled: each image's error is averaged over the nets of
a side, seed by seed) with the evaluation read from them. ``vgg study --plan`` lists them;
:func:`findings` decides them from the saved posteriors."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import VggError
from ..eval.metrics import mean_std, topk_wrong
from .plan import (
    EvalSpec,
    StudyPlan,
    StudyScale,
    jitter_arms,
    lrn_a,
    multi_q,
    no_bn,
    seeded,
    single_q,
    table_runs,
)
from .runs import read_done
from .verdict import (
    EQUIVALENCE,
    MIN_SEEDS,
    UNSURE,
    Interval,
    better_verdict,
    no_gain_verdict,
    paired_bootstrap,
)

log = logging.getLogger(__name__)

# The paper's numbers (top-1, top-5 val error %) as SPEC.md section 4 gives them, by
# (config, kind): kind "S" = fixed S = 256, "L" = S = 384, "J" = [256;512]
PAPER_T3 = {("A", "S"): (29.6, 10.4), ("A-LRN", "S"): (29.7, 10.5), ("B", "S"): (28.7, 9.9),
            ("C", "S"): (28.1, 9.4), ("C", "L"): (28.1, 9.3), ("C", "J"): (27.3, 8.8),
            ("D", "S"): (27.0, 8.8), ("D", "L"): (26.8, 8.7), ("D", "J"): (25.6, 8.1),
            ("E", "S"): (27.3, 9.0), ("E", "L"): (26.9, 8.7), ("E", "J"): (25.5, 8.0)}
PAPER_T4 = {("D", "J"): (24.8, 7.5), ("E", "J"): (24.8, 7.5)}
PAPER_T5 = {("D", "dense"): (24.8, 7.5), ("D", "multicrop"): (24.6, 7.5),
            ("D", "both"): (24.4, 7.2), ("E", "dense"): (24.8, 7.5),
            ("E", "multicrop"): (24.6, 7.4), ("E", "both"): (24.4, 7.1)}
PAPER_T6 = (23.7, 6.8)
PAPER_SCALES = {"S": ("256", "256"), "L": ("384", "384"), "J": ("[256;512]", "384")}
PAPER_SCALES_MULTI = {"S": ("256", "224,256,288"), "L": ("384", "352,384,416"),
                      "J": ("[256;512]", "256,384,512")}

# How a side reads its runs: one evaluation method, the better of dense and multi-crop per
# net ("best"), or the mean posterior of the side's nets ("fusion", Sect. 4.4)
SIDE_METHODS = ("dense", "multicrop", "both", "best", "fusion")
METHOD_TEXT = {"dense": "dense", "multicrop": "multi-crop", "both": "multi-crop & dense",
               "best": "the better of dense and multi-crop",
               "fusion": "fusion (mean posterior), multi-crop & dense"}


@dataclass
class Measured:
    """One evaluation of one setting over the seeds: per-seed, per-image top-1 and top-5
    errors (``(seeds, N)`` arrays of 0/1)."""

    seed_wrong1: np.ndarray
    seed_wrong5: np.ndarray

    @property
    def seed_top1(self) -> list[float]:
        return [float(v) for v in self.seed_wrong1.mean(axis=1)]

    @property
    def seed_top5(self) -> list[float]:
        return [float(v) for v in self.seed_wrong5.mean(axis=1)]

    @property
    def wrong1(self) -> np.ndarray:
        """(N,) fraction of the seeds that got each image wrong."""
        return self.seed_wrong1.mean(axis=0)

    @property
    def top1(self) -> float:
        return float(np.mean(self.seed_top1))

    @property
    def top5(self) -> float:
        return float(np.mean(self.seed_top5))

    def cell(self, which: int = 1) -> str:
        """Mean ± std over the seeds (``metrics.mean_std``: the sample std, as transfer's
        splits)."""
        return mean_sd(self.seed_top1 if which == 1 else self.seed_top5)


def mean_sd(values: list[float], signed: bool = False) -> str:
    """``27.7 ± 2.6`` in points (``metrics.mean_std``: the sample std, ddof=1); one value
    alone."""
    fmt = "+.1f" if signed else ".1f"
    mean, std = mean_std(values, "seed")
    return f"{100 * mean:{fmt}}" + (f" ± {100 * std:.1f}" if std is not None else "")


def _wrong(post: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: 1.0 where the top-1 (top-5) guess is wrong."""
    return (topk_wrong(post, labels, 1).astype(np.float64),
            topk_wrong(post, labels, 5).astype(np.float64))


@dataclass(frozen=True)
class Side:
    """One side of a comparison: the nets ``runs`` (base names; pooled over them, seed by
    seed), read by ``method`` at one test scale or three (``multi``)."""

    label: str
    runs: tuple[str, ...]
    method: str = "dense"
    multi: bool = False
    pool: str = "mean"  # "mean" over the nets, or "best": the net with the lower error

    def text(self) -> str:
        pool = ("the better of the nets" if self.pool == "best" and len(self.runs) > 1
                else "mean over the nets" if len(self.runs) > 1 and self.method != "fusion"
                else "")
        return ", ".join(x for x in (METHOD_TEXT[self.method], "three test scales"
                                     if self.multi else "one test scale", pool) if x)


@dataclass(frozen=True)
class FindingSpec:
    """One of the paper's findings as this study tests it: side ``a`` is the one the claim
    says is worse (or, for ``no_gain``, the one without the feature), ``b`` the better one;
    differences are err(a) - err(b), positive in the claim's favour."""

    id: str
    table: str
    claim: str
    paper: str
    compared: str
    a: Side
    b: Side
    no_gain: bool = False
    reason: str = ""  # why it may not hold at this scale (shown when it does not hold)
    label: str = ""   # e.g. "not the paper's comparison"


@dataclass
class Finding:
    """A :class:`FindingSpec` and what this study measured for it."""

    spec: FindingSpec
    verdict: str = UNSURE
    interval: Interval | None = None
    note: str = ""
    errors: tuple[float, float] | None = None  # mean top-1 error of side a, side b
    seeds_a: list[float] = field(default_factory=list)  # per-seed top-1 of side a
    seeds_b: list[float] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def claim(self) -> str:
        return self.spec.claim + (f" [{self.spec.label}]" if self.spec.label else "")

    @property
    def seed_diffs(self) -> list[float]:
        return [a - b for a, b in zip(self.seeds_a, self.seeds_b)]

    def seeds_text(self) -> str:
        """Per-seed top-1 errors of each side and of their difference, with mean ± sd."""
        if not self.seeds_a:
            return ""

        def one(vals: list[float], signed: bool = False) -> str:
            fmt = "+.1f" if signed else ".1f"
            return (", ".join(f"{100 * v:{fmt}}" for v in vals)
                    + f" ({mean_sd(vals, signed)})")

        return (f"per seed: {self.spec.a.label} {one(self.seeds_a)}; {self.spec.b.label} "
                f"{one(self.seeds_b)}; difference {one(self.seed_diffs, True)}")


@dataclass
class StudyResults:
    plan: StudyPlan
    folders: dict[str, Path]          # run name -> run folder
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # done.json per run
    _cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, dict[str, Any]] | None] = \
        field(default_factory=dict)

    @classmethod
    def load(cls, plan: StudyPlan, folders: dict[str, Path]) -> StudyResults:
        res = cls(plan, folders)
        for name, folder in folders.items():
            rec = read_done(folder)
            if rec is not None:
                res.records[name] = rec
        return res

    # -- raw posteriors ---------------------------------------------------------------

    def _post(self, run: str, file: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | None:
        from ..eval.fusion import Posteriors

        key = (run, file)
        if key not in self._cache:
            path = self.folders[run] / file
            self._cache[key] = None
            if path.is_file():
                try:
                    p = Posteriors.load(path)
                    self._cache[key] = (p.posteriors.astype(np.float64), p.labels, p.meta)
                except VggError as e:
                    log.warning("ignoring %s: %s", path, e)
        return self._cache[key]

    def dense_strides(self) -> list[int]:
        """The output strides the saved dense evaluations were made at, as their files
        record them (``dense_stride`` in the posteriors' metadata, of dense and of
        multi-crop & dense evaluations; absent from files of a vgg.eval that had no such
        option)."""
        found: set[int] = set()
        for spec in self.plan.evals:
            if spec.method in ("dense", "both") and spec.run in self.folders:
                got = self._post(spec.run, spec.file)
                if got is not None and isinstance(got[2].get("dense_stride"), int):
                    found.add(got[2]["dense_stride"])
        return sorted(found)

    def measure(self, base: str, file_of: Callable[[str], list[str]]) -> Measured | None:
        """``base`` over the seeds; ``file_of(run)`` names the files whose posteriors are
        averaged (one file, or two nets' for a fusion). None when any is missing."""
        w1, w5 = [], []
        for s in range(self.plan.seeds):
            parts = []
            for f in file_of(seeded(base, s)):
                run, file = f.split("::")
                got = self._post(run, file)
                if got is None:
                    return None
                parts.append(got)
            post = np.mean([p for p, _, _ in parts], axis=0)  # Sect. 4.4: mean posterior
            a, b = _wrong(post, parts[0][1])
            w1.append(a)
            w5.append(b)
        if len({len(a) for a in w1}) != 1:
            log.warning("%s: the seeds were evaluated on different images", base)
            return None
        return Measured(np.stack(w1), np.stack(w5))

    def eval_of(self, base: str, method: str, multi: bool) -> Measured | None:
        """``base`` evaluated with ``method`` ("dense", "multicrop", "both") at one test
        scale or at three (Sect. 3.2)."""
        if base not in self.folders:  # a net this study does not have
            return None
        spec = self.plan.run(base)
        qs = multi_q(spec, self.plan.scale.crop) if multi else (single_q(spec),)
        if method == "dense":
            name = EvalSpec(base, "dense", qs).file
            if multi and not (self.folders[base] / name).is_file():
                # Table 5's evaluation holds dense pieces at the three scales too
                name = EvalSpec(base, "both", qs).file.replace("-both-", "-dense-")
        else:
            name = EvalSpec(base, "both", qs).file.replace("-both-", f"-{method}-")
        return self.measure(base, lambda run: [f"{run}::{name}"])

    def fusion(self, bases: list[str]) -> Measured | None:
        """Sect. 4.4: the mean posterior of several nets, each multi-crop & dense at three
        scales."""
        files = []
        if any(b not in self.folders for b in bases):
            return None
        for b in bases:
            spec = self.plan.run(b)
            files.append(EvalSpec(b, "both", multi_q(spec, self.plan.scale.crop)).file)
        return self.measure(bases[0], lambda run: [
            f"{seeded(b, _seed_of(run))}::{f}" for b, f in zip(bases, files)])

    def side(self, side: Side) -> np.ndarray | None:
        """``(seeds, N)`` per-image top-1 errors of one side, pooled over its nets seed by
        seed; None when a run or evaluation it needs is missing."""
        if side.method == "fusion":
            m = self.fusion(list(side.runs))
            return None if m is None else m.seed_wrong1
        per_net = []
        for base in side.runs:
            if side.method == "best":
                dn, mc = (self.eval_of(base, m, side.multi) for m in ("dense", "multicrop"))
                m = None if dn is None or mc is None else (dn if dn.top1 <= mc.top1 else mc)
            else:
                m = self.eval_of(base, side.method, side.multi)
            if m is None:
                return None
            per_net.append(m.seed_wrong1)
        if not per_net or len({a.shape for a in per_net}) != 1:
            return None
        if side.pool == "best":
            return min(per_net, key=lambda w: float(w.mean()))
        return np.mean(per_net, axis=0)

    def diverged(self, base: str) -> list[str]:
        return [n for n in self.plan.names(base)
                if (self.records.get(n) or {}).get("diverged")]


def _seed_of(run: str) -> int:
    tail = run.rsplit(" seed", 1)
    return int(tail[1]) if len(tail) == 2 and tail[1].isdigit() else 0


# A side "has learnt" when its top-1 error is at least this far below chance.
LEARNT_MARGIN = 0.10


def decide(spec: FindingSpec, a: np.ndarray | None, b: np.ndarray | None,
           min_seeds: int = MIN_SEEDS) -> Finding:
    """The verdict of ``spec`` from the ``(seeds, N)`` per-image errors of its sides: a
    hierarchical bootstrap interval (:func:`vgg.study.verdict.paired_bootstrap`), and
    inconclusive whatever the interval when a side has fewer than ``min_seeds`` seeds."""
    f = Finding(spec)
    if a is None or b is None:
        f.note = "not measured: a run or evaluation it needs is missing"
        return f
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    f.interval = paired_bootstrap(a, b)
    f.seeds_a = [float(v) for v in a.mean(axis=1)]
    f.seeds_b = [float(v) for v in b.mean(axis=1)]
    f.errors = (float(np.mean(f.seeds_a)), float(np.mean(f.seeds_b)))
    f.verdict = (no_gain_verdict if spec.no_gain else better_verdict)(f.interval)
    if a.shape[0] < min_seeds:
        f.verdict = UNSURE
        f.note = (f"{a.shape[0]} seed(s): a verdict needs at least {min_seeds} a side "
                  f"(--seeds), since one seed's training noise can decide it")
    return f


def require_learnt(f: Finding, classes: int, margin: float = LEARNT_MARGIN) -> Finding:
    """Nothing can be read from two nets that are both still near chance: their
    differences are noise around the plateau, and a bootstrap interval that happens to
    exclude 0 would say "holds" or "does not hold" about nets that have not learnt. Such a
    finding is inconclusive, with the errors in its note. (One side learnt and the other
    at chance is a real result, e.g. the initialisation study.)"""
    if f.errors is None or classes < 2:
        return f
    chance = 1.0 - 1.0 / classes
    if min(f.errors) > chance - margin:
        f.verdict = UNSURE
        f.note = ((f.note + "; ") if f.note else "") + (
            f"both sides are near chance ({100 * f.errors[0]:.1f}% and "
            f"{100 * f.errors[1]:.1f}% top-1 error, chance {100 * chance:.1f}%): the nets "
            f"have not learnt enough to compare")
    return f


def _deepest(sc: StudyScale) -> str:
    return ([k for k in ("E", "D", "C", "B") if k in sc.archs][:1] or ["E"])[0]


def finding_specs(plan: StudyPlan) -> list[FindingSpec]:
    """Every finding of the plan's tables with its two sides, before anything is run."""
    sc = plan.scale
    out: list[FindingSpec] = []
    fx = {a: f"{a} S={sc.s}" for a in sc.archs}
    chain = sc.chain_archs
    jt = {a: jitter_arms(a, sc) for a in chain}

    def one(label: str, *runs: str) -> Side:
        return Side(label, tuple(runs))

    if "table3" in plan.tables:
        out.append(FindingSpec(
            "lrn", "table3", "LRN does not help (A-LRN is no better than A; no batch norm, "
            "as the paper's nets)", "A 29.6 / A-LRN 29.7 top-1",
            f"gain err(A) - err(A-LRN), both without batch norm, from "
            f"{sc.lrn_init_label}; equivalence margin {100 * EQUIVALENCE:.0f} points",
            one("A", lrn_a(sc)), one("A-LRN", lrn_a(sc, "A-LRN")), no_gain=True,
            reason="the nets without batch norm learn slowly at this size, so a few epochs "
                   "may leave both near the plateau where a normalisation matters most"))
        if "A" in sc.archs and "A-LRN" in sc.archs:
            out.append(FindingSpec(
                "lrn-bn", "table3", "LRN does not help, on nets with batch norm",
                "A 29.6 / A-LRN 29.7 top-1 (without batch norm)",
                f"gain err(A-BN) - err(A-LRN-BN); equivalence margin "
                f"{100 * EQUIVALENCE:.0f} points",
                one("A-BN", fx["A"]), one("A-LRN-BN", fx["A-LRN"]), no_gain=True,
                reason="with batch norm after every conv a local response normalisation "
                       "has little left to normalise",
                label="not the paper's comparison: the paper's nets have no batch norm"))
        if "A" in sc.archs:
            deep = _deepest(sc)
            layers = {"B": 13, "C": 16, "D": 16, "E": 19}[deep]
            out.append(FindingSpec(
                "depth", "table3", f"error falls with depth ({deep}, {layers} layers, beats "
                                   f"A, 11 layers)",
                "A 29.6 -> E 27.3 top-1", f"err(A-BN) - err({deep}-BN), fixed S",
                one("A-BN", fx["A"]), one(f"{deep}-BN", fx[deep]),
                reason="at this width and number of epochs the deeper nets are "
                       "under-trained; the shapes need less capacity than ImageNet"))
        if "B" in sc.archs and "C" in sc.archs:
            out.append(FindingSpec(
                "1x1", "table3", "C (extra 1x1 convs) beats B", "B 28.7 -> C 28.1 top-1",
                "err(B-BN) - err(C-BN), fixed S", one("B-BN", fx["B"]), one("C-BN", fx["C"]),
                reason="the paper's own gap is 0.6 points; at this number of validation "
                       "images an interval is several points wide"))
        if "C" in sc.archs and "D" in sc.archs:
            out.append(FindingSpec(
                "3x3", "table3", "D (3x3 in place of C's 1x1) beats C",
                "C 28.1 -> D 27.0 top-1", "err(C-BN) - err(D-BN), fixed S",
                one("C-BN", fx["C"]), one("D-BN", fx["D"]),
                reason="spatial context matters less for shapes this small in crops this "
                       "small"))
        if chain:
            nets = ", ".join(chain)
            jit = Side("jittered", tuple(jt[a]["jittered"] for a in chain))
            budget = (f"every arm {sc.epochs} epochs from scratch at S={sc.s} + "
                      f"{sc.finetune_epochs} fine-tuning")
            for ref, s_ref, paper in (("256", sc.s, "D 27.0 (S=256) -> 25.6 ([256;512])"),
                                      ("384", sc.s_large, "D 26.8 (S=384) -> 25.6")):
                out.append(FindingSpec(
                    f"jitter-{ref}", "table3",
                    f"scale jittering in training beats fixed S={ref} ({s_ref} here) at one "
                    f"test scale ({nets} pooled, equal training)", f"{paper} top-1",
                    f"err(S={s_ref}) - err([{sc.s};{sc.s_max}]), mean over {nets}, single "
                    f"test scale; {budget}",
                    Side(f"S={s_ref}", tuple(jt[a][ref] for a in chain)), jit,
                    reason="the jittered nets meet each scale less often in the same number "
                           "of passes, and the shapes vary in size already"))
    if "table4" in plan.tables and chain:
        nets = ", ".join(chain)
        runs = tuple(jt[a]["jittered"] for a in chain)
        out.append(FindingSpec(
            "multiscale", "table4", f"multi-scale testing helps (jittered {nets} pooled)",
            "D [256;512]: 25.6 at Q=384 -> 24.8 at Q={256,384,512} top-1",
            f"err(one Q) - err(three Q), dense, mean over {nets}",
            Side("one Q", runs), Side("three Q", runs, multi=True),
            reason="at these small sides the three test scales differ by few pixels, so "
                   "their posteriors are nearly the same"))
    de = tuple(jitter_arms(a, sc)["jittered"] for a in ("D", "E") if a in chain)
    if "table5" in plan.tables and de:
        out.append(FindingSpec(
            "complementary", "table5", "dense and multi-crop are complementary (their "
                                       "combination beats the better of the two; D, E pooled)",
            "D: dense 24.8, multi-crop 24.6, both 24.4 top-1",
            "err(better of dense, multi-crop) - err(both), three test scales",
            Side("better single", de, "best", True), Side("both", de, "both", True),
            reason=f"a {sc.crop}-pixel crop of a {sc.s}-{sc.s_max} pixel image leaves little "
                   f"for the zero-padded crops and the dense pass to see differently"))
    if "table6" in plan.tables and len(de) == 2:
        out.append(FindingSpec(
            "fusion", "table6", "fusing two nets (D and E, jittered) beats the better one",
            "D or E 24.4 -> D & E 23.7 top-1",
            "err(better single net) - err(fusion), multi-crop & dense, three scales",
            Side("better net", de, "both", True, "best"), Side("D & E", de, "fusion", True),
            reason="two nets trained the same way on the same small set make mostly the "
                   "same mistakes"))
    if "init" in plan.tables:
        for arch in sc.init_archs:
            g = no_bn(arch, sc)
            for how, fid, claim in (("from A", "init-A", "pre-initialising from A"),
                                    ("Glorot", "init-glorot", "Glorot initialisation")):
                out.append(FindingSpec(
                    f"{fid}-{arch}", "init",
                    f"{arch} without batch norm trains better with {claim} than from "
                    f"{sc.paper_init_label}",
                    "Sect. 3.1: deep nets stall with N(0, 0.01); pre-init from A, or Glorot, "
                    "trains them", f"err({sc.paper_init_label}) - err({how}), fixed S",
                    Side(sc.paper_init_label, (g,)), Side(how, (no_bn(arch, sc, how),)),
                    reason="in few epochs net A itself may not have left the plateau, so "
                           "there is little to copy" if how == "from A" else
                           "the N(0, 0.01) net may also still be at chance, or both are"))
    return out


def findings(res: StudyResults) -> list[Finding]:
    """Every finding of the chosen tables, decided from the saved posteriors."""
    out: list[Finding] = []
    for spec in finding_specs(res.plan):
        a, b = res.side(spec.a), res.side(spec.b)
        f = decide(spec, a, b)
        div = [n for side in (spec.a, spec.b) for base in side.runs
               for n in res.diverged(base)]
        if div:
            f.note = (f.note + "; " if f.note else "") + \
                f"diverged: {', '.join(div)} (evaluated at its last good checkpoint)"
        out.append(require_learnt(f, res.plan.scale.classes))
    return out


def _kind(base: str, sc: StudyScale) -> tuple[str, str]:
    """(config, kind) of a Table 3 row: kind "S", "L", "J" as the paper's; "S+" the
    fixed-S arm at the jittered nets' budget; config "A-BN" for nets with batch norm,
    "A" without."""
    cfg, _, tail = base.partition(" ")
    kinds = {f"S={sc.s}": "S", f"S={sc.s_large}": "L", f"S=[{sc.s};{sc.s_max}]": "J",
             f"S={sc.s} +ft": "S+"}
    if "-noBN" in cfg:
        return cfg.replace("-noBN", ""), "S"
    return f"{cfg}-BN", kinds.get(tail, "S")


def table_rows(res: StudyResults, table: str) -> list[dict[str, Any]]:
    """One table in the paper's layout: the paper's settings and errors beside ours, and
    each net's training epochs counted from scratch."""
    sc = res.plan.scale
    rows: list[dict[str, Any]] = []
    for base in table_runs(table, sc):
        spec = res.plan.run(base)
        cfg, kind = _kind(base, sc)
        paper_cfg = cfg.removesuffix("-BN")
        epochs = "+".join(str(r.epochs) for r in res.plan.chain(base))
        label = (f"{spec.scale_label} (jittered's budget)" if kind == "S+"
                 else spec.scale_label)
        pk = kind.rstrip("+")
        if table == "table3":
            m = res.eval_of(base, "dense", False)
            paper = PAPER_T3.get((paper_cfg, pk)) if kind in ("S", "L", "J") else None
            rows.append(_row(cfg, PAPER_SCALES[pk], paper, label, str(single_q(spec)), m,
                             "dense", epochs))
        elif table == "table4":
            if kind == "S":
                continue
            m = res.eval_of(base, "dense", True)
            qs = ",".join(map(str, multi_q(spec, sc.crop)))
            rows.append(_row(cfg, PAPER_SCALES_MULTI[pk], PAPER_T4.get((paper_cfg, pk)),
                             label, qs, m, "dense", epochs))
        elif table == "table5":
            qs = ",".join(map(str, multi_q(spec, sc.crop)))
            for method in ("dense", "multicrop", "both"):
                m = res.eval_of(base, method, True)
                rows.append(_row(cfg, PAPER_SCALES_MULTI["J"],
                                 PAPER_T5.get((paper_cfg, method)), label, qs, m,
                                 METHOD_TEXT[method], epochs))
        elif table == "table6":
            m = res.eval_of(base, "both", True)
            rows.append(_row(cfg, PAPER_SCALES_MULTI["J"], PAPER_T5.get((paper_cfg, "both")),
                             label, ",".join(map(str, multi_q(spec, sc.crop))),
                             m, METHOD_TEXT["both"], epochs))
        else:  # init
            m = res.eval_of(base, "dense", False)
            rows.append(_row(base.replace(f" S={sc.s}", ""), ("256", "256"), None,
                             label, str(single_q(spec)), m, "dense", epochs))
    if table == "table6":
        bases = table_runs(table, sc)
        m = res.fusion(bases)
        spec = res.plan.run(bases[0])
        rows.append(_row("D-BN & E-BN", PAPER_SCALES_MULTI["J"], PAPER_T6, spec.scale_label,
                         ",".join(map(str, multi_q(spec, sc.crop))), m,
                         "fusion, multi-crop & dense",
                         "+".join(str(r.epochs) for r in res.plan.chain(bases[0]))))
    return rows


def _row(cfg: str, paper_scales: tuple[str, str], paper: tuple[float, float] | None,
         s: str, q: str, m: Measured | None, method: str, epochs: str) -> dict[str, Any]:
    return {"config": cfg, "method": method,
            "paper_S": paper_scales[0], "paper_Q": paper_scales[1],
            "paper_top1": f"{paper[0]:.1f}" if paper else "-",
            "paper_top5": f"{paper[1]:.1f}" if paper else "-",
            "S": s, "Q": q, "epochs": epochs,
            "top1": m.cell(1) if m else "not run", "top5": m.cell(5) if m else "not run",
            "top1_value": m.top1 if m else None}


def describe_plan(plan: StudyPlan, images_per_pass: int) -> dict[str, Any]:
    """The plan as data (``vgg study --plan --json``): every run with its budget, every
    finding with the runs on each side (over the seeds)."""
    runs = []
    for r in plan.runs:
        runs.append({"name": r.name, "arch": r.arch, "batch_norm": r.batch_norm,
                     "init": r.init, "seed": r.seed, "scale": list(r.scale),
                     "epochs": r.epochs, "image_passes": r.epochs * images_per_pass,
                     "total_epochs": plan.total_epochs(r.name),
                     "total_image_passes": plan.total_epochs(r.name) * images_per_pass,
                     "lr": r.lr, "parent": r.parent, "mode": r.mode,
                     "tables": list(r.tables)})
    found = []
    for f in finding_specs(plan):
        found.append({
            "name": f.id, "table": f.table, "claim": f.claim, "label": f.label,
            "compared": f.compared, "verdict_rule": "does not help" if f.no_gain else "beats",
            "sides": {k: [seeded(b, s) for s in range(plan.seeds) for b in side.runs]
                      for k, side in (("a", f.a), ("b", f.b))},
            "side_labels": {"a": f.a.label, "b": f.b.label},
            "evaluation": {"a": f.a.text(), "b": f.b.text()}})
    return {"seeds": plan.seeds, "tables": list(plan.tables),
            "scale": plan.scale.to_dict(), "images_per_pass": images_per_pass,
            "min_seeds_for_a_verdict": MIN_SEEDS,
            "total_image_passes": sum(r["image_passes"] for r in runs),
            "runs": runs, "findings": found}
