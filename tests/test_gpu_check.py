"""benchmarks/gpu_check.py's CPU dry run: every row of the GPU check (train steps against
torchvision, bf16 inference, the data pipeline, the demo end to end) runs at tiny sizes
and lands in one table, so the script is known to work before a GPU runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_on_the_cpu(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu",
         "--out", str(tmp_path / "work"), "--json", str(tmp_path / "rows.json")],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "TINY sizes: a test, not a measurement" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| check | setting | images/s |")
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert rows["device"] == "cpu" and rows["tiny"] is True
    checks = [r["check"] + " / " + r["setting"] for r in rows["rows"]]
    assert len(table) == 1 + len(checks)
    steps = [r for r in rows["rows"] if "train step" in r["check"] and r["img_per_s"]]
    assert {r["setting"].split(",")[0] for r in steps} == {
        "vgg TrainStep", "torchvision VGG"}
    assert all(r["img_per_s"] > 0 and r["tflops"] > 0 for r in steps)
    assert steps[0]["vs"].endswith("x")
    infer = [r for r in rows["rows"] if "inference" in r["check"]]
    assert len(infer) == 2 and all(r["img_per_s"] > 0 for r in infer)
    data = [r for r in rows["rows"] if r["check"].startswith("data pipeline")]
    assert len(data) == 2 and all(r["img_per_s"] > 0 for r in data)
    demo = rows["rows"][-1]
    assert demo["check"].startswith("vgg demo --quick")
    assert demo["demo"]["wall_s"] > 0 and 0 <= demo["demo"]["dense3_top1_err"] <= 1
    assert (tmp_path / "work" / "demo" / "report.md").is_file()
