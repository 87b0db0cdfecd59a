"""The `training_config` asset: plan file, Dagster metadata, MLflow run, asset check."""

from __future__ import annotations

import json
import re

import dagster as dg
import pytest

from assets.launchers import TrainingLauncher
from assets.metadata_format import significant
from assets.planning import training_config, training_config_fits_budget
from assets.resources import FineGPTHome
from assets.training import trained_checkpoint
from finegpt_pipeline.config import TrainConfig
from finegpt_pipeline.hardware import GIB
from finegpt_pipeline.plan.planner import build_plan

META = {"train_tokens": 194_000, "val_tokens": 21_790, "dtype": "uint16", "vocab_size": 50257}


def _upstream(meta):
    @dg.asset(name="tokenized_bins")
    def tokenized_bins() -> dict:  # test-only stand-in for the data stage's output
        return {"dir": "/bins/sample", **meta}

    return tokenized_bins


def _materialize(meta, plan_config, **kwargs):
    return dg.materialize(
        [_upstream(meta), training_config, training_config_fits_budget],
        resources={"finegpt_home": FineGPTHome()},
        run_config={"ops": {"training_config": {"config": plan_config}}}, **kwargs)


def test_training_config_writes_plan_metadata_and_mlflow(finegpt_home):
    import mlflow

    result = _materialize(META, {"gpu": "cpu", "overrides": ["seed=7"]})
    assert result.success
    plan = result.output_for_node("training_config")
    assert plan["report"]["tokens_available"] == 194_000 and plan["config"]["seed"] == 7
    assert plan["report"]["bins_dir"] == "/bins/sample"
    TrainConfig.from_plan(plan)

    files = list((finegpt_home / "plans").glob("plan-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text()) == plan

    mat = result.asset_materializations_for_node("training_config")[0]
    meta = mat.metadata
    assert meta["params"].value == plan["report"]["params"]
    rows = {r.data["requirement"]: r.data for r in meta["requirements"].records}
    assert rows["Parameters"]["value"].startswith(f"{plan['report']['params']:,} ")
    assert rows["Parameters"]["value"].endswith(" [exact]")  # its source
    assert meta["plan_path"].value == str(files[0].relative_to(finegpt_home))  # as the UI shows

    checks = result.get_asset_check_evaluations()
    assert [c.check_name for c in checks] == ["training_config_fits_budget"] and checks[0].passed

    run_id = meta["mlflow_run_id"].value
    run = mlflow.get_run(run_id)
    assert re.fullmatch(rf"training_config \d{{4}}-\d\d-\d\d \d\d:\d\d \({result.run_id[:8]}\)",
                        run.info.run_name), run.info.run_name
    assert run.info.run_id in meta["mlflow_run_url"].value
    assert run.data.tags["finegpt.stage"] == "training_config"
    assert run.data.tags["dagster.run_id"] == result.run_id
    assert run.data.params["n_layer"] == str(plan["config"]["n_layer"])
    assert run.data.params["hardware.key"] == "cpu"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
    assert {"requirements.md", "plan.json"} <= artifacts


def test_preset_claims_reach_the_report(finegpt_home):
    result = _materialize({**META, "train_tokens": 850_000_000},
                          {"gpu": "rtx4070", "preset": "12gb-40m", "hours": 6})
    plan = result.output_for_node("training_config")
    assert plan["config"]["n_layer"] == 6 and plan["config"]["n_embd"] == 384
    assert plan["report"]["claim_verdicts"][0]["verdict"] == "wrong"
    notes = result.asset_materializations_for_node("training_config")[0].metadata["requirements_notes"].value
    assert "Seed claims" in notes and "30.3 M" in notes


def test_bad_upstream_metadata_fails_with_a_clear_error(finegpt_home):
    with pytest.raises(ValueError, match="tokenized_bins.*train_tokens"):
        _materialize({"val_tokens": 5}, {"gpu": "cpu"})


def test_metadata_floats_are_rounded(finegpt_home):
    meta = _materialize(META, {"gpu": "cpu"}).asset_materializations_for_node("training_config")[0].metadata
    for key in ("est_hours", "est_peak_memory_gib", "memory_budget_gib", "epochs", "energy_kwh"):
        assert isinstance(meta[key], dg.FloatMetadataValue), key
        assert meta[key].value == significant(meta[key].value, 3), (key, meta[key].value)


def test_a_plan_over_its_memory_budget_blocks_training(finegpt_home):
    """The check is blocking: trained_checkpoint is skipped, never started, when it fails."""
    plan = build_plan("cpu", META["train_tokens"], calibration=False, val_tokens=META["val_tokens"])
    over = {**plan, "report": {**plan["report"],
                               "peak_memory_bytes": plan["report"]["memory_budget_bytes"] + GIB}}

    @dg.asset(name="training_config")
    def planned() -> dict:  # a plan as the planner would write it, over its budget
        return over

    result = dg.materialize(
        [_upstream(META), planned, training_config_fits_budget, trained_checkpoint],
        resources={"finegpt_home": FineGPTHome(), "training_launcher": TrainingLauncher()},
        raise_on_error=False)
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "training_config_fits_budget" and not check.passed
    assert check.metadata["problems"].value == "peak memory exceeds the budget"
    assert check.metadata["headroom_gib"].value == -1.0
    assert result.asset_materializations_for_node("trained_checkpoint") == []
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert "trained_checkpoint" not in started
    assert not (finegpt_home / "runs").exists()
