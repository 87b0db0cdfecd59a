"""A tiny model really trained and tracked in MLflow, for the registry and champion tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pytest

from tests._bins_fixture import make_bins, write_plan
from finegpt_pipeline.evaluate import registry
from finegpt_pipeline.train import trainer as train
from finegpt_pipeline.train import plan_file


@pytest.fixture(scope="session")
def trained(tmp_path_factory, sample_shard):
    """A tiny model really trained 6 steps on real documents, tracked in its own MLflow store:
    (tracking URI, the training run's id, ckpt.pt, bins)."""
    root = tmp_path_factory.mktemp("registry")
    bins = make_bins(sample_shard, root / "bins", max_docs=40)
    cfg = plan_file.load_plan(write_plan(root / "plan.json", max_iters=6, lr_decay_iters=6,
                                           eval_interval=6, checkpoint_interval=6))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FINEGPT_HOME", str(root / "home"))
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "60")
        train.train(cfg, bins, root / "run", mlflow=True)
        mlflow.set_tracking_uri(None)  # the trainer pins MLflow's global URI; unpin it
    summary = json.loads((root / "run" / "summary.json").read_text())
    assert summary["mlflow_run_id"]
    return uri, summary["mlflow_run_id"], root / "run" / "ckpt.pt", bins


@pytest.fixture
def store(trained, tmp_path, monkeypatch):
    """A fresh copy of the trained store per test (registrations do not leak between tests);
    the fluent API (`mlflow.pyfunc.load_model`) reads it through MLFLOW_TRACKING_URI."""
    _, run_id, ckpt, _ = trained
    db = Path(trained[0].removeprefix("sqlite:///"))
    shutil.copy(db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv(registry.MODEL_NAME_ENV, raising=False)
    mlflow.set_tracking_uri(None)
    yield uri, run_id, ckpt
    mlflow.set_tracking_uri(None)
