"""The GPU benchmarks' harnesses run end to end on CPU (their figures are not asserted: speed
claims live in docs/benchmarks.md). A GPU is lent rarely; a harness that broke unnoticed would
waste it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests._bins_fixture import child_env

REPO = Path(__file__).resolve().parents[2]


def test_the_prepared_gpu_check_runs_end_to_end_on_cpu(tmp_path):
    """`bench/gpu_check.sh --smoke`: every step of the GPU check (the CUDA-path tests, GPT-2
    training throughput, the planner against measurements, plan --detect) on tiny sizes."""
    out = tmp_path / "check"
    env = {**child_env(threads=2), "PYTHON": sys.executable,
           "FINEGPT_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "dagster")}
    proc = subprocess.run(["bash", "bench/gpu_check.sh", "--smoke", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    summary = (out / "summary.md").read_text()
    assert "all steps passed" in summary and "(smoke, CPU)" in summary
    for step in ("tests", "train_gpt2", "plan_calibration", "plan_detect"):
        assert f"- {step}: rc 0" in summary, step
    result = json.loads((out / "train_gpt2.json").read_text())
    assert result["finegpt"]["tokens_per_s"] > 0
    assert "| 1L/32d T=32 | 2 |" in (out / "plan_calibration.log").read_text()
