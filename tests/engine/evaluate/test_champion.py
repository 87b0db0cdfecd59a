"""The champion rule (`finegpt_pipeline.evaluate.champion`) and its check on eval_report:
better / no different / worse; the check passes unless worse (WARN, ERROR with gate); alias
`champion` moves only to a model at least as good, the first only when it beats the unigram
baseline; a champion measured on other bins is evaluated on these.

eval_report's value is built here (the keys the evaluation asset passes on); the registered
versions are real: a tiny trained model logged and registered in a temporary MLflow store."""

from __future__ import annotations

import dagster as dg
import mlflow
import pytest

from tests._registry_fixture import store, trained  # noqa: F401
from assets.metadata_format import link_url
from assets.champion import eval_report_holds_against_champion
from assets.resources import ChampionPolicy, FineGPTHome
from finegpt_pipeline.evaluate import champion as champion_eval
from finegpt_pipeline.evaluate import evaluator as evaluate, registry
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


def check(bins, version, val_loss, se=0.01, beats_unigram=True, **policy):
    """Materialize eval_report's value and run the check; (evaluation, metadata values)."""

    @dg.asset(name="eval_report")
    def report() -> dict:
        return {"val_loss": val_loss, "val_loss_se": se, "val_bpb": 1.0, "tokens": 1000,
                "checkpoint": "ckpt.pt", "bins_dir": str(bins), "mlflow_run_id": None,
                "model_version": version, "beats_unigram": beats_unigram}

    result = dg.materialize([report, eval_report_holds_against_champion], instance=INSTANCE,
                            resources={"finegpt_home": FineGPTHome(),
                                       "champion_policy": ChampionPolicy(**policy)})
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation, {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}


def test_no_champion_a_model_beating_unigram_becomes_champion(versions, trained):
    uri, _, (v1, _, _) = versions
    assert registry.champion(uri) is None
    evaluation, meta = check(trained[3], v1, 3.0)
    assert evaluation.passed and meta["promoted"] is True
    assert registry.champion(uri)["version"] == v1
    # what it measured, and on which bins, is kept on the version for the next comparison
    recorded = registry.recorded_eval(registry.version(uri, v1))
    assert recorded["val_loss"] == 3.0 and recorded["bins_fingerprint"] == bins_fingerprint(trained[3])
    assert recorded["val_bpb"] == 1.0


def test_no_champion_a_model_below_unigram_is_not_promoted(versions, trained):
    uri, _, (v1, _, _) = versions
    evaluation, meta = check(trained[3], v1, 11.0, beats_unigram=False)
    assert evaluation.passed and meta["promoted"] is False
    assert "does not beat the unigram baseline" in meta["note"]
    assert registry.champion(uri) is None


def test_slightly_worse_passes_but_the_champion_stays(versions, trained):
    """No drift by tolerance: within it the check passes, yet the champion moves only to a
    model at least as good."""
    uri, _, (v1, v2, _) = versions
    check(trained[3], v1, 3.0)
    evaluation, meta = check(trained[3], v2, 3.015)  # worse, but by less than 0.02 nats
    assert evaluation.passed and meta["promoted"] is False and meta["verdict"] == "no different"
    assert registry.champion(uri)["version"] == v1
    assert meta["compared_with"] == v1 and meta["champion_val_loss"] == 3.0
    assert meta["delta_nats"] == pytest.approx(0.015)
    assert meta["delta_se"] == pytest.approx(2 ** 0.5 * 0.01, abs=1e-4)
    assert meta["champion_numbers"] == "recorded on the same bins"
    # short links (the UI's value column is ~400 px wide)
    assert meta["model_version_url"].startswith(f"[model finegpt v{v2}](")
    assert link_url(meta["model_version_url"]).endswith(
        f"#/models/finegpt/versions/{v2}?workflowType=machine_learning")
    assert link_url(meta["registered_model_url"]) == \
        "http://127.0.0.1:5000/#/models/finegpt?workflowType=machine_learning"


@pytest.mark.parametrize("val_loss,verdict", [(3.0, "no different"), (2.9, "better")])
def test_as_good_or_better_moves_the_champion(versions, trained, val_loss, verdict):
    uri, _, (v1, v2, _) = versions
    check(trained[3], v1, 3.0)
    evaluation, meta = check(trained[3], v2, val_loss)
    assert evaluation.passed and meta["promoted"] is True and meta["verdict"] == verdict
    assert registry.champion(uri)["version"] == v2 and meta["champion_version"] == v2
    # the registry's Versions table says it in words
    described = mlflow.MlflowClient(uri).get_model_version("finegpt", str(v2)).description
    assert described == meta["note"] and f"is the champion" in described


@pytest.mark.parametrize("gate,severity", [(False, dg.AssetCheckSeverity.WARN),
                                           (True, dg.AssetCheckSeverity.ERROR)])
def test_regression_fails_and_the_champion_stays(versions, trained, gate, severity):
    uri, _, (v1, v2, _) = versions
    check(trained[3], v1, 3.0)
    evaluation, meta = check(trained[3], v2, 3.1, gate=gate)  # 0.1 nats, 7 se worse
    assert not evaluation.passed and evaluation.severity == severity
    assert meta["promoted"] is False and meta["verdict"] == "worse"
    assert meta["delta_nats"] / meta["delta_se"] > 7
    assert registry.champion(uri)["version"] == v1
    assert registry.version(uri, v2)["aliases"] == []  # candidate moved on to v3 at registration


def test_both_bounds_must_be_exceeded(versions, trained):
    uri, _, (v1, v2, v3) = versions
    check(trained[3], v1, 3.0, se=0.001)
    # 15 se worse but only 0.015 nats: within the absolute tolerance
    evaluation, meta = check(trained[3], v2, 3.015, se=0.001)
    assert evaluation.passed and meta["verdict"] == "no different"
    # 0.05 nats worse but about 1 se: within the statistical tolerance
    evaluation, meta = check(trained[3], v3, 3.065, se=0.05)
    assert evaluation.passed and meta["delta_nats"] / meta["delta_se"] < 2
    # the same numbers fail a stricter policy
    evaluation, _ = check(trained[3], v3, 3.065, se=0.05, tolerance_se=0.5)
    assert not evaluation.passed and registry.champion(uri)["version"] == v1


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


def test_the_verdict_combines_nats_and_standard_errors():
    def verdict(this, se_this, champ, se_champ, **policy):
        return champion_eval.compare({"val_loss": this, "val_loss_se": se_this},
                                     {"val_loss": champ, "val_loss_se": se_champ},
                                     champion_eval.Policy(**policy))["verdict"]

    assert verdict(3.1, 0.01, 3.0, 0.01) == "worse"
    assert verdict(3.1, 0.1, 3.0, 0.1) == "no different"  # 0.71 se
    assert verdict(2.5, 0.0, 3.0, 0.0) == "better"
    assert verdict(3.01, 0.0, 3.0, 0.0) == "no different"  # within 0.02 nats
    # no finite se (a one-token val.bin): the nats bound alone decides
    assert verdict(3.1, float("nan"), 3.0, 0.01) == "worse"


def test_finegpt_eval_promote_is_the_same_rule_from_the_cli(store, trained, tmp_path, capsys):
    """`finegpt eval --promote` registers the checkpoint, applies the rule, logs the numbers
    into the training run; the report then says where the model stands."""
    import json

    from finegpt_pipeline import cli

    uri, run_id, ckpt = store
    args = ["eval", "--ckpt", str(ckpt), "--bins", str(trained[3]), "--out",
            str(tmp_path / "report"), "--json", "--max-new-tokens", "2"]
    assert cli.main([*args, "--promote"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model_version"] == 1 and data["champion"]["verdict"] == "no champion yet"
    assert data["decision"]["promoted"] is data["beats_unigram"]
    assert "eval/val_loss" in mlflow.MlflowClient(uri).get_run(run_id).data.metrics
    registry.promote(uri, 1)
    assert cli.main(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["champion"]["verdict"] == "is the champion" and "decision" not in data
    assert "Champion v1: v1 is the champion." in (tmp_path / "report" / "report.md").read_text()


def test_a_config_is_compared_with_the_champions(versions, trained):
    """What tells a run apart from the champion: the report and trained_checkpoint say it."""
    from finegpt_pipeline.evaluate.render import diff_text
    from finegpt_pipeline.train.run_dir import read_config

    uri, ckpt, (v1, _, _) = versions
    assert champion_eval.config_diff(uri, {"n_layer": 9}) == {}  # no champion yet
    registry.promote(uri, v1)
    mine = read_config(ckpt.parent)
    same = champion_eval.config_diff(uri, mine)
    assert same == {"version": v1, "differs": {}}
    assert diff_text(same) == f"same config as champion v{v1}"
    other = champion_eval.config_diff(uri, {**mine, "learning_rate": 0.01, "max_iters": 12})
    assert other["differs"]["learning_rate"] == ["0.01", str(mine["learning_rate"])]
    assert other["differs"]["max_iters"] == ["12", str(mine["max_iters"])]
    assert "tokens" in other["differs"]
    assert diff_text(other).startswith(f"differs from champion v{v1} in: max_iters 12 (champion ")
