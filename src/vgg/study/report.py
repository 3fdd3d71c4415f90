"""``report.md`` of a study: each chosen table in the paper's layout with the paper's
numbers beside ours, a verdict per finding with its interval, and plots (error vs depth,
fixed vs jittered S, test protocols, training curves of the initialisation study)."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import atomic_write
from .plan import StudyPlan
from .results import Finding, StudyResults, findings, table_rows
from .verdict import BOOTSTRAP, EQUIVALENCE, HOLDS, LEVEL

TITLES = {
    "table3": "Table 3: single test scale (dense evaluation)",
    "table4": "Table 4: multi-scale testing (dense evaluation)",
    "table5": "Table 5: dense, multi-crop, and both (three test scales)",
    "table6": "Table 6: ConvNet fusion",
    "init": "Sect. 3.1: initialisation of deep nets without batch norm",
}


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = ("| ConvNet | method | paper: train S | paper: test Q | paper: top-1 | "
            "paper: top-5 | ours: train S | ours: test Q | ours: top-1 | ours: top-5 |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['method']} | {r['paper_S']} | {r['paper_Q']} | "
                     f"{r['paper_top1']} | {r['paper_top5']} | {r['S']} | {r['Q']} | "
                     f"{r['top1']} | {r['top5']} |")
    return "\n".join(lines)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_depth(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Error vs depth at fixed S: ours and the paper's, on two axes."""
    fixed = [r for r in rows if r["paper_S"] == "256" and r["top1_value"] is not None]
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
    ci = f" Measured {f.compared}: {f.interval.text()}." if f.interval else ""
    why = (f" Possible reason at this scale: {f.reason}." if f.verdict != HOLDS and f.reason
           else "")
    note = f" ({f.note})" if f.note else ""
    return f"- **{f.claim}** — {mark}.{ci} Paper: {f.paper}.{why}{note}"


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
        f"Each verdict comes from a paired bootstrap ({BOOTSTRAP} resamples of the "
        f"validation images, {100 * LEVEL:.0f}% interval) of the difference of two top-1 "
        f"errors; with several seeds each image's error is first averaged over them. "
        f"*holds*: the whole interval favours the paper's claim; *does not hold*: it "
        f"favours the opposite; otherwise *inconclusive at this scale*. \"Does not help\" "
        f"holds when the interval of the gain stays below {100 * EQUIVALENCE:.0f} points. "
        f"Differences are in points of top-1 error, positive in the claim's favour.",
        "",
        *[_verdict_line(f) for f in found],
        "",
        f"Chance level: {100 * (1 - 1 / sc.classes):.1f}% top-1 error ({sc.classes} "
        f"classes); a net near it has not learnt, and no finding can be read from it.",
        "",
    ]
    rows_by_table = {t: table_rows(res, t) for t in plan.tables}
    for t in plan.tables:
        lines += [f"## {TITLES[t]}", "", markdown_table(rows_by_table[t]), ""]
        if t == "table3":
            p = plot_depth(rows_by_table[t], out / "depth.png")
            groups: dict[str, dict[str, float]] = {}
            for r in rows_by_table[t]:
                if r["config"] in ("C", "D", "E") and r["top1_value"] is not None:
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
                      "need. Curves that stay at log(classes) stalled.", ""]
    lines += [
        "## Scale of this study",
        "",
        f"Nets: the paper's configurations at conv width x{sc.width:g}, FC {sc.fc_width}, "
        f"crop {sc.crop} (paper 224); batch norm after every conv for Tables 3-6 (the "
        f"paper has none; it lets every net train from He initialisation in few epochs), "
        f"none in the initialisation study. Scales are the paper's times {sc.crop}/224: "
        f"S = 256 -> {sc.s}, 384 -> {sc.s_large}, [256;512] -> [{sc.s};{sc.s_max}]; the "
        f"S = {sc.s_large} nets are fine-tuned from the S = {sc.s} nets and the jittered "
        f"nets from the S = {sc.s_large} nets (lr / 10), as in Sect. 3.1. Epochs: "
        f"{sc.epochs} from scratch, {sc.finetune_epochs} fine-tuning, {sc.init_epochs} "
        f"in the initialisation study; batch {sc.batch}, lr {sc.lr:g} (0.01 without batch "
        f"norm), plateau schedule (patience {sc.patience}).",
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
