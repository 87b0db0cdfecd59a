"""The champion regression check on `eval_report`, and the promotion it decides.

This eval's val loss is compared with the champion's (`models:/finegpt@champion`) on the same
val.bin: the champion's recorded eval when it was made on these bins (same
`layout.bins_fingerprint`), else the registered champion evaluated on them now. Regressed, by
the rule of `finegpt_pipeline.champion.compare` (more than `tolerance_abs` nats AND more than
`tolerance_se` standard errors of the difference worse), the check fails: severity WARN, or
ERROR with `gate: true`. Alias `champion` moves to this model version only when the check
passes; with no champion yet it passes and this version becomes the champion.
"""

import math

import dagster as dg

from assets.evaluation import eval_report
from assets.resources import FineGPTPaths
from finegpt_pipeline import champion as champion_eval
from finegpt_pipeline import layout, registry

REQUIRED = ("val_loss", "val_loss_se", "tokens", "bins_dir", "model_version")


class ChampionPolicy(dg.ConfigurableResource):
    """When a new model counts as a regression against the champion (both bounds must be
    exceeded), and whether a regression is an ERROR (gate) or a WARN."""

    tolerance_se: float = 2.0  # standard errors of the difference
    tolerance_abs: float = 0.02  # nats
    gate: bool = False  # True: a regression is severity ERROR
    device: str = "auto"  # where the champion is evaluated on other bins: auto | cpu | cuda

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


def _round(value) -> float | None:
    return round(float(value), 4) if value is not None and math.isfinite(float(value)) else None


@dg.asset_check(
    asset=eval_report,
    description="Val loss not regressed against the registered champion on the same val.bin "
                "(worse by more than ChampionPolicy.tolerance_abs nats and tolerance_se "
                "standard errors fails: WARN, ERROR with gate); on pass, alias `champion` "
                "moves to this model version.",
)
def eval_report_holds_against_champion(context: dg.AssetCheckExecutionContext,
                                       eval_report: dict, finegpt_paths: FineGPTPaths,
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
    uri = finegpt_paths.mlflow_tracking_uri()
    version = int(eval_report["model_version"])
    this = {k: eval_report[k] for k in ("val_loss", "val_loss_se", "tokens", "bins_dir")}
    this["bins_fingerprint"] = layout.bins_fingerprint(eval_report["bins_dir"])
    registry.record_eval(uri, version, this)
    mine = registry.version(uri, version)
    meta = {"val_loss": _round(this["val_loss"]), "val_loss_se": _round(this["val_loss_se"]),
            "model_version": dg.MetadataValue.int(version),
            "model_version_url": dg.MetadataValue.url(mine["url"]),
            "registered_model_url": dg.MetadataValue.url(registry.model_url(mine["name"])),
            "tolerance_se": champion_policy.tolerance_se,
            "tolerance_abs": champion_policy.tolerance_abs, "gate": champion_policy.gate}
    champ = registry.champion(uri)
    if champ is None or champ["version"] == version:
        if champ is None:
            registry.promote(uri, version)
        note = ("no champion yet: this version becomes the champion" if champ is None
                else "this version is the champion")
        context.log.info(f"champion: {mine['name']} v{version} ({note})")
        return dg.AssetCheckResult(passed=True, severity=severity, metadata={
            **meta, "champion_version": dg.MetadataValue.int(version), "promoted": champ is None,
            "note": note})
    try:
        theirs = champion_eval.numbers_on(uri, champ, eval_report["bins_dir"],
                                     champion_policy.resolved_device())
    except ValueError as exc:  # e.g. the champion's vocabulary does not cover these bins
        return dg.AssetCheckResult(passed=False, severity=severity, metadata={
            **meta, "champion_version": dg.MetadataValue.int(champ["version"]),
            "champion_url": dg.MetadataValue.url(champ["url"]), "promoted": False,
            "note": f"champion v{champ['version']} not comparable on these bins: {exc}; "
                    f"promote by hand with registry.promote if intended"})
    verdict = champion_eval.compare(this, theirs, champion_policy.tolerance_se,
                               champion_policy.tolerance_abs)
    passed = not verdict["regressed"]
    if passed:
        registry.promote(uri, version)
    context.log.info(
        f"champion check: v{version} val loss {this['val_loss']:.4f} vs champion "
        f"v{champ['version']} {theirs['val_loss']:.4f} ({theirs['source']}): "
        f"{verdict['diff_nats']:+.4f} nats, {verdict['diff_se']:+.2f} se -> "
        + (f"v{version} is the champion" if passed else "regressed, champion stays"))
    return dg.AssetCheckResult(passed=passed, severity=severity, metadata={
        **meta,
        "champion_version": dg.MetadataValue.int(champ["version"]),
        "champion_url": dg.MetadataValue.url(champ["url"]),
        "champion_val_loss": _round(theirs["val_loss"]),
        "champion_val_loss_se": _round(theirs["val_loss_se"]),
        "champion_numbers": theirs["source"],
        "diff_nats": _round(verdict["diff_nats"]),
        "diff_se": _round(verdict["diff_se"]),
        "promoted": passed,
    })
