"""The study's numbers read back from its run folders: per-image errors of every saved
evaluation (averaged over seeds), the rows of the paper's tables, and the findings with
their verdicts."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import VggError
from ..eval.metrics import mean_std, topk_wrong
from .plan import EvalSpec, StudyPlan, multi_q, seeded, single_q, table_runs
from .runs import read_done
from .verdict import (
    EQUIVALENCE,
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


@dataclass
class Measured:
    """One evaluation of one setting over the seeds: mean per-image top-1 and top-5
    errors (fractions of the seeds that got each image wrong) and each seed's errors."""

    wrong1: np.ndarray
    wrong5: np.ndarray
    seed_top1: list[float]
    seed_top5: list[float]

    @property
    def top1(self) -> float:
        return float(np.mean(self.seed_top1))

    @property
    def top5(self) -> float:
        return float(np.mean(self.seed_top5))

    def cell(self, which: int = 1) -> str:
        """Mean ± std over the seeds (``metrics.mean_std``: the sample std, as transfer's
        splits)."""
        mean, std = mean_std(self.seed_top1 if which == 1 else self.seed_top5, "seed")
        return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


def _wrong(post: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: 1.0 where the top-1 (top-5) guess is wrong."""
    return (topk_wrong(post, labels, 1).astype(np.float64),
            topk_wrong(post, labels, 5).astype(np.float64))


@dataclass
class Finding:
    """One of the paper's findings and what this study measured for it."""

    id: str
    table: str
    claim: str
    paper: str
    compared: str = ""
    verdict: str = UNSURE
    interval: Interval | None = None
    note: str = ""
    reason: str = ""  # why it may not hold at this scale (shown when it does not hold)
    errors: tuple[float, float] | None = None  # top-1 error of the worse, better side


@dataclass
class StudyResults:
    plan: StudyPlan
    folders: dict[str, Path]          # run name -> run folder
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # done.json per run
    _cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray] | None] = field(
        default_factory=dict)

    @classmethod
    def load(cls, plan: StudyPlan, folders: dict[str, Path]) -> StudyResults:
        res = cls(plan, folders)
        for name, folder in folders.items():
            rec = read_done(folder)
            if rec is not None:
                res.records[name] = rec
        return res

    # -- raw posteriors ---------------------------------------------------------------

    def _post(self, run: str, file: str) -> tuple[np.ndarray, np.ndarray] | None:
        from ..eval.fusion import Posteriors

        key = (run, file)
        if key not in self._cache:
            path = self.folders[run] / file
            self._cache[key] = None
            if path.is_file():
                try:
                    p = Posteriors.load(path)
                    self._cache[key] = (p.posteriors.astype(np.float64), p.labels)
                except VggError as e:
                    log.warning("ignoring %s: %s", path, e)
        return self._cache[key]

    def measure(self, base: str, file_of: Callable[[str], list[str]]) -> Measured | None:
        """``base`` over the seeds; ``file_of(run)`` names the files whose posteriors are
        averaged (one file, or two nets' for a fusion). None when any is missing."""
        w1, w5, t1, t5 = [], [], [], []
        for s in range(self.plan.seeds):
            parts = []
            for f in file_of(seeded(base, s)):
                run, file = f.split("::")
                got = self._post(run, file)
                if got is None:
                    return None
                parts.append(got)
            post = np.mean([p for p, _ in parts], axis=0)  # Sect. 4.4 fusion: mean posterior
            labels = parts[0][1]
            a, b = _wrong(post, labels)
            w1.append(a)
            w5.append(b)
            t1.append(float(a.mean()))
            t5.append(float(b.mean()))
        return Measured(np.mean(w1, 0), np.mean(w5, 0), t1, t5)

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

    def diverged(self, base: str) -> list[str]:
        return [n for n in self.plan.names(base)
                if (self.records.get(n) or {}).get("diverged")]


def _seed_of(run: str) -> int:
    tail = run.rsplit(" seed", 1)
    return int(tail[1]) if len(tail) == 2 and tail[1].isdigit() else 0


def _mean_of(ms: list[Measured | None]) -> np.ndarray | None:
    if any(m is None for m in ms) or not ms:
        return None
    return np.mean([m.wrong1 for m in ms], axis=0)  # type: ignore[union-attr]


def _decide(f: Finding, worse: np.ndarray | None, better: np.ndarray | None,
            no_gain: bool = False) -> Finding:
    if worse is None or better is None:
        f.verdict = UNSURE
        f.note = "not measured: a run or evaluation it needs is missing"
        return f
    f.interval = paired_bootstrap(worse, better)
    f.errors = (float(np.mean(worse)), float(np.mean(better)))
    f.verdict = (no_gain_verdict if no_gain else better_verdict)(f.interval)
    return f


# A side "has learnt" when its top-1 error is at least this far below chance.
LEARNT_MARGIN = 0.10


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


def findings(res: StudyResults) -> list[Finding]:
    """Every finding of the chosen tables, decided from the saved posteriors."""
    sc = res.plan.scale
    tables = res.plan.tables
    out: list[Finding] = []
    fx = {a: f"{a} S={sc.s}" for a in ("A", "A-LRN", "B", "C", "D", "E")}
    jt = {a: f"{a} S=[{sc.s};{sc.s_max}]" for a in ("C", "D", "E")}

    def one(base: str) -> Measured | None:
        return res.eval_of(base, "dense", multi=False)

    if "table3" in tables:
        a, lrn = one(fx["A"]), one(fx["A-LRN"])
        out.append(_decide(Finding(
            "lrn", "table3", "LRN does not help (A-LRN is no better than A)",
            "A 29.6 / A-LRN 29.7 top-1", f"gain err(A) - err(A-LRN), equivalence margin "
            f"{100 * EQUIVALENCE:.0f} points",
            reason="with batch norm after every conv (used here so the nets train in "
                   "minutes), a local response normalisation has little left to normalise"),
            a.wrong1 if a else None, lrn.wrong1 if lrn else None, no_gain=True))
        deep = [k for k in ("E", "D", "C", "B") if k in sc.archs][:1] or ["E"]
        e = one(fx[deep[0]])
        layers = {"B": 13, "C": 16, "D": 16, "E": 19}[deep[0]]
        out.append(_decide(Finding(
            "depth", "table3", f"error falls with depth ({deep[0]}, {layers} layers, beats "
                               f"A, 11 layers)",
            "A 29.6 -> E 27.3 top-1", f"err(A) - err({deep[0]}), fixed S",
            reason="at this width and number of epochs the deeper nets are under-trained; "
                   "the shapes need less capacity than ImageNet"),
            a.wrong1 if a else None, e.wrong1 if e else None))
        b, c, d = one(fx["B"]), one(fx["C"]), one(fx["D"])
        out.append(_decide(Finding(
            "1x1", "table3", "C (extra 1x1 convs) beats B", "B 28.7 -> C 28.1 top-1",
            "err(B) - err(C), fixed S",
            reason="the paper's own gap is 0.6 points; at this number of validation images "
                   "an interval is several points wide"),
            b.wrong1 if b else None, c.wrong1 if c else None))
        out.append(_decide(Finding(
            "3x3", "table3", "D (3x3 in place of C's 1x1) beats C", "C 28.1 -> D 27.0 top-1",
            "err(C) - err(D), fixed S",
            reason="spatial context matters less for shapes this small in crops this small"),
            c.wrong1 if c else None, d.wrong1 if d else None))
        fixed = _mean_of([one(fx[k]) for k in ("C", "D", "E")])
        jit = _mean_of([one(jt[k]) for k in ("C", "D", "E")])
        out.append(_decide(Finding(
            "jitter", "table3", "scale jittering in training beats fixed S at one test "
                                "scale (C, D, E pooled)",
            "D 27.0 (S=256) -> 25.6 ([256;512]) top-1",
            "err(fixed S) - err(jittered), mean over C, D, E, single test scale",
            reason="the jittered nets are fine-tuned for few epochs, and the fixed-S nets "
                   "are tested at their own S while the jittered ones face scales they saw "
                   "less often"),
            fixed, jit))
    if "table4" in tables:
        single = _mean_of([res.eval_of(jt[k], "dense", False) for k in ("C", "D", "E")])
        multi = _mean_of([res.eval_of(jt[k], "dense", True) for k in ("C", "D", "E")])
        out.append(_decide(Finding(
            "multiscale", "table4", "multi-scale testing helps (jittered C, D, E pooled)",
            "D [256;512]: 25.6 at Q=384 -> 24.8 at Q={256,384,512} top-1",
            "err(one Q) - err(three Q), dense, mean over C, D, E",
            reason="at these small sides the three test scales differ by few pixels, so "
                   "their posteriors are nearly the same"),
            single, multi))
    if "table5" in tables:
        worse, better = [], []
        for k in ("D", "E"):
            dn, mc, bo = (res.eval_of(jt[k], m, True) for m in ("dense", "multicrop", "both"))
            if dn is None or mc is None or bo is None:
                worse.append(None)
                continue
            worse.append(dn if dn.top1 <= mc.top1 else mc)
            better.append(bo)
        out.append(_decide(Finding(
            "complementary", "table5", "dense and multi-crop are complementary (their "
                                       "combination beats the better of the two; D, E pooled)",
            "D: dense 24.8, multi-crop 24.6, both 24.4 top-1",
            "err(better of dense, multi-crop) - err(both), three test scales",
            reason=f"a {sc.crop}-pixel crop of a {sc.s}-{sc.s_max} pixel image leaves little "
                   f"for the zero-padded crops and the dense pass to see differently"),
            _mean_of(worse), _mean_of(better) if len(better) == 2 else None))
    if "table6" in tables:
        d, e = (res.eval_of(jt[k], "both", True) for k in ("D", "E"))
        fused = res.fusion([jt["D"], jt["E"]])
        best = None if d is None or e is None else (d if d.top1 <= e.top1 else e)
        out.append(_decide(Finding(
            "fusion", "table6", "fusing two nets (D and E, jittered) beats the better one",
            "D or E 24.4 -> D & E 23.7 top-1",
            "err(better single net) - err(fusion), multi-crop & dense, three scales",
            reason="two nets trained the same way on the same small set make mostly the "
                   "same mistakes"),
            best.wrong1 if best else None, fused.wrong1 if fused else None))
    if "init" in tables:
        for arch in sc.init_archs:
            base = f"{arch}-noBN S={sc.s}"
            g = one(f"{base} N(0,0.01)")
            for how, fid, claim in (("from A", "init-A", "pre-initialising from A"),
                                    ("Glorot", "init-glorot", "Glorot initialisation")):
                other = one(f"{base} {how}")
                f = _decide(Finding(
                    f"{fid}-{arch}", "init",
                    f"{arch} without batch norm trains better with {claim} than from "
                    f"N(0, 0.01)",
                    "Sect. 3.1: deep nets stall with N(0, 0.01); pre-init from A, or Glorot, "
                    "trains them", f"err(N(0,0.01)) - err({how}), fixed S",
                    reason="in few epochs net A itself may not have left the plateau, so "
                           "there is little to copy" if how == "from A" else
                           "the N(0, 0.01) net may also still be at chance, or both are"),
                    g.wrong1 if g else None, other.wrong1 if other else None)
                div = res.diverged(f"{base} N(0,0.01)") + res.diverged(f"{base} {how}")
                if div:
                    f.note = (f.note + "; " if f.note else "") + \
                        f"diverged: {', '.join(div)} (evaluated at its last good checkpoint)"
                out.append(f)
    return [require_learnt(f, sc.classes) for f in out]


def table_rows(res: StudyResults, table: str) -> list[dict[str, Any]]:
    """One table in the paper's layout: the paper's settings and errors beside ours."""
    sc = res.plan.scale
    rows: list[dict[str, Any]] = []
    kinds = {f"S={sc.s}": "S", f"S={sc.s_large}": "L", f"S=[{sc.s};{sc.s_max}]": "J"}
    for base in table_runs(table, sc):
        spec = res.plan.run(base)
        cfg, _, tail = base.partition(" ")
        kind = kinds.get(tail, "S")
        if table == "table3":
            m = res.eval_of(base, "dense", False)
            paper = PAPER_T3.get((cfg, kind))
            rows.append(_row(cfg, PAPER_SCALES[kind], paper, spec.scale_label,
                             str(single_q(spec)), m, "dense"))
        elif table == "table4":
            if kind == "S":
                continue
            m = res.eval_of(base, "dense", True)
            qs = ",".join(map(str, multi_q(spec, sc.crop)))
            rows.append(_row(cfg, PAPER_SCALES_MULTI[kind], PAPER_T4.get((cfg, kind)),
                             spec.scale_label, qs, m, "dense"))
        elif table == "table5":
            qs = ",".join(map(str, multi_q(spec, sc.crop)))
            for method in ("dense", "multicrop", "both"):
                m = res.eval_of(base, method, True)
                label = {"multicrop": "multi-crop", "both": "multi-crop & dense"}.get(
                    method, method)
                rows.append(_row(cfg, PAPER_SCALES_MULTI["J"], PAPER_T5.get((cfg, method)),
                                 spec.scale_label, qs, m, label))
        elif table == "table6":
            m = res.eval_of(base, "both", True)
            rows.append(_row(cfg, PAPER_SCALES_MULTI["J"], PAPER_T5.get((cfg, "both")),
                             spec.scale_label, ",".join(map(str, multi_q(spec, sc.crop))),
                             m, "multi-crop & dense"))
        else:  # init
            m = res.eval_of(base, "dense", False)
            rows.append(_row(base.replace(f" S={sc.s}", ""), ("256", "256"), None,
                             spec.scale_label, str(single_q(spec)), m, "dense"))
    if table == "table6":
        bases = table_runs(table, sc)
        m = res.fusion(bases)
        spec = res.plan.run(bases[0])
        rows.append(_row("D & E", PAPER_SCALES_MULTI["J"], PAPER_T6, spec.scale_label,
                         ",".join(map(str, multi_q(spec, sc.crop))), m,
                         "fusion, multi-crop & dense"))
    return rows


def _row(cfg: str, paper_scales: tuple[str, str], paper: tuple[float, float] | None,
         s: str, q: str, m: Measured | None, method: str) -> dict[str, Any]:
    return {"config": cfg, "method": method,
            "paper_S": paper_scales[0], "paper_Q": paper_scales[1],
            "paper_top1": f"{paper[0]:.1f}" if paper else "-",
            "paper_top5": f"{paper[1]:.1f}" if paper else "-",
            "S": s, "Q": q,
            "top1": m.cell(1) if m else "not run", "top5": m.cell(5) if m else "not run",
            "top1_value": m.top1 if m else None}
