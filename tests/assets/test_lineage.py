"""Lineage in MLflow: the six assets of one Dagster run on the real sample, each a nested run
of the Dagster run's parent run, tagged and linked both ways, with the data as dataset inputs."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import mlflow
import pytest

from assets.dagster_internals import DATA_VERSION_TAG
from assets.launchers import TrainingLauncher
from assets.bins import tokenized_bins
from assets.data import raw_shard, token_stats
from assets.evaluation import eval_report
from assets.planning import training_config
from assets.resources import ChampionPolicy, FineGPTHome
from tests._shards import materialize_shard
from assets.training import trained_checkpoint
from finegpt_pipeline.tracking import datasets as mlflow_datasets, store as mlflow_store

REPO = Path(__file__).resolve().parents[2]
SIX = ("raw_shard", "token_stats", "tokenized_bins", "training_config", "trained_checkpoint",
       "eval_report")
TINY = ["n_layer=1", "n_head=1", "n_embd=16", "block_size=16", "micro_batch=2", "grad_accum=1",
        "max_iters=3", "eval_interval=3", "eval_iters=1", "checkpoint_interval=3",
        "log_interval=1", "warmup_iters=1", "lr_decay_iters=3", "device=cpu", "compile=false"]


CODE_VERSIONS = {key.to_user_string(): version for asset in (
    raw_shard, token_stats, tokenized_bins, training_config, trained_checkpoint, eval_report)
    for key, version in asset.code_versions_by_key.items()}


def _pipeline(home: Path, shard: Path) -> dg.ExecuteInProcessResult:
    return materialize_shard(
        [raw_shard, token_stats, tokenized_bins, training_config, trained_checkpoint, eval_report],
        shard,
        resources={"champion_policy": ChampionPolicy(), "finegpt_home": FineGPTHome(root=str(home)),
                   "training_launcher": TrainingLauncher()},
        run_config={"ops": {
            "training_config": {"config": {"gpu": "cpu", "calibrate": False, "overrides": TINY}},
            "eval_report": {"config": {"device": "cpu", "max_new_tokens": 2}}}})


def _inputs(run) -> dict[str, tuple]:
    """name -> (digest, context, tags, source) of a run's dataset inputs."""
    out = {}
    for item in run.inputs.dataset_inputs:
        tags = {t.key: t.value for t in item.tags}
        out[item.dataset.name] = (item.dataset.digest, tags.pop(mlflow_datasets.CONTEXT_TAG), tags,
                                  item.dataset.source)
    return out


def test_one_dagster_run_is_one_parent_with_six_tagged_nested_runs(finegpt_home, sample_shard):
    result = _pipeline(finegpt_home, sample_shard)
    assert result.success
    dagster_url = f"http://127.0.0.1:3000/runs/{result.run_id}"
    client = mlflow.MlflowClient(f"sqlite:///{finegpt_home / 'mlflow.db'}")
    mlflow.set_tracking_uri(client.tracking_uri)

    # the project's experiment only: no empty `Default` beside it
    assert [e.name for e in client.search_experiments()] == [mlflow_store.EXPERIMENT]
    runs = client.search_runs([client.get_experiment_by_name(mlflow_store.EXPERIMENT).experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("finegpt.stage") == "dagster_run"]
    assert parent.data.tags["dagster.run_id"] == result.run_id
    assert parent.data.tags["dagster.run_url"] == dagster_url
    assert f"]({dagster_url})" in parent.data.tags["mlflow.note.content"]  # a Markdown link
    assert re.fullmatch(rf"dagster assets \d{{4}}-\d\d-\d\d \d\d:\d\d "
                        rf"\({result.run_id[:8]}\)", parent.info.run_name), parent.info.run_name
    assert parent.info.status == "FINISHED"
    # the headline numbers on the parent too, as the training run has them
    training_metrics = client.get_run(next(
        r.info.run_id for r in runs if r.data.tags.get("finegpt.stage") == "train")).data.metrics
    for key in ("eval/val_loss", "eval/val_loss_se", "eval/val_bpb", "tokens_seen"):
        assert parent.data.metrics[key] == pytest.approx(training_metrics[key]), key

    nested = {r.data.tags["dagster.asset_key"]: r for r in runs
              if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert sorted(nested) == sorted(SIX) and len(runs) == 7
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    for key, run in nested.items():
        tags = run.data.tags
        [mat] = result.asset_materializations_for_node(key)
        assert run.info.status == "FINISHED", key
        assert tags["dagster.run_id"] == result.run_id and tags["dagster.run_url"] == dagster_url
        assert tags["dagster.code_version"] == CODE_VERSIONS[key], key
        # the data version Dagster recorded for this materialization
        assert tags["dagster.data_version"] == mat.tags["dagster/data_version"], key
        assert tags["mlflow.source.git.commit"] == commit
        assert f"]({dagster_url})" in tags["mlflow.note.content"], key
        # and back: the asset's metadata links to its run
        assert run.info.run_id in mat.metadata["mlflow_run_url"].value, key
        if key != "trained_checkpoint":
            assert re.fullmatch(rf"{key} \d{{4}}-\d\d-\d\d \d\d:\d\d \({result.run_id[:8]}\)",
                                run.info.run_name), run.info.run_name
    # the trainer's run is trained_checkpoint's nested run, still a training run
    training = nested["trained_checkpoint"]
    assert training.data.tags["finegpt.stage"] == "train"
    assert training.info.run_name.startswith("train 1L/16d ")
    assert result.output_for_node("trained_checkpoint")["mlflow_run_id"] == training.info.run_id
    assert nested["raw_shard"].data.tags["dagster.data_version"] == \
        result.output_for_node("raw_shard")["sha256"]

    # the shard as a dataset: the digest is the sha256 Dagster shows, cut to MLflow's 36 chars
    sha = hashlib.sha256(sample_shard.read_bytes()).hexdigest()
    shard_meta = result.asset_materializations_for_node("raw_shard")[0].metadata
    assert shard_meta["sha256"].value == sha[:16] + "…"  # the UI's width; all of it below
    assert result.asset_materializations_for_node("raw_shard")[0].tags[DATA_VERSION_TAG] == sha
    assert shard_meta["mlflow_dataset_digest"].value == sha[:32]
    digest, context, tags, source = _inputs(nested["raw_shard"])["raw_shard"]
    assert (digest, context, tags) == (sha[:32], "source", {"sha256": sha})
    assert str(sample_shard.resolve()) in source
    bins_dir = result.output_for_node("tokenized_bins")["dir"]
    for run, context in ((training, "training"), (nested["eval_report"], "evaluation")):
        inputs = _inputs(run)
        assert sorted(inputs) == ["raw_shard", "tokenized_bins/train", "tokenized_bins/val"]
        assert {ctx for _, ctx, _, _ in inputs.values()} == {context}
        assert inputs["raw_shard"][0] == sha[:32] and inputs["raw_shard"][2]["sha256"] == sha
        assert inputs["tokenized_bins/val"][2]["bins_dir"] == bins_dir
    [dataset] = [d for d in training.inputs.dataset_inputs if d.dataset.name == "tokenized_bins/train"]
    assert '"tokens": %d' % result.output_for_node("tokenized_bins")["train_tokens"] in \
        dataset.dataset.profile
    assert _inputs(nested["tokenized_bins"])["raw_shard"][1] == "tokenize"

    # the finished checkpoint is on disk once: the artifact is a hard link to the run's ckpt.pt
    ckpt = Path(result.output_for_node("trained_checkpoint")["checkpoint"])
    assert "ckpt.pt" in {a.path for a in client.list_artifacts(training.info.run_id)}
    artifact = mlflow_store.local_artifact_dir(training.info.artifact_uri) / "ckpt.pt"
    assert os.stat(artifact).st_ino == os.stat(ckpt).st_ino


def test_parallel_steps_find_one_parent(finegpt_home):
    """Dagster's multiprocess executor starts steps in parallel processes: each finds or
    makes the parent under the lock, and there is one."""
    mlflow_store.configure(finegpt_home)
    code = ("import sys; import mlflow; from finegpt_pipeline.tracking import store as s; "
            "from assets import lineage; uri = s.configure(sys.argv[1]); "
            "print(lineage.parent_run(mlflow.MlflowClient(uri), 'dagster-run-1', 'pipeline_job', "
            "sys.argv[1] + '/' + lineage.PARENT_LOCK_NAME))")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(finegpt_home)], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    ids = {p.communicate(timeout=120)[0].strip().splitlines()[-1] for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(ids) == 1
    client = mlflow.MlflowClient()
    [parent] = client.search_runs([client.get_experiment_by_name(mlflow_store.EXPERIMENT).experiment_id])
    assert parent.info.run_id in ids and parent.info.run_name.startswith("dagster pipeline_job ")


@pytest.mark.parametrize("runs_before", [0, 1])
def test_an_empty_default_experiment_is_deleted_one_with_runs_kept(finegpt_home, runs_before):
    client = mlflow.MlflowClient(f"sqlite:///{finegpt_home / 'mlflow.db'}")
    for _ in range(runs_before):
        client.create_run("0")
    mlflow_store.configure(finegpt_home)
    names = [e.name for e in client.search_experiments()]
    assert names == (["finegpt", "Default"] if runs_before else ["finegpt"])
