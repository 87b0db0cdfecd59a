"""The GPU benchmarks' harnesses run end to end on CPU (their figures are not asserted: speed
claims live in docs/benchmarks.md). A GPU is lent rarely; a harness that broke unnoticed would
waste it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from _bins_fixture import child_env

REPO = Path(__file__).resolve().parents[1]


def test_train_benchmark_smoke_run(tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "bench/train_gpt2.py", "--smoke", "--steps", "4", "--warmup", "1",
         "--micro-batch", "2", "--grad-accum", "1", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, env=child_env(threads=2), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["finegpt"]["tokens_per_s"] > 0
    assert "finegpt" in proc.stdout and "tokens/s" in proc.stdout


def test_plan_calibration_runs_on_cpu():
    proc = subprocess.run(
        [sys.executable, "bench/plan_calibration.py", "--sizes", "1x32", "--block", "32",
         "--steps", "1", "--micro-batch", "2"],
        cwd=REPO, capture_output=True, text=True, env=child_env(threads=2), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| 1L/32d T=32 | 2 |" in proc.stdout
