"""`trained_checkpoint`'s checks: finite losses (blocking), below the unigram baseline (WARN)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import dagster as dg
import pytest

from tests._bins_fixture import make_bins, write_plan
from assets.evaluation import eval_report
from assets.resources import ChampionPolicy, FineGPTHome
from assets.training_checks import (
    last_train_loss, trained_checkpoint_beats_unigram, trained_checkpoint_loss_is_finite,
)
from finegpt_pipeline.train import plan_file, trainer as train
from finegpt_pipeline.evaluate import unigram

CHECKS = [trained_checkpoint_loss_is_finite, trained_checkpoint_beats_unigram]


@pytest.fixture(scope="module")
def bins60(tmp_path_factory, sample_shard) -> Path:
    return make_bins(sample_shard, tmp_path_factory.mktemp("bins60"), max_docs=60)


def _train(root: Path, bins: Path, **plan) -> Path:
    fields = dict(max_iters=6, lr_decay_iters=6, eval_interval=3, checkpoint_interval=6)
    cfg = plan_file.load_plan(write_plan(root / "plan.json", **{**fields, **plan}))
    train.train(cfg, bins, root / "run", mlflow=False)
    return root / "run"


def _value(run: Path) -> dict:
    """trained_checkpoint's value for a run directory, as its asset builds it from summary.json."""
    summary = json.loads((run / "summary.json").read_text())
    value = {k: summary.get(k) for k in ("steps", "tokens_seen", "best_val_loss",
                                         "final_val_loss", "checkpoint", "params")}
    return {**value, "run_dir": str(run), "mlflow_run_id": None}


def _materialize(home: Path, run: Path, bins: Path) -> dg.ExecuteInProcessResult:
    @dg.asset(name="trained_checkpoint")
    def trained_checkpoint_input() -> dict:
        return _value(run)

    @dg.asset(name="tokenized_bins")
    def tokenized_bins_input() -> dict:
        return {"dir": str(bins)}

    return dg.materialize(
        [trained_checkpoint_input, tokenized_bins_input, *CHECKS, eval_report],
        resources={"champion_policy": ChampionPolicy(), "finegpt_home": FineGPTHome(root=str(home))}, raise_on_error=False,
        run_config={"ops": {"eval_report": {"config": {"device": "cpu", "max_new_tokens": 2}}}})


def _checks(result) -> dict:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def test_a_diverged_run_blocks_eval_report(finegpt_home, bins60, tmp_path):
    # a real divergence: lr 1e9 without clipping turns the loss NaN from the second step
    run = _train(tmp_path, bins60, learning_rate=1e9, min_lr=1e8, warmup_iters=0, grad_clip=0.0)
    assert math.isnan(last_train_loss(run))
    result = _materialize(finegpt_home, run, bins60)
    check = _checks(result)["trained_checkpoint_loss_is_finite"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    # best_val_loss stays the finite step-0 value: min() ignores a NaN
    assert check.metadata["not_finite"].value == "final_val_loss, last_train_loss"
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert "eval_report" not in started
    assert result.asset_materializations_for_node("eval_report") == []


def test_a_short_run_warns_below_unigram_and_eval_report_still_runs(finegpt_home, bins60,
                                                                    tmp_path):
    run = _train(tmp_path, bins60)  # 6 steps: still near uniform, far above the unigram
    result = _materialize(finegpt_home, run, bins60)
    checks = _checks(result)
    assert checks["trained_checkpoint_loss_is_finite"].passed
    warn = checks["trained_checkpoint_beats_unigram"]
    assert not warn.passed and warn.severity == dg.AssetCheckSeverity.WARN
    expected = unigram.unigram_val_loss(bins60)
    assert warn.metadata["unigram_loss"].value == round(expected, 4)
    assert warn.metadata["vs_unigram"].value.endswith(" nats/token worse than unigram")
    # not blocking: the report is made, and its baseline is the same number (one place)
    [mat] = result.asset_materializations_for_node("eval_report")
    assert result.output_for_node("eval_report")["unigram_loss"] == pytest.approx(expected)
    assert mat.metadata["beats_unigram"].value is False


def test_a_val_loss_below_the_unigram_passes(bins60):
    expected = unigram.unigram_val_loss(bins60)
    check = trained_checkpoint_beats_unigram({"final_val_loss": expected - 0.5},
                                             {"dir": str(bins60)})
    assert check.passed and check.metadata["vs_unigram"].value == "0.5000 nats/token better than unigram"
    nan = trained_checkpoint_beats_unigram({"final_val_loss": float("nan")}, {"dir": str(bins60)})
    assert not nan.passed


def test_last_train_loss_reads_the_summary(tmp_path):
    assert last_train_loss(tmp_path) is None and last_train_loss(None) is None
    (tmp_path / "summary.json").write_text(json.dumps(
        {"history": [{"iter": 1, "train_loss": 3.5}, {"iter": 2, "train_loss": 2.5}]}))
    assert last_train_loss(tmp_path) == 2.5


def test_checks_are_blocking_only_for_nan():
    [finite] = trained_checkpoint_loss_is_finite.check_specs
    [warn] = trained_checkpoint_beats_unigram.check_specs
    assert finite.blocking and not warn.blocking
    assert {finite.asset_key.to_user_string(), warn.asset_key.to_user_string()} == {
        "trained_checkpoint"}
