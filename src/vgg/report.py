"""Tables in the paper's layout, as plain text or Markdown: Tables 3-7 (ConvNet config,
train scale S, test scale Q, method, top-1 and top-5 val error) and Tables 8-10
(localisation error)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

COLUMNS = ("config", "train_scale", "test_scale", "method", "dense_stride", "precision",
           "top1_err", "top5_err")
HEADERS = ("ConvNet config.", "train (S)", "test (Q)", "method", "dense stride", "precision",
           "top-1 val. error (%)", "top-5 val. error (%)")


def _row(r: Mapping[str, Any] | Any) -> dict[str, Any]:
    if not isinstance(r, Mapping):
        r = r.table_row()  # an EvalResult
    return {c: r.get(c, "") for c in COLUMNS}


def _pct(v: Any) -> str:
    if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100.0 * float(v):.1f}"


def _cells(rows: Sequence[Mapping[str, Any] | Any]) -> list[list[str]]:
    out = []
    for r in rows:
        d = _row(r)
        out.append([str(d["config"]), str(d["train_scale"]), str(d["test_scale"]),
                    str(d["method"]), _or_dash(d["dense_stride"]), _or_dash(d["precision"]),
                    _pct(d["top1_err"]), _pct(d["top5_err"])])
    return out


def _or_dash(v: Any) -> str:
    return "-" if v is None or v == "" else str(v)


def format_table(headers: Sequence[str], cells: list[list[str]], right_from: int,
                 fmt: str = "text") -> str:
    """Aligned text (columns from ``right_from`` on right-aligned) or a Markdown table."""
    if fmt == "markdown":
        lines = ["| " + " | ".join(headers) + " |",
                 "|" + "|".join(["---"] * right_from
                                + ["---:"] * (len(headers) - right_from)) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines)
    if fmt != "text":
        raise ValueError(f"fmt must be 'text' or 'markdown', got {fmt!r}")
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(headers)]

    def line(vals: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if i >= right_from else v.ljust(w)
                         for i, (v, w) in enumerate(zip(vals, widths))).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep] + [line(c) for c in cells])


def paper_table(rows: Sequence[Mapping[str, Any] | Any], fmt: str = "text") -> str:
    """``rows``: dicts with keys config, train_scale, test_scale, method, dense_stride (the
    output stride of the dense part, SPEC 6b; "-" for multi-crop and centre rows), precision
    (of the networks; "-" when absent, e.g. the paper's own numbers), top1_err, top5_err
    (errors as fractions) or ``EvalResult`` objects. ``fmt``: "text" (aligned columns) or
    "markdown"."""
    return format_table(HEADERS, _cells(rows), 6, fmt)


LOC_COLUMNS = ("config", "head", "tuned", "train_scale", "test_scale", "dense_stride",
               "protocol", "classes", "precision", "top1_err", "top5_err", "whole_top1_err",
               "whole_top5_err", "mean_top1_err", "mean_top5_err")
LOC_HEADERS = ("ConvNet config.", "regr.", "fine-tuned", "train (S)", "test (Q)", "stride",
               "protocol", "classes", "precision", "top-1 loc. err (%)", "top-5 loc. err (%)",
               "whole image top-1/top-5", "mean box top-1/top-5")


def loc_table(rows: Sequence[Mapping[str, Any] | Any], fmt: str = "text") -> str:
    """Tables 8-10's layout for localisation results (``LocResult`` objects or dicts with
    ``LOC_COLUMNS``): config, SCR/PCR, tuned layers, S, Q, the dense stride, protocol, the
    full protocol's class choice (per-scale or image), the networks' precision, top-1 /
    top-5 localisation error, and the two baselines on the same images (the whole image
    as the box; the mean training box at the centre). The simple protocol makes one guess
    (for the ground-truth class) on a central crop (no stride): its error fills the top-1
    column."""
    cells = []
    for r in rows:
        d = r if isinstance(r, Mapping) else r.table_row()
        cells.append([str(d["config"]), str(d["head"]), str(d["tuned"]),
                      str(d["train_scale"]), str(d["test_scale"]),
                      str(d.get("dense_stride") or "-"), str(d["protocol"]),
                      str(d.get("classes") or "-"),
                      str(d.get("precision") or "-"), _pct(d["top1_err"]),
                      _pct(d.get("top5_err")),
                      f"{_pct(d['whole_top1_err'])} / {_pct(d.get('whole_top5_err'))}",
                      f"{_pct(d['mean_top1_err'])} / {_pct(d.get('mean_top5_err'))}"])
    return format_table(LOC_HEADERS, cells, 9, fmt)
