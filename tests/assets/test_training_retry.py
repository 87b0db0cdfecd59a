"""A trainer killed mid-run (SIGKILL after its first checkpoint): trained_checkpoint's step
fails, Dagster retries it, the retry resumes from the checkpoint into the same MLflow run, and
the run ends with the plan's final step, each step logged once."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import dagster as dg
import mlflow
import torch

from tests._bins_fixture import sample_bins, write_plan  # noqa: F401 (fixture)
from tests._trainers import trainer_pids
from assets.launchers import TrainingLauncher
from assets.resources import FineGPTHome
from assets.training import trained_checkpoint

STEPS, EVERY = 24, 4  # enough steps after the first checkpoint to be killed in


def kill_after_first_checkpoint(runs: Path, killed: list) -> None:
    deadline = time.time() + 240
    while time.time() < deadline and not killed:
        if any(runs.glob("*/ckpt.pt")):
            for pid in trainer_pids(runs):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            return
        time.sleep(0.05)


def test_killed_trainer_is_retried_and_resumes_into_the_same_mlflow_run(sample_bins, finegpt_home,
                                                                         tmp_path):
    plan = json.loads(write_plan(tmp_path / "plan.json", max_iters=STEPS, lr_decay_iters=STEPS,
                                 checkpoint_interval=EVERY, eval_interval=EVERY).read_text())

    @dg.asset(name="training_config")
    def training_config_input() -> dict:
        return plan

    @dg.asset(name="tokenized_bins")
    def tokenized_bins_input() -> dict:
        return {"dir": str(sample_bins)}

    paths = FineGPTHome(root=str(finegpt_home))
    killed: list[int] = []
    killer = threading.Thread(target=kill_after_first_checkpoint,
                              args=(paths.home().trained_runs, killed))
    killer.start()
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([training_config_input, tokenized_bins_input, trained_checkpoint],
                            resources={"finegpt_home": paths,
                                       "training_launcher": TrainingLauncher()},
                            instance=instance)
    killer.join()
    assert killed, "the trainer was never killed: no checkpoint appeared"
    assert result.success
    events = [e.event_type_value for e in result.all_events
              if e.step_key == "trained_checkpoint"]
    assert "STEP_UP_FOR_RETRY" in events and "STEP_RESTARTED" in events
    value = result.output_for_node("trained_checkpoint")
    assert value["steps"] == STEPS
    ckpt = torch.load(value["checkpoint"], map_location="cpu", weights_only=False)
    assert ckpt["iter_num"] == STEPS and ckpt["mlflow_run_id"] == value["mlflow_run_id"]
    client = mlflow.MlflowClient(paths.mlflow_tracking_uri())
    train = client.search_runs([client.get_experiment_by_name("finegpt").experiment_id],
                               "tags.`finegpt.stage` = 'train'")
    assert [r.info.run_id for r in train] == [value["mlflow_run_id"]]  # one run, continued
    steps = sorted(m.step for m in client.get_metric_history(value["mlflow_run_id"], "train_loss"))
    assert steps == list(range(1, STEPS + 1))  # one line: no step twice, none missing
