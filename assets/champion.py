"""The champion check on `eval_report`: the engine's promotion rule
(`finegpt_pipeline.evaluate.champion.decide`) applied to the model version trained_checkpoint
registered, with the report's verdict against the champion. It fails when the model is worse
than the champion (severity WARN, or ERROR with `champion_policy: {config: {gate: true}}`);
alias `champion` moves only as the rule says (the first champion must beat the unigram
baseline; later, only to a model at least as good)."""

import math

import dagster as dg

from assets.evaluation import eval_report
from assets.metadata_format import link
from assets.resources import ChampionPolicy, FineGPTHome
from finegpt_pipeline.evaluate import champion, registry

REQUIRED = ("val_loss", "val_loss_se", "tokens", "bins_dir", "model_version", "beats_unigram")


def _round(value) -> float | None:
    return round(float(value), 4) if value is not None and math.isfinite(float(value)) else None


@dg.asset_check(
    asset=eval_report,
    description="Not worse than the registered champion on the same val.bin (by more than "
                "ChampionPolicy.tolerance_abs nats and tolerance_se standard errors: WARN, ERROR "
                "with gate); alias `champion` moves to this version only when it is at least as "
                "good (the first champion: when it beats the unigram baseline).",
)
def eval_report_holds_against_champion(context: dg.AssetCheckExecutionContext,
                                       eval_report: dict, finegpt_home: FineGPTHome,
                                       champion_policy: ChampionPolicy) -> dg.AssetCheckResult:
    severity = dg.AssetCheckSeverity.ERROR if champion_policy.gate else dg.AssetCheckSeverity.WARN
    if eval_report.get("model_version") is None:
        return dg.AssetCheckResult(passed=True, severity=severity, metadata={
            "note": "no registered model version (training not tracked in MLflow): "
                    "nothing to compare or promote"})
    missing = [k for k in REQUIRED if k not in eval_report]
    if missing:
        raise ValueError(f"eval_report: value lacks {missing} (has {sorted(eval_report)}); "
                         "the champion check needs them")
    uri, version = finegpt_home.mlflow_tracking_uri(), int(eval_report["model_version"])
    decision = champion.decide(uri, version, eval_report, champion_policy.resolved_device(),
                               champion_policy.policy())
    context.log.info(f"champion: {decision['note']}")
    mine = registry.version(uri, version)
    block = decision["comparison"]
    meta = {"verdict": decision["verdict"], "note": decision["note"],
            "promoted": decision["promoted"],
            "val_loss": _round(eval_report["val_loss"]),
            "val_loss_se": _round(eval_report["val_loss_se"]),
            "model_version": dg.MetadataValue.int(version),
            "model_version_url": link(f"model {mine['name']} v{version}", mine["url"]),
            "registered_model_url": link(f"model {mine['name']}", registry.model_url(mine["name"])),
            "tolerance_se": champion_policy.tolerance_se,
            "tolerance_abs": champion_policy.tolerance_abs, "gate": champion_policy.gate}
    if decision["champion_version"] is not None:
        meta["champion_version"] = dg.MetadataValue.int(decision["champion_version"])
    if "delta" in block:
        meta.update(compared_with=dg.MetadataValue.int(block["version"]),
                    champion_url=link(f"champion v{block['version']}", block["url"]),
                    champion_val_loss=_round(block["val_loss"]),
                    champion_val_loss_se=_round(block["val_loss_se"]),
                    champion_numbers=block["source"], delta_nats=_round(block["delta"]),
                    delta_se=_round(block["delta_se"]))
    return dg.AssetCheckResult(passed=not decision["regressed"], severity=severity,
                               metadata=meta)
