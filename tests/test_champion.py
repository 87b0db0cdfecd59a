"""The champion regression check on eval_report: passes, warns, errors with gate; alias
`champion` moves only on a pass; a champion measured on other bins is evaluated on these.

eval_report's value is built here (the keys the evaluation asset passes on); the registered
versions are real: a tiny trained model logged and registered in a temporary MLflow store."""

from __future__ import annotations

import dagster as dg
import mlflow
import pytest

from _registry_fixture import store, trained  # noqa: F401
from assets.champion import ChampionPolicy, eval_report_holds_against_champion
from assets.resources import FineGPTPaths
from finegpt_pipeline import champion as champion_eval
from finegpt_pipeline import evaluate, registry
from finegpt_pipeline.layout import bins_fingerprint

INSTANCE = dg.DagsterInstance.ephemeral()


@pytest.fixture
def versions(store, tmp_path):
    """Three registered versions of the trained checkpoint (three MLflow runs): 1, 2, 3."""
    uri, run_id, ckpt = store
    client = mlflow.MlflowClient(uri)
    experiment = client.get_run(run_id).info.experiment_id
    runs = [run_id] + [client.create_run(experiment).info.run_id for _ in range(2)]
    return uri, ckpt, [registry.register_candidate(uri, r, ckpt)["version"] for r in runs]


def check(bins, version, val_loss, se=0.01, **policy):
    """Materialize eval_report's value and run the check; (evaluation, log text)."""

    @dg.asset(name="eval_report")
    def report() -> dict:
        return {"val_loss": val_loss, "val_loss_se": se, "val_bpb": 1.0, "tokens": 1000,
                "checkpoint": "ckpt.pt", "bins_dir": str(bins), "mlflow_run_id": None,
                "model_version": version}

    result = dg.materialize([report, eval_report_holds_against_champion], instance=INSTANCE,
                            resources={"finegpt_paths": FineGPTPaths(),
                                       "champion_policy": ChampionPolicy(**policy)})
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation, {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}


def test_no_champion_passes_and_becomes_champion(versions, trained):
    uri, _, (v1, _, _) = versions
    assert registry.champion(uri) is None
    evaluation, meta = check(trained[3], v1, 3.0)
    assert evaluation.passed and meta["promoted"] is True
    assert registry.champion(uri)["version"] == v1
    # what it measured, and on which bins, is kept on the version for the next comparison
    recorded = registry.recorded_eval(registry.version(uri, v1))
    assert recorded["val_loss"] == 3.0 and recorded["bins_fingerprint"] == bins_fingerprint(trained[3])


def test_within_tolerance_passes_and_moves_the_champion(versions, trained):
    uri, _, (v1, v2, _) = versions
    check(trained[3], v1, 3.0)
    evaluation, meta = check(trained[3], v2, 3.015)  # worse, but by less than 0.02 nats
    assert evaluation.passed and meta["promoted"] is True
    assert registry.champion(uri)["version"] == v2
    assert meta["champion_version"] == v1 and meta["champion_val_loss"] == 3.0
    assert meta["diff_nats"] == pytest.approx(0.015)
    assert meta["diff_se"] == pytest.approx(0.015 / (2 ** 0.5 * 0.01), abs=1e-3)
    assert meta["champion_numbers"] == "recorded on the same bins"
    assert meta["model_version_url"].endswith(f"#/models/finegpt/versions/{v2}?workflowType=machine_learning")
    assert meta["registered_model_url"] == "http://127.0.0.1:5000/#/models/finegpt?workflowType=machine_learning"


@pytest.mark.parametrize("gate,severity", [(False, dg.AssetCheckSeverity.WARN),
                                           (True, dg.AssetCheckSeverity.ERROR)])
def test_regression_fails_and_the_champion_stays(versions, trained, gate, severity):
    uri, _, (v1, v2, _) = versions
    check(trained[3], v1, 3.0)
    evaluation, meta = check(trained[3], v2, 3.1, gate=gate)  # 0.1 nats, 7 se worse
    assert not evaluation.passed and evaluation.severity == severity
    assert meta["promoted"] is False and meta["diff_se"] > 7
    assert registry.champion(uri)["version"] == v1
    assert registry.version(uri, v2)["aliases"] == []  # candidate moved on to v3 at registration


def test_both_bounds_must_be_exceeded(versions, trained):
    uri, _, (v1, v2, v3) = versions
    check(trained[3], v1, 3.0, se=0.001)
    # 15 se worse but only 0.015 nats: within the absolute tolerance
    evaluation, _ = check(trained[3], v2, 3.015, se=0.001)
    assert evaluation.passed and registry.champion(uri)["version"] == v2
    # 0.05 nats worse but about 1 se: within the statistical tolerance
    evaluation, meta = check(trained[3], v3, 3.065, se=0.05)
    assert evaluation.passed and meta["diff_se"] < 2
    # the same numbers fail a stricter policy
    registry.promote(uri, v2)
    evaluation, _ = check(trained[3], v3, 3.065, se=0.05, tolerance_se=0.5)
    assert not evaluation.passed and registry.champion(uri)["version"] == v2


def test_champion_measured_on_other_bins_is_evaluated_on_these(versions, trained, tmp_path):
    uri, ckpt, (v1, v2, _) = versions
    bins = trained[3]
    registry.promote(uri, v1)  # promoted by hand, then measured on other bins
    registry.record_eval(uri, v1, {"val_loss": 1.0, "val_loss_se": 0.01, "tokens": 10,
                                   "bins_fingerprint": "0123456789abcdef", "bins_dir": "/elsewhere"})
    truth = evaluate.evaluate(ckpt, bins, max_new_tokens=1)  # the champion's ckpt.pt on these bins
    evaluation, meta = check(bins, v2, truth["val_loss"] + 0.5, se=truth["val_loss_se"])
    assert meta["champion_numbers"] == "evaluated now on these bins"
    assert meta["champion_val_loss"] == pytest.approx(truth["val_loss"], abs=1e-4)
    assert meta["champion_val_loss_se"] == pytest.approx(truth["val_loss_se"], abs=1e-4)
    assert not evaluation.passed  # 0.5 nats worse than the champion on these bins
    assert registry.champion(uri)["version"] == v1
    # the measurement is kept: the next check on these bins reads it instead of evaluating
    recorded = registry.recorded_eval(registry.version(uri, v1))
    assert recorded["bins_fingerprint"] == bins_fingerprint(bins)
    _, meta = check(bins, v2, truth["val_loss"], se=truth["val_loss_se"])
    assert meta["champion_numbers"] == "recorded on the same bins" and meta["promoted"] is True


def test_an_untracked_model_has_nothing_to_compare(store, trained):
    uri, _, _ = store
    evaluation, meta = check(trained[3], None, 3.0)
    assert evaluation.passed and "nothing to compare" in meta["note"]
    assert registry.champion(uri) is None


def test_the_rule_combines_nats_and_standard_errors():
    rule = champion_eval.compare
    assert rule({"val_loss": 3.1, "val_loss_se": 0.01}, {"val_loss": 3.0, "val_loss_se": 0.01},
                2.0, 0.02)["regressed"]
    assert not rule({"val_loss": 3.1, "val_loss_se": 0.1}, {"val_loss": 3.0, "val_loss_se": 0.1},
                    2.0, 0.02)["regressed"]  # 0.71 se
    assert not rule({"val_loss": 2.5, "val_loss_se": 0.0}, {"val_loss": 3.0, "val_loss_se": 0.0},
                    2.0, 0.02)["regressed"]  # better
    # no finite se (a one-token val.bin): the nats bound alone decides
    assert rule({"val_loss": 3.1, "val_loss_se": float("nan")},
                {"val_loss": 3.0, "val_loss_se": 0.01}, 2.0, 0.02)["regressed"]
