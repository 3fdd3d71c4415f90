"""Tables in the paper's layout (Tables 3-7): ConvNet config, train scale S, test scale Q,
method, top-1 and top-5 val error (%), as plain text or Markdown."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

COLUMNS = ("config", "train_scale", "test_scale", "method", "top1_err", "top5_err")
HEADERS = ("ConvNet config.", "train (S)", "test (Q)", "method", "top-1 val. error (%)",
           "top-5 val. error (%)")


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
                    str(d["method"]), _pct(d["top1_err"]), _pct(d["top5_err"])])
    return out


def paper_table(rows: Sequence[Mapping[str, Any] | Any], fmt: str = "text") -> str:
    """``rows``: dicts with keys config, train_scale, test_scale, method, top1_err,
    top5_err (errors as fractions) or ``EvalResult`` objects. ``fmt``: "text" (aligned
    columns) or "markdown"."""
    cells = _cells(rows)
    if fmt == "markdown":
        lines = ["| " + " | ".join(HEADERS) + " |",
                 "|" + "|".join(["---"] * 4 + ["---:"] * 2) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines)
    if fmt != "text":
        raise ValueError(f"fmt must be 'text' or 'markdown', got {fmt!r}")
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(HEADERS)]

    def line(vals: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if i >= 4 else v.ljust(w)
                         for i, (v, w) in enumerate(zip(vals, widths))).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(HEADERS), sep] + [line(c) for c in cells])
