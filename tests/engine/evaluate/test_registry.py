"""The model registry: a trained checkpoint as a registered MLflow model, its aliases, and the
champion loaded through `models:/` generating what the checkpoint generates."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import mlflow
import pytest
import torch

from tests._registry_fixture import store, trained  # noqa: F401
from finegpt_pipeline import cli
from finegpt_pipeline.train import checkpoint
from assets.metadata_format import link
from finegpt_pipeline.evaluate import registered_model, registry, sample
from finegpt_pipeline.model import GPT
from finegpt_pipeline.tracking import store as mlflow_store


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

    def labels():  # each training run marked with its version and aliases, as they move
        return [client.get_run(r).data.tags.get(mlflow_store.MODEL_TAG) for r in (run_id, other)]

    assert labels() == ["v1 champion", "v2 candidate"]
    registry.promote(uri, 2)
    assert registry.champion(uri)["version"] == 2
    assert registry.version(uri, 1)["aliases"] == []
    assert labels() == ["v1", "v2 candidate champion"]
    with pytest.raises(mlflow.exceptions.MlflowException):
        registry.promote(uri, 7)
    assert registry.champion(uri)["version"] == 2


def test_champion_loads_through_models_uri_and_generates_as_the_checkpoint(store, capsys):
    uri, run_id, ckpt = store
    registry.register_candidate(uri, run_id, ckpt)
    registry.promote(uri, 1)
    model = registry.load(uri, "models:/finegpt@champion")
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
    # a URI the store does not hold: one line naming it and the store
    assert cli.main(["sample", "--model", "models:/finegpt@nope", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("finegpt sample: error: models:/finegpt@nope: not loadable from")
    assert uri in err and "\n" not in err


def test_trained_checkpoint_registers_its_checkpoint_once(store, trained, tmp_path):
    """The asset registers what it trained (alias candidate) and passes the version on; a
    reused finished run returns the same version, not a second one. (The finished run is the
    fixture's real training, placed where the asset looks for it: no trainer launch here.)"""
    import dagster as dg

    from assets.launchers import TrainingLauncher
    from assets.resources import FineGPTHome
    from assets.training import trained_checkpoint
    from finegpt_pipeline.train.run_dir import run_key

    uri, run_id, ckpt = store
    bins = trained[3]
    plan = json.loads((ckpt.parent / "plan.json").read_text())
    paths = FineGPTHome(root=str(tmp_path / "home"))
    shutil.copytree(ckpt.parent, paths.home().trained_runs / run_key(plan, bins))

    @dg.asset(name="training_config")
    def training_config_input() -> dict:
        return plan

    @dg.asset(name="tokenized_bins")
    def tokenized_bins_input() -> dict:
        return {"dir": str(bins)}

    instance = dg.DagsterInstance.ephemeral()
    values, metas = [], []
    for _ in range(2):
        result = dg.materialize([training_config_input, tokenized_bins_input, trained_checkpoint],
                                resources={"finegpt_home": paths,
                                           "training_launcher": TrainingLauncher()},
                                instance=instance)
        assert result.success
        values.append(result.output_for_node("trained_checkpoint"))
        [mat] = result.asset_materializations_for_node("trained_checkpoint")
        metas.append(mat.metadata)
    first, again = values
    assert metas[0]["reused"].value is True and again == first
    assert first["mlflow_run_id"] == run_id and first["model_version"] == 1
    assert first["model_version_url"].startswith("http://127.0.0.1:5000/#/models/finegpt/versions/1")
    assert metas[0]["model_version"] == dg.MetadataValue.int(1)
    assert metas[0]["model_version_url"] == link("model finegpt v1", first["model_version_url"])
    client = mlflow.MlflowClient(uri)
    assert len(client.search_model_versions("name = 'finegpt'")) == 1
    mv = client.get_model_version("finegpt", "1")
    assert mv.run_id == run_id and mv.aliases == ["candidate"]
    loaded = registry.load(uri, "models:/finegpt@candidate")
    assert sample.generate(loaded, "The", max_new_tokens=6) == \
        sample.generate(first["checkpoint"], "The", max_new_tokens=6)


def _model_dir(uri: str, version: int = 1) -> Path:
    client = mlflow.MlflowClient(uri)
    model_id = client.get_model_version("finegpt", str(version)).source.removeprefix("models:/")
    return mlflow_store.local_artifact_dir(client.get_logged_model(model_id).artifact_location)


def test_the_registered_artifact_is_the_checkpoint_stored_once(store):
    """No pickled module beside ckpt.pt: the version's artifacts are the run's checkpoint (the
    same file on disk, a hard link) plus a few small text files."""
    uri, run_id, ckpt = store
    registry.register_candidate(uri, run_id, ckpt)
    files = {p.relative_to(_model_dir(uri)).as_posix(): p
             for p in _model_dir(uri).rglob("*") if p.is_file()}
    assert registered_model.CKPT_FILE in files and "data/model.pth" not in files
    assert os.path.samefile(files[registered_model.CKPT_FILE], ckpt)
    small = sum(p.stat().st_size for name, p in files.items() if name != "ckpt.pt")
    assert small < 16_000, files  # MLmodel, requirements, environments
    client = mlflow.MlflowClient(uri)
    run_dir = mlflow_store.local_artifact_dir(client.get_run(run_id).info.artifact_uri)
    on_disk = {(p.stat().st_dev, p.stat().st_ino): p.stat().st_size
               for d in (run_dir, _model_dir(uri), ckpt.parent) for p in d.rglob("*")
               if p.is_file() and p.stat().st_size > 1_000_000}
    assert list(on_disk.values()) == [ckpt.stat().st_size]  # the weights' bytes, once
    flavors = mlflow.models.get_model_info("models:/finegpt/1").flavors
    assert set(flavors) == {"finegpt", "python_function"}
    assert flavors["python_function"]["loader_module"] == registered_model.__name__


def test_pyfunc_of_the_champion_generates_as_finegpt_sample(store):
    uri, run_id, ckpt = store
    registry.register_candidate(uri, run_id, ckpt)
    registry.promote(uri, 1)
    served = mlflow.pyfunc.load_model("models:/finegpt@champion")
    assert isinstance(served.get_raw_model(), GPT)
    texts = served.predict(["The history of", ""], params={"max_new_tokens": 12, "seed": 7})
    assert texts == [sample.generate(str(ckpt), p, max_new_tokens=12, seed=7)[0]
                     for p in ("The history of", "")]
    assert texts[0].startswith("The history of") and texts[0] != "The history of"


def test_a_version_keeps_its_weights_when_the_run_checkpoint_is_replaced(store, tmp_path):
    """ckpt.pt is replaced by rename at the run's next step: the version registered before
    keeps the bytes it was registered with (its own link), the new step is a new version."""
    uri, run_id, ckpt = store
    run_ckpt = tmp_path / "run" / "ckpt.pt"
    run_ckpt.parent.mkdir()
    shutil.copyfile(ckpt, run_ckpt)
    registry.register_candidate(uri, run_id, run_ckpt)
    later = checkpoint.load(ckpt)
    later["iter_num"] += 1
    later["model"] = {k: v + 0.01 for k, v in later["model"].items()}
    torch.save(later, tmp_path / "next.pt")
    os.replace(tmp_path / "next.pt", run_ckpt)
    registry.register_candidate(uri, run_id, run_ckpt)
    first, second = registry.load(uri, "models:/finegpt/1"), registry.load(uri, "models:/finegpt/2")
    original = checkpoint.model_from_checkpoint(checkpoint.load(ckpt))
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(),
                                                  original.state_dict().values()))
    assert not torch.equal(second.transformer.wte.weight, original.transformer.wte.weight)


def test_a_version_registered_as_a_pickled_module_still_loads(store, capsys):
    """Versions registered before the checkpoint was the artifact (mlflow.pytorch's pickle)."""
    uri, run_id, ckpt = store
    model = checkpoint.model_from_checkpoint(checkpoint.load(ckpt)).eval()
    mlflow.set_tracking_uri(uri)
    logged = mlflow.pytorch.log_model(model, name="model", run_id=run_id,
                                      serialization_format="pickle",
                                      pip_requirements=["torch"])
    client = mlflow.MlflowClient(uri)
    client.create_registered_model("finegpt")
    client.create_model_version("finegpt", logged.model_uri, run_id=run_id,
                                model_id=logged.model_id)
    client.set_registered_model_alias("finegpt", "champion", "1")
    loaded = registry.load(uri, "models:/finegpt@champion")
    assert isinstance(loaded, GPT) and not loaded.training
    args = ["--prompt", "The", "--max-new-tokens", "6"]
    assert cli.main(["sample", "--model", "models:/finegpt@champion", *args]) == 0
    by_uri = capsys.readouterr().out
    assert cli.main(["sample", "--ckpt", str(ckpt), *args]) == 0
    assert capsys.readouterr().out == by_uri


class _Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


def test_a_model_of_another_kind_fails_in_one_line(store):
    uri, _, _ = store
    mlflow.set_tracking_uri(uri)
    logged = mlflow.pyfunc.log_model(name="echo", python_model=_Echo(),
                                     pip_requirements=["mlflow"])
    with pytest.raises(ValueError) as err:
        registry.load(uri, logged.model_uri)
    message = str(err.value)
    assert message.startswith(f"{logged.model_uri}: neither a 'finegpt' nor a 'pytorch' model")
    assert "registers versions of 'finegpt'" in message and "\n" not in message
