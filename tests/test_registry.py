"""The model registry: a trained checkpoint as a registered MLflow model, its aliases, and the
champion loaded through `models:/` generating what the checkpoint generates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pytest
import torch

from _bins_fixture import make_bins, write_plan
from finegpt_pipeline import checkpoint, cli, registry, sample, train
from finegpt_pipeline.config import TrainConfig
from finegpt_pipeline.model import GPT


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sample_shard):
    """A tiny model really trained 6 steps on real documents, tracked in its own MLflow store:
    (tracking URI, the training run's id, ckpt.pt)."""
    root = tmp_path_factory.mktemp("registry")
    bins = make_bins(sample_shard, root / "bins", max_docs=40)
    cfg = TrainConfig.from_json(write_plan(root / "plan.json", max_iters=6, lr_decay_iters=6,
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
    return uri, summary["mlflow_run_id"], root / "run" / "ckpt.pt"


@pytest.fixture
def store(trained, tmp_path, monkeypatch):
    """A fresh copy of the trained store per test (registrations do not leak between tests);
    the fluent API (`mlflow.pytorch.load_model`) reads it through MLFLOW_TRACKING_URI."""
    _, run_id, ckpt = trained
    db = Path(trained[0].removeprefix("sqlite:///"))
    shutil.copy(db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv(registry.MODEL_NAME_ENV, raising=False)
    mlflow.set_tracking_uri(None)
    yield uri, run_id, ckpt
    mlflow.set_tracking_uri(None)


def test_register_candidate_is_idempotent(store, monkeypatch):
    uri, run_id, ckpt = store
    monkeypatch.setenv("FINEGPT_MLFLOW_UI", "http://mlflow.example:5001")
    first = registry.register_candidate(uri, run_id, ckpt)
    assert first["name"] == "finegpt" and first["version"] == 1
    assert first["model_uri"] == "models:/finegpt/1"
    assert first["url"].startswith("http://mlflow.example:5001/#/models/finegpt/versions/1")
    assert first["aliases"] == ["candidate"] and first["run_id"] == run_id
    again = registry.register_candidate(uri, run_id, ckpt)
    assert again["version"] == 1
    client = mlflow.MlflowClient(uri)
    assert len(client.search_model_versions("name = 'finegpt'")) == 1
    # the logged model belongs to the training run, in the training run's experiment
    run = client.get_run(run_id)
    [output] = run.outputs.model_outputs
    logged = client.get_logged_model(output.model_id)
    assert logged.source_run_id == run_id and logged.experiment_id == run.info.experiment_id
    assert client.get_model_version("finegpt", "1").source == logged.model_uri
    assert run.info.status == "FINISHED"  # logging into it did not reopen the run


def test_a_later_step_of_the_same_run_is_a_new_version(store, tmp_path):
    uri, run_id, ckpt = store
    registry.register_candidate(uri, run_id, ckpt)
    later = checkpoint.load(ckpt)
    later["iter_num"] += 1
    torch.save(later, tmp_path / "ckpt.pt")
    second = registry.register_candidate(uri, run_id, tmp_path / "ckpt.pt")
    assert second["version"] == 2 and second["aliases"] == ["candidate"]
    assert registry.version(uri, 1)["aliases"] == []


def test_model_name_from_the_environment(store, monkeypatch):
    uri, run_id, ckpt = store
    monkeypatch.setenv(registry.MODEL_NAME_ENV, "tinygpt")
    info = registry.register_candidate(uri, run_id, ckpt)
    assert info["name"] == "tinygpt" and info["model_uri"] == "models:/tinygpt/1"
    assert registry.promote(uri, 1)["aliases"] == ["candidate", "champion"]
    assert registry.champion(uri)["name"] == "tinygpt"


def test_promote_moves_the_champion_alias(store):
    uri, run_id, ckpt = store
    assert registry.champion(uri) is None  # no registered model at all
    registry.register_candidate(uri, run_id, ckpt)
    assert registry.champion(uri) is None  # a model, no champion yet
    registry.promote(uri, 1)
    assert registry.champion(uri)["version"] == 1
    # a second training run (its own MLflow run) registers as version 2, the new candidate
    client = mlflow.MlflowClient(uri)
    other = client.create_run(client.get_run(run_id).info.experiment_id).info.run_id
    v2 = registry.register_candidate(uri, other, ckpt)
    assert v2["version"] == 2 and v2["aliases"] == ["candidate"]
    assert registry.champion(uri)["version"] == 1  # registering never promotes
    registry.promote(uri, 2)
    assert registry.champion(uri)["version"] == 2
    assert registry.version(uri, 1)["aliases"] == []
    with pytest.raises(mlflow.exceptions.MlflowException):
        registry.promote(uri, 7)
    assert registry.champion(uri)["version"] == 2


def test_champion_loads_through_models_uri_and_generates_as_the_checkpoint(store, capsys):
    uri, run_id, ckpt = store
    registry.register_candidate(uri, run_id, ckpt)
    registry.promote(uri, 1)
    model = mlflow.pytorch.load_model("models:/finegpt@champion")
    assert isinstance(model, GPT) and not model.training
    assert next(model.parameters()).device.type == "cpu"
    for prompt, seed in (("The history of", 1337), ("", 42)):
        from_model = sample.generate(model, prompt, max_new_tokens=12, seed=seed)
        from_ckpt = sample.generate(str(ckpt), prompt, max_new_tokens=12, seed=seed)
        assert from_model == from_ckpt and len(from_model[0]) > len(prompt)
    # the CLI samples the registered champion as it samples the checkpoint
    args = ["--prompt", "The history of", "--max-new-tokens", "12", "--seed", "7"]
    assert cli.main(["sample", "--model", "models:/finegpt@champion", *args]) == 0
    by_uri = capsys.readouterr().out
    assert cli.main(["sample", "--ckpt", str(ckpt), *args]) == 0
    assert capsys.readouterr().out == by_uri and by_uri.startswith("The history of")
