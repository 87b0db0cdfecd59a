"""The project's MLflow experiment is a model-training one, so MLflow's UI opens its runs table
rather than its GenAI views."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import mlflow
import pytest

from finegpt_pipeline.tracking import store as mlflow_store


def test_experiment_is_marked_as_model_training(finegpt_home):
    mlflow_store.configure()
    experiment = mlflow.get_experiment_by_name(mlflow_store.EXPERIMENT)
    assert experiment.tags[mlflow_store.EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_an_experiment_made_without_the_tag_gets_it(finegpt_home):
    mlflow.set_tracking_uri(f"sqlite:///{finegpt_home / 'mlflow.db'}")
    mlflow.create_experiment(mlflow_store.EXPERIMENT)
    mlflow_store.configure()
    experiment = mlflow.get_experiment_by_name(mlflow_store.EXPERIMENT)
    assert experiment.tags[mlflow_store.EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_run_links_open_the_model_training_views(finegpt_home):
    mlflow_store.configure()
    with mlflow.start_run() as run:
        url = mlflow_store.run_url(run.info.run_id)
    exp = run.info.experiment_id
    assert url == (f"http://127.0.0.1:5000/#/experiments/{exp}/runs/{run.info.run_id}"
                   "?workflowType=machine_learning")


def test_a_checkpoint_artifact_is_a_hard_link_or_else_a_copy(finegpt_home, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"weights")
    client = mlflow.MlflowClient(mlflow_store.configure(finegpt_home))
    run = client.create_run(client.get_experiment_by_name(mlflow_store.EXPERIMENT).experiment_id)
    assert mlflow_store.log_artifact_once(client, run.info.run_id, ckpt) == "linked"
    stored = mlflow_store.local_artifact_dir(run.info.artifact_uri) / "ckpt.pt"
    assert os.stat(stored).st_ino == os.stat(ckpt).st_ino
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["ckpt.pt"]
    # another filesystem (tmpfs): a copy, mode 0644
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem here")
    other = client.create_experiment("elsewhere", artifact_location=str(shm / tmp_path.name))
    run2 = client.create_run(other)
    try:
        assert mlflow_store.log_artifact_once(client, run2.info.run_id, ckpt) == "copied"
        copy = mlflow_store.local_artifact_dir(run2.info.artifact_uri) / "ckpt.pt"
        assert copy.read_bytes() == b"weights" and oct(copy.stat().st_mode & 0o777) == "0o644"
    finally:
        shutil.rmtree(shm / tmp_path.name, ignore_errors=True)
