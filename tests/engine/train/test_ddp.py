"""Two-process DDP on gloo: same entry point and plan under torchrun, rank 0 alone logs and
checkpoints, and the two ranks share the plan's grad_accum, so each step sees the same data and
gives the same loss as one process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests._bins_fixture import child_env, sample_bins, write_plan  # noqa: F401
from finegpt_pipeline.train import checkpoint


def _history(out):
    return {int(r["iter"]): r for r in json.loads((out / "summary.json").read_text())["history"]}


def test_two_process_ddp_matches_single_process(sample_bins, tmp_path):
    common = dict(max_iters=3, lr_decay_iters=3, warmup_iters=1, eval_interval=3,
                  checkpoint_interval=3, log_interval=1, device="cpu")
    # one plan: one process runs both micro-batches of a step, two ranks one each
    plan = write_plan(tmp_path / "plan.json", grad_accum=2, **common)
    module = ["-m", "finegpt_pipeline.train", "--bins", str(sample_bins), "--no-mlflow"]
    env = child_env(threads=1)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"  # the DDP run tracks: rank 0 alone logs
    ddp = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         *module[:-1], "--plan", str(plan), "--out", str(tmp_path / "ddp")],
        env={**env, "MLFLOW_TRACKING_URI": store, "FINEGPT_HOME": str(tmp_path / "home")},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    single = subprocess.run([sys.executable, *module, "--plan", str(plan), "--out",
                             str(tmp_path / "single")],
                            env=env, capture_output=True, text=True, timeout=180)
    ddp_out, _ = ddp.communicate(timeout=180)
    assert single.returncode == 0, single.stdout + single.stderr
    assert ddp.returncode == 0, ddp_out

    ddp_hist, single_hist = _history(tmp_path / "ddp"), _history(tmp_path / "single")
    assert ddp_hist[1]["train_loss"] == pytest.approx(single_hist[1]["train_loss"], abs=1e-5)
    # averaged gradients match too, so the curves stay together
    assert ddp_hist[3]["train_loss"] == pytest.approx(single_hist[3]["train_loss"], abs=1e-4)
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["tokens_seen"] == 3 * 2 * 4 * 32
    # rank 0 alone reports: one log line per step, not one per rank
    assert ddp_out.count("iter 2: loss") == 1
    ckpt = checkpoint.load(tmp_path / "ddp" / "ckpt.pt")
    assert ckpt["iter_num"] == 3
    # one MLflow run, each step logged once (rank 1 never talks to MLflow)
    import mlflow

    client = mlflow.MlflowClient(store)
    [run] = client.search_runs([client.get_experiment_by_name("finegpt").experiment_id])
    assert run.info.run_id == summary["mlflow_run_id"] == checkpoint.mlflow_run_id(ckpt)
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train_loss")) == [1, 2, 3]
    assert not [n for n in ckpt["model"] if n.startswith(("module.", "_orig_mod."))]

    # the DDP run continues on one process: same plan, so same tokens per step and data order
    resumed = subprocess.run([sys.executable, *module, "--plan", str(plan), "--out",
                              str(tmp_path / "ddp"), "--resume", "--max-iters", "4"],
                             env=env, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed on 1 processes (checkpoint: 2); same tokens per step" in resumed.stdout
    assert json.loads((tmp_path / "ddp" / "summary.json").read_text())["tokens_seen"] == 4 * 2 * 4 * 32
