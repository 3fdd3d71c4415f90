"""``report.md`` of a study: each chosen table in the paper's layout with the paper's
numbers beside ours, a verdict per finding with its interval, and plots (error vs depth,
fixed vs jittered S, test protocols, training curves of the initialisation study)."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import atomic_write
from .plan import NO_BN_LR, StudyPlan
from .results import Finding, StudyResults, findings, table_rows
from .verdict import BOOTSTRAP, EQUIVALENCE, HOLDS, LEVEL, MIN_SEEDS

TITLES = {
    "table3": "Table 3: single test scale (dense evaluation)",
    "table4": "Table 4: multi-scale testing (dense evaluation)",
    "table5": "Table 5: dense, multi-crop, and both (three test scales)",
    "table6": "Table 6: ConvNet fusion",
    "init": "Sect. 3.1: initialisation of deep nets without batch norm",
}


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = ("| ConvNet | method | paper: train S | paper: test Q | paper: top-1 | "
            "paper: top-5 | ours: train S | ours: epochs | ours: test Q | ours: top-1 | "
            "ours: top-5 |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['method']} | {r['paper_S']} | {r['paper_Q']} | "
                     f"{r['paper_top1']} | {r['paper_top5']} | {r['S']} | {r['epochs']} | "
                     f"{r['Q']} | {r['top1']} | {r['top5']} |")
    return "\n".join(lines)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_depth(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Error vs depth at fixed S (the nets with batch norm): ours and the paper's, on two
    axes."""
    fixed = [r for r in rows if r["paper_S"] == "256" and r["top1_value"] is not None
             and r["config"].endswith("-BN") and r["paper_top1"] != "-"]
    if not fixed:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    xs = range(len(fixed))
    ax.plot(xs, [100 * r["top1_value"] for r in fixed], "o-", label="ours")
    ax.set_ylabel("ours: top-1 val error (%)")
    ax.set_xticks(list(xs), [r["config"] for r in fixed])
    ax2 = ax.twinx()
    ax2.plot(xs, [float(r["paper_top1"]) for r in fixed], "s--", color="grey",
             label="paper (ImageNet)")
    ax2.set_ylabel("paper: top-1 val error (%)")
    fig.legend(loc="upper right")
    ax.set_title("Error vs depth (Table 3, fixed S)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_bars(groups: dict[str, dict[str, float]], path: Path, title: str) -> Path | None:
    """Grouped bars: groups (nets) x series (settings), top-1 error %."""
    series = list(dict.fromkeys(k for g in groups.values() for k in g))
    if not groups or not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    w = 0.8 / len(series)
    for i, s in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * w for j in range(len(groups))]
        ax.bar(xs, [100 * g.get(s, float("nan")) for g in groups.values()], width=w, label=s)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylabel("top-1 val error (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_init(res: StudyResults, path: Path) -> Path | None:
    """Training loss and validation error per epoch of the initialisation study's runs."""
    runs = [n for n in res.records if "noBN" in n]
    if not runs:
        return None
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for n in runs:
        h = res.records[n].get("history") or []
        ep = [r["epoch"] for r in h]
        a1.plot(ep, [r.get("train_loss") for r in h], "o-", label=n, markersize=3)
        a2.plot(ep, [100 * r.get("val_top1_err", float("nan")) for r in h], "o-", label=n,
                markersize=3)
    a1.set_xlabel("epoch")
    a1.set_ylabel("training loss")
    a2.set_xlabel("epoch")
    a2.set_ylabel("top-1 val error (%)")
    a1.set_title("Initialisation study: loss")
    a2.set_title("validation error")
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _verdict_line(f: Finding) -> str:
    mark = {"holds": "holds", "does not hold": "**does not hold**"}.get(
        f.verdict, "*inconclusive at this scale*")
    ci = f" Measured {f.spec.compared}: {f.interval.text()}." if f.interval else ""
    seeds = f" Top-1 error {f.seeds_text()}." if f.seeds_a else ""
    why = (f" Possible reason at this scale: {f.spec.reason}." if f.verdict != HOLDS
           and f.spec.reason else "")
    note = f" ({f.note})" if f.note else ""
    return f"- **{f.claim}** — {mark}.{ci}{seeds} Paper: {f.spec.paper}.{why}{note}"


def stride_text(res: StudyResults) -> str:
    """Which output stride the dense evaluations used, as their saved files record it."""
    strides = res.dense_strides()
    if strides:
        return (f"Dense evaluation at output stride {', '.join(map(str, strides))} pixels "
                f"(read from the saved evaluations; SPEC 6b: about crop / 7, for the "
                f"paper's overlap of neighbouring windows).")
    return ("Dense evaluation: the saved evaluations do not record an output stride (a "
            "vgg.eval without that option applies the net at stride 32).")


def write_report(out: Path, plan: StudyPlan, res: StudyResults, info: dict[str, Any]
                 ) -> tuple[Path, list[Finding]]:
    """Write ``out/report.md`` (and its PNG plots) from the finished runs; returns its
    path and the findings."""
    from .. import __version__

    found = findings(res)
    sc = plan.scale
    dev = info.get("device", "cpu")
    lines = [
        "# vgg study report",
        "",
        f"vgg {__version__}, torch {torch.__version__}, {platform.python_implementation()} "
        f"{platform.python_version()}, device `{dev}`, {plan.seeds} seed(s). "
        f"Command: `{info.get('command', 'vgg study')}`.",
        "",
        "## Findings",
        "",
        f"Each verdict comes from a hierarchical, paired bootstrap ({BOOTSTRAP} "
        f"resamples, {100 * LEVEL:.0f}% interval) of the difference of two top-1 errors: "
        f"each resample draws the seeds with replacement (paired by seed index), then the "
        f"validation images, so the interval holds both the seed-to-seed and the "
        f"image-to-image noise. *holds*: the whole interval favours the paper's claim; "
        f"*does not hold*: it favours the opposite; otherwise *inconclusive at this "
        f"scale*. \"Does not help\" holds when the interval of the gain stays below "
        f"{100 * EQUIVALENCE:.0f} points. A verdict needs at least {MIN_SEEDS} seeds a "
        f"side. Differences are in points of top-1 error, positive in the claim's favour; "
        f"per-seed errors are given as values (mean ± sample std).",
        "",
        *[_verdict_line(f) for f in found],
        "",
        f"Chance level: {100 * (1 - 1 / sc.classes):.1f}% top-1 error ({sc.classes} "
        f"classes); a net near it has not learnt, and no finding can be read from it.",
        "",
        stride_text(res),
        "",
    ]
    rows_by_table = {t: table_rows(res, t) for t in plan.tables}
    for t in plan.tables:
        lines += [f"## {TITLES[t]}", "", markdown_table(rows_by_table[t]), ""]
        if t == "table3":
            p = plot_depth(rows_by_table[t], out / "depth.png")
            groups: dict[str, dict[str, float]] = {}
            for r in rows_by_table[t]:
                if r["config"] in ("C-BN", "D-BN", "E-BN") and r["top1_value"] is not None:
                    groups.setdefault(r["config"], {})[f"S={r['S']}"] = r["top1_value"]
            q = plot_bars(groups, out / "scale.png", "Fixed vs jittered training scale "
                                                     "(one test scale)")
            lines += [f"![error vs depth]({p.name})" if p else "",
                      f"![fixed vs jittered S]({q.name})" if q else "", ""]
        if t == "table5":
            groups = {}
            for r in rows_by_table[t]:
                if r["top1_value"] is not None:
                    groups.setdefault(r["config"], {})[r["method"]] = r["top1_value"]
            p = plot_bars(groups, out / "protocols.png", "Test protocols (Table 5)")
            lines += [f"![test protocols]({p.name})" if p else "", ""]
        if t == "init":
            p = plot_init(res, out / "init.png")
            lines += [f"![initialisation study]({p.name})" if p else "", "",
                      "The paper trains these nets without batch norm from N(0, 0.01) only "
                      "after pre-initialising from net A; Glorot initialisation removes the "
                      f"need. Here they start from {sc.paper_init_label}"
                      + (" (each layer's std times sqrt(full-size fan-in / fan-in), so "
                         "it has the gain of the paper's layer)"
                         if sc.paper_init == "gaussian-scaled" else "")
                      + ", on the paper's input (the training set's mean RGB subtracted "
                      "from 0..255 pixels); \"from A\" copies the first four convs and "
                      f"the three FC layers of the LRN pair's A (from {sc.lrn_init_label}) "
                      "and starts the rest from "
                      f"{sc.paper_init_label}. Pre-initialisation needs an A that has left "
                      f"chance: A's row above ({100 * (1 - 1 / sc.classes):.0f}% is "
                      "chance). Curves that stay at log(classes) stalled.", ""]
    lines += [
        "## Scale of this study",
        "",
        f"Nets: the paper's configurations at conv width x{sc.width:g}, FC {sc.fc_width}, "
        f"crop {sc.crop} (paper 224). Nets marked -BN have batch norm after every conv "
        f"(the paper's have none; it lets every net train from He initialisation in few "
        f"epochs); the LRN pair (A, A-LRN) and the initialisation study have none, as the "
        f"paper's, at lr {NO_BN_LR:g}. The LRN pair starts from {sc.lrn_init_label}"
        + (" (the paper's own alternative: from N(0, 0.01) net A stays at chance at this "
           "scale, measured in docs/study.md)" if sc.lrn_init == "glorot" else "")
        + f"; the initialisation study's deep nets from {sc.paper_init_label}"
        + (" (SPEC 6b: each layer's std is 0.01 x sqrt(full-size fan-in / fan-in), the "
           "per-layer gain of the paper's layer)" if sc.paper_init == "gaussian-scaled"
           else "") + f", from that A, or Glorot. Scales are the paper's times "
        f"{sc.crop}/224: S = 256 -> {sc.s}, 384 -> {sc.s_large}, [256;512] -> "
        f"[{sc.s};{sc.s_max}]; the S = {sc.s_large} nets are fine-tuned from the "
        f"S = {sc.s} nets (lr / 10), as in Sect. 3.1, and so are the jittered nets (the "
        f"paper: from the S = 384 nets), so that the three arms of the jittering "
        f"comparison share one parent.",
        "",
        f"Budgets: {sc.epochs} epochs from scratch, {sc.finetune_epochs} per fine-tuning "
        f"stage, {sc.init_epochs} for the nets without batch norm; batch {sc.batch}, lr "
        f"{sc.lr:g} with batch norm, plateau schedule (patience {sc.patience}); "
        f"{plan.seeds} seed(s) per net. Jittering is compared at equal training: the "
        f"jittered nets ({sc.epochs} epochs at S = {sc.s} + {sc.finetune_epochs} "
        f"jittered) against the S = {sc.s_large} nets ({sc.epochs} + "
        f"{sc.finetune_epochs} at S = {sc.s_large}) and S = {sc.s} nets given the same "
        f"{sc.finetune_epochs}-epoch fine-tuning stage at S = {sc.s}: "
        f"{sc.epochs + sc.finetune_epochs} epochs each, the same learning rates. The "
        f"\"ours: epochs\" column gives each net's epochs from scratch, stage by stage.",
        "",
        f"Data: {info.get('data_text', '')}",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in sc.to_dict().items()],
        "",
        "## Runs",
        "",
        "| run | folder | epochs run | stopped | best val top-1 |",
        "|---|---|---:|---|---:|",
    ]
    for spec in plan.runs:
        rec = res.records.get(spec.name)
        folder = res.folders[spec.name]
        rel = folder.relative_to(out) if folder.is_relative_to(out) else folder
        if rec is None:
            lines.append(f"| {spec.name} | {rel} | - | not run | - |")
            continue
        h = rec.get("history") or []
        errs = [r.get("val_top1_err") for r in h if r.get("val_top1_err") is not None]
        best = f"{100 * min(errs):.1f}" if errs else "-"
        lines.append(f"| {spec.name} | {rel} | {len(h)} | {rec.get('stopped')} | {best} |")
    timings = info.get("timings") or {}
    if timings:
        lines += ["", "## Timings", "", "| step | seconds |", "|---|---:|",
                  *[f"| {k} | {v:.0f} |" for k, v in timings.items()]]
    if info.get("budget_note"):
        lines += ["", info["budget_note"]]
    lines.append("")
    text = "\n".join(lines)
    path = out / "report.md"
    atomic_write(path, lambda f: f.write(text.encode()))
    return path, found
