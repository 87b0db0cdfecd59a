"""The champion: the registered version that is the best model so far, the verdict of a new
model against it, and the rule that moves alias `champion`. The eval report, `finegpt eval
--promote` and the `eval_report_holds_against_champion` asset check all call this module.

Numbers: a version's val loss on a val.bin is the one recorded when it was measured on these
very bins (its `finegpt.eval.*` tags, same `layout.bins_fingerprint`), else it is measured now
(`measure.measure_on_bins`, as eval_report measures) and recorded for next time.

Verdict (`compare`): delta = new - champion val loss on the same val.bin (nats; negative is
better) and its standard error sqrt(se_new^2 + se_champion^2) (the se's as if independent:
the same tokens make the losses correlated, so this overstates the se and errs towards "no
different"). "better" or "worse" when |delta| exceeds both `tolerance_abs` nats and
`tolerance_se` standard errors, else "no different".

Promotion (`decide`):
- no champion yet: the version becomes champion only if it beats the unigram baseline;
- a champion: alias `champion` moves only to a version at least as good (delta <= 0), so
  quality cannot drift down by a tolerance per promotion;
- alias `candidate` always marks the newest version (`registry.register_candidate`).
The regression check fails when the verdict is "worse".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from finegpt_pipeline import layout
from finegpt_pipeline.evaluate import registry
from finegpt_pipeline.evaluate.measure import measure_on_bins

BETTER, SAME, WORSE = "better", "no different", "worse"


@dataclass(frozen=True)
class Policy:
    """When a difference from the champion counts (both bounds must be exceeded)."""

    tolerance_se: float = 2.0  # standard errors of the difference
    tolerance_abs: float = 0.02  # nats

    def rule(self) -> str:
        return (f"better/worse: |delta| > {self.tolerance_abs:g} nats and > "
                f"{self.tolerance_se:g} se of delta, else no different; champion moves only to "
                "a model at least as good (delta <= 0); the first champion must beat the "
                "unigram baseline")


# what tells two training runs apart, as the report and trained_checkpoint show it
DIFF_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "micro_batch", "grad_accum",
             "max_iters", "learning_rate", "optimizer", "lr_schedule", "weight_decay")


def _tokens(config: dict[str, Any]) -> str | None:
    try:
        return str(int(config["max_iters"]) * int(config["micro_batch"])
                   * int(config["grad_accum"]) * int(config["block_size"]))
    except (KeyError, TypeError, ValueError):
        return None


def config_diff(tracking_uri: str | None, config: dict[str, Any],
                bins_dir: str | Path | None = None) -> dict[str, Any]:
    """How a training config differs from the champion's (its MLflow run's params): {version,
    differs: {key: [this, champion]}} over model, batch, steps, tokens, learning rate,
    optimizer, schedule and data (the bins); {} without an MLflow store or a champion."""
    champ = registry.champion(tracking_uri) if tracking_uri else None
    if champ is None or not champ.get("run_id"):
        return {}
    import mlflow

    params = mlflow.MlflowClient(tracking_uri).get_run(champ["run_id"]).data.params
    differs = {}
    for key in DIFF_KEYS:
        mine, theirs = config.get(key), params.get(key)
        if mine is not None and theirs is not None and str(mine) != str(theirs):
            differs[key] = [str(mine), str(theirs)]
    if _tokens(config) and _tokens(params) and _tokens(config) != _tokens(params):
        differs["tokens"] = [_tokens(config), _tokens(params)]
    recorded = registry.recorded_eval(champ) or {}
    if bins_dir is not None and recorded.get("bins_dir") and \
            str(Path(bins_dir).resolve()) != recorded["bins_dir"]:
        differs["data"] = [str(Path(bins_dir).resolve()), recorded["bins_dir"]]
    return {"version": champ["version"], "differs": differs}


def measure(model, bins_dir: str | Path, device: str = "cpu") -> dict[str, Any]:
    """`model`'s val loss, se and bpb on every token of `bins_dir`'s val.bin (a bins set's: its
    members' together), as eval_report measures it."""
    numbers, _, _ = measure_on_bins(model, bins_dir, device)
    return {**{k: numbers[k] for k in ("val_loss", "val_loss_se", "val_bpb", "tokens")},
            "bins_fingerprint": layout.bins_fingerprint(bins_dir),
            "bins_dir": str(Path(bins_dir).resolve())}


def numbers_on(tracking_uri: str, info: dict[str, Any], bins_dir: str | Path,
               device: str = "cpu") -> dict[str, Any]:
    """Version `info`'s val loss and se on `bins_dir`'s val.bin: as recorded when it was
    measured on these very bins, else measured now (the registered model, loaded through its
    models:/ URI) and recorded for next time. `source` says which."""
    recorded = registry.recorded_eval(info)
    if recorded is not None and recorded["bins_fingerprint"] == layout.bins_fingerprint(bins_dir):
        return {**recorded, "source": "recorded on the same bins"}
    model = registry.load(tracking_uri, info["model_uri"], device)
    numbers = measure(model, bins_dir, device)
    registry.record_eval(tracking_uri, info["version"], numbers)
    return {**numbers, "source": "evaluated now on these bins"}


def compare(this: dict[str, Any], champ: dict[str, Any],
            policy: Policy = Policy()) -> dict[str, Any]:
    """The verdict of the module docstring, with its numbers."""
    delta = float(this["val_loss"]) - float(champ["val_loss"])
    se = math.sqrt(float(this["val_loss_se"]) ** 2 + float(champ["val_loss_se"]) ** 2)
    in_se = abs(delta) / se if math.isfinite(se) and se > 0 else math.inf
    beyond = abs(delta) > policy.tolerance_abs and in_se > policy.tolerance_se
    verdict = (BETTER if delta < 0 else WORSE) if beyond else SAME
    bpb = [x.get("val_bpb") for x in (this, champ)]
    delta_bpb = (float(bpb[0]) - float(bpb[1])
                 if all(isinstance(b, (int, float)) and math.isfinite(b) for b in bpb) else None)
    return {"delta": delta, "delta_se": se, "delta_in_se": delta / se if se > 0 else math.nan,
            "delta_bpb": delta_bpb, "verdict": verdict, "regressed": verdict == WORSE}


def against_champion(tracking_uri: str | None, this: dict[str, Any], bins_dir: str | Path,
                     device: str = "cpu", version: int | None = None,
                     policy: Policy = Policy()) -> dict[str, Any]:
    """The report's `champion` block: this model (registered as `version`, when it is) against
    the current champion on the same val.bin: {version, val_loss, val_loss_se, val_bpb, delta,
    delta_se, delta_bpb, verdict, source, rule}. `verdict` is one of better / no different /
    worse, or says why there is none (untracked, no champion yet, this is the champion, the
    champion does not fit these bins)."""
    block: dict[str, Any] = {"version": None, "rule": policy.rule(), **asdict(policy)}
    if not tracking_uri:
        return {**block, "verdict": "not compared (no MLflow store)"}
    champ = registry.champion(tracking_uri)
    if champ is None:
        return {**block, "verdict": "no champion yet"}
    block.update(version=champ["version"], url=champ["url"])
    if version is not None and int(version) == champ["version"]:
        return {**block, "verdict": "is the champion"}
    try:
        theirs = numbers_on(tracking_uri, champ, bins_dir, device)
    except ValueError as exc:  # e.g. the champion's vocabulary does not cover these bins
        return {**block, "verdict": f"not comparable on these bins: {exc}"}
    block.update({k: theirs.get(k) for k in ("val_loss", "val_loss_se", "val_bpb", "source")})
    return {**block, **compare(this, theirs, policy)}


def decide(tracking_uri: str, version: int, report: dict[str, Any], device: str = "cpu",
           policy: Policy = Policy()) -> dict[str, Any]:
    """`_decide`, then the decision's note as the version's description in the registry."""
    decision = _decide(tracking_uri, version, report, device, policy)
    registry.describe(tracking_uri, version, decision["note"])
    return decision


def _decide(tracking_uri: str, version: int, report: dict[str, Any], device: str,
            policy: Policy) -> dict[str, Any]:
    """Apply the promotion rule to registered `version`, whose eval report is `report` (its
    numbers, `beats_unigram`, `bins_dir` and, when made, its `champion` block): records the
    version's numbers on these bins, moves alias `champion` when the rule says so, and returns
    {promoted, champion_version, regressed, verdict, note, comparison}."""
    this = {k: report.get(k) for k in ("val_loss", "val_loss_se", "val_bpb", "tokens",
                                       "bins_dir")}
    this["bins_fingerprint"] = layout.bins_fingerprint(report["bins_dir"])
    registry.record_eval(tracking_uri, version, this)
    block = report.get("champion") or {}
    champ = registry.champion(tracking_uri)
    if champ is None or champ["version"] == version:
        promote = champ is None and bool(report["beats_unigram"])
        if promote:
            registry.promote(tracking_uri, version)
        note = ("this version is the champion" if champ is not None else
                "no champion yet: this version beats the unigram baseline and becomes the "
                "champion" if promote else
                "no champion yet, and this version does not beat the unigram baseline: not "
                "promoted")
        return {"promoted": promote, "champion_version": version if promote or champ else None,
                "regressed": False, "verdict": block.get("verdict", "no champion yet"),
                "note": note, "comparison": block}
    if block.get("version") != champ["version"] or "delta" not in block:
        block = against_champion(tracking_uri, this, report["bins_dir"], device, version, policy)
    if "delta" not in block:  # not comparable: the champion stays
        return {"promoted": False, "champion_version": champ["version"], "regressed": False,
                "verdict": block["verdict"], "comparison": block,
                "note": f"champion v{champ['version']} stays ({block['verdict']}); promote by "
                        "hand with `registry.promote` if intended"}
    promote = block["delta"] <= 0
    if promote:
        registry.promote(tracking_uri, version)
    note = (f"v{version} {block['verdict']} than champion v{champ['version']} "
            f"({block['delta']:+.4f} ± {block['delta_se']:.4f} nats): "
            + (f"v{version} is the champion" if promote else
               f"champion v{champ['version']} stays (it moves only to a model at least as good)"))
    return {"promoted": promote, "champion_version": version if promote else champ["version"],
            "regressed": bool(block["regressed"]), "verdict": block["verdict"], "note": note,
            "comparison": block}
