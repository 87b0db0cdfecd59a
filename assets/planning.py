"""`training_config`: the hardware-sized training plan, from the tokenized bins' metadata."""

import hashlib
import json

import dagster as dg

from assets.resources import FineGPTPaths
from finegpt_pipeline import tracking
from finegpt_pipeline.atomic import write_json
from finegpt_pipeline.calibrate import calibrate_plan, wants_calibration
from finegpt_pipeline.claims import check_claims, format_verdicts
from finegpt_pipeline.plan import DEFAULT_PRICE_PER_KWH, make_plan, tokens_from_meta
from finegpt_pipeline.plan_report import requirements_report


class PlanConfig(dg.Config):
    """Planner inputs. Leave `hours` at 0 for the device's default budget (CPU: ~2 minutes)."""

    gpu: str = "detect"  # a catalog key (rtx4070, h100-sxm, cpu, ...) or "detect"
    hours: float = 0.0
    tokens_per_param: float = 0.0  # goal ratio instead of hours (0 = off)
    preset: str = ""
    overrides: list[str] = []  # "key=value" TrainConfig fields, honoured exactly
    price_per_kwh: float = DEFAULT_PRICE_PER_KWH
    # measure a few steps on this machine before finalising; unset: yes for a detected GPU
    calibrate: bool | None = None
    # measure this machine afresh: its matmul rate and calibration probes are otherwise kept
    # under FINEGPT_HOME/hardware and reused, so an unchanged re-run gives the same plan
    remeasure: bool = False


def flat_params(plan: dict, prefix: str = "") -> dict[str, str]:
    """MLflow params: nested dicts flattened with dots; lists and the long report keys skipped."""
    out = {}
    for key, value in plan.items():
        if key in ("warnings", "calibration", "claim_verdicts", "claims"):
            continue
        if isinstance(value, dict):
            out.update(flat_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)[:500]
    return out


def plan_digest(plan: dict) -> str:
    return hashlib.sha256(json.dumps(plan, sort_keys=True, default=str).encode()).hexdigest()[:12]


# Always in the `gpu` pool (one at a time, docker/dagster.yaml), as trained_checkpoint is: a
# pool is fixed when the definitions load, but whether a plan measures the machine (detection,
# calibration) is only known from the run's config; a measurement taken beside a running
# training would share its GPU (or CPU) and be kept for this machine's later plans.
@dg.asset(group_name="training", pool="gpu", description="Model, batch and schedule sized for "
          "this hardware and the tokenized data, with a requirements report (time, memory, energy).")
def training_config(context: dg.AssetExecutionContext, config: PlanConfig,
                    finegpt_paths: FineGPTPaths, tokenized_bins: dict) -> dg.Output:
    import mlflow

    source = f"tokenized_bins ({tokenized_bins.get('dir', '?')})"
    plan = make_plan(config.gpu, tokens_from_meta(tokenized_bins, source), hours=config.hours or None,
                     tokens_per_param=config.tokens_per_param or None, overrides=config.overrides,
                     preset=config.preset or None, price_per_kwh=config.price_per_kwh,
                     val_tokens=tokens_from_meta(tokenized_bins, source, key="val_tokens"),
                     remeasure=config.remeasure)
    if wants_calibration(config.calibrate, plan):
        plan = calibrate_plan(plan, remeasure=config.remeasure)
    if plan.get("claims"):
        plan["claim_verdicts"] = check_claims(plan, plan["claims"])
    plan["bins_dir"] = str(tokenized_bins.get("dir", ""))
    report = requirements_report(plan)
    if plan.get("claim_verdicts"):
        report += "\nSeed claims:\n\n" + format_verdicts(plan["claim_verdicts"]) + "\n"
    path = finegpt_paths.home_dir() / "plans" / f"plan-{plan_digest(plan)}.json"
    write_json(path, plan)
    for warning in plan["warnings"]:
        context.log.warning(warning)

    tracking.configure()
    with mlflow.start_run(run_name="training_config",
                          tags=tracking.run_tags("training_config", context.run.run_id, "training_config")) as run:
        mlflow.log_params(flat_params(plan))
        mlflow.log_text(report, "requirements.md")
        mlflow.log_dict(plan, "plan.json")
    return dg.Output(
        plan,
        metadata={
            "plan_path": dg.MetadataValue.path(str(path)),
            "hardware": plan["gpu_name"],
            "model": f"{plan['n_layer']}L/{plan['n_head']}H/{plan['n_embd']}d block {plan['block_size']}",
            "params": dg.MetadataValue.int(plan["params"]),
            "tokens_per_step": dg.MetadataValue.int(plan["tokens_per_step"]),
            "max_iters": dg.MetadataValue.int(plan["max_iters"]),
            "est_hours": dg.MetadataValue.float(plan["est_hours"]),
            "peak_memory_gib": dg.MetadataValue.float(plan["peak_memory_bytes"] / 2**30),
            "memory_budget_gib": dg.MetadataValue.float(plan["memory_budget_bytes"] / 2**30),
            "epochs": dg.MetadataValue.float(plan["epochs"]),
            "energy_kwh": dg.MetadataValue.float(plan["energy_kwh"]),
            "requirements": dg.MetadataValue.md(report),
            "mlflow_run_id": run.info.run_id,
            "mlflow_run_url": dg.MetadataValue.url(tracking.run_url(run.info.run_id)),
        },
    )


@dg.asset_check(asset=training_config, description="The plan fits its memory budget and "
                "round-trips through the trainer's TrainConfig.")
def training_config_fits_budget(training_config: dict) -> dg.AssetCheckResult:
    from finegpt_pipeline.config import TrainConfig

    problems = []
    if training_config["peak_memory_bytes"] > training_config["memory_budget_bytes"]:
        problems.append("peak memory exceeds the budget")
    try:
        TrainConfig.from_dict(training_config, source="training_config")
    except ValueError as exc:
        problems.append(str(exc))
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"problems": "; ".join(problems) or "none",
                  "headroom_gib": (training_config["memory_budget_bytes"]
                                   - training_config["peak_memory_bytes"]) / 2**30,
                  "epochs": training_config["epochs"]},
    )
