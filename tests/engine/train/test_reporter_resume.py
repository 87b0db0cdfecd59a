"""A training killed mid-run and resumed continues its MLflow run (the checkpoint names it),
and its curve is one line: the steps replayed after the checkpoint are not logged twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import mlflow

from tests._bins_fixture import child_env, sample_bins, write_plan  # noqa: F401
from finegpt_pipeline.train import checkpoint


def _last_step(log) -> int:
    try:
        lines = log.read_text().splitlines()
        return max((json.loads(line)["step"] for line in lines if line.endswith("}")), default=-1)
    except FileNotFoundError:
        return -1


def test_sigkill_then_resume_continues_one_mlflow_run_without_repeated_steps(
        sample_bins, tmp_path, finegpt_home):
    max_iters = 16
    plan = write_plan(tmp_path / "plan.json", n_embd=16, block_size=16, micro_batch=2,
                      max_iters=max_iters, lr_decay_iters=max_iters, checkpoint_interval=4,
                      eval_interval=4, eval_iters=1)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "finegpt_pipeline.train", "--bins", str(sample_bins),
           "--plan", str(plan), "--out", str(out)]
    uri = f"sqlite:///{finegpt_home / 'mlflow.db'}"
    env = {**child_env(threads=1), "MLFLOW_TRACKING_URI": uri, "FINEGPT_HOME": str(finegpt_home)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 150
    # kill between checkpoints (every 4 steps), once steps after one reached MLflow
    while not ((step := _last_step(out / "train_log.jsonl")) >= 6 and step % 4 == 2):
        assert proc.poll() is None, "the trainer ended before it was killed"
        assert time.monotonic() < deadline, "no step 6 within 150 s"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    ckpt = checkpoint.load(out / "ckpt.pt")
    run_id, killed_at = checkpoint.mlflow_run_id(ckpt), ckpt["iter_num"]
    assert run_id and 0 < killed_at < max_iters
    client = mlflow.MlflowClient(uri)
    logged = max(m.step for m in client.get_metric_history(run_id, "train_loss"))
    assert logged > killed_at, (logged, killed_at)  # the resume replays steps MLflow holds

    # the id travels in the checkpoint: the run directory's file is not needed
    (out / "mlflow_run_id").unlink()
    resumed = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True,
                             timeout=150)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mlflow_run_id"] == run_id and summary["resumed_from"] == killed_at
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 1
    for key, steps in (("train_loss", range(1, max_iters + 1)),
                       ("val_loss", range(0, max_iters + 1, 4))):
        history = sorted(m.step for m in client.get_metric_history(run_id, key))
        assert history == list(steps), key  # each step once: one line
    # the run directory's log agrees: each training step once, in order
    logged_steps = [json.loads(line)["step"] for line in
                    (out / "train_log.jsonl").read_text().splitlines()
                    if "train_loss" in json.loads(line)]
    assert logged_steps == list(range(1, max_iters + 1))
    # it ends with a line that says what it wrote, and the plot is beside the checkpoint
    assert resumed.stdout.strip().splitlines()[-1].startswith(f"train: {max_iters} steps")
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "mlflow.parentRunId" not in run.data.tags  # by hand, no Dagster: a top-level run
