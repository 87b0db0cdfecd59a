"""`training_config`: the hardware-sized training plan, from the tokenized bins' metadata.

The value is the plan file (`{"plan_version": 2, "config": ..., "report": ...}`) that
`finegpt_pipeline.plan.planner.build_plan` returns, as `finegpt plan --json` prints it."""


import dagster as dg

from assets import lineage
from assets.automation import WEEKLY_RETRAIN
from assets.metadata_format import OWNERS, float_value, home_path
from assets.resources import FineGPTHome
from assets.shard_inputs import ALL_SHARDS_IN, bins_location
from finegpt_pipeline.atomic import write_json
from finegpt_pipeline.config import TrainConfig
from finegpt_pipeline.plan.costs import DEFAULT_PRICE_PER_KWH
from finegpt_pipeline.hardware import GIB
from finegpt_pipeline.plan.planner import build_plan
from finegpt_pipeline.plan.inputs import tokens_from_meta
from finegpt_pipeline.plan.report import requirements_notes, requirements_report, requirements_rows


class PlanRequest(dg.Config):
    """What the user asks the planner for (the asset is named for what it returns: a plan whose
    `config` the trainer runs). Leave `hours` at 0 for the device's default budget (CPU: ~2 minutes)."""

    gpu: str = "detect"  # a catalog key (rtx4070, h100-sxm, cpu, ...) or "detect"
    hours: float = 0.0
    tokens_per_param: float = 0.0  # goal ratio instead of hours (0 = off)
    preset: str = ""
    overrides: list[str] = []  # "key=value" TrainConfig fields, honoured exactly
    price_per_kwh: float = DEFAULT_PRICE_PER_KWH  # US dollars per kWh
    # measure a few steps on this machine before finalising; unset: yes for a detected GPU
    calibrate: bool | None = None
    # measure this machine afresh: its matmul rate and calibration probes are otherwise kept
    # under FINEGPT_HOME/hardware and reused, so an unchanged re-run gives the same plan
    remeasure: bool = False


def flat_params(values: dict, prefix: str = "") -> dict[str, str]:
    """MLflow params: nested dicts flattened with dots; lists (warnings, verdicts, probes) skipped."""
    out = {}
    for key, value in values.items():
        if isinstance(value, (list, tuple)):
            continue
        if isinstance(value, dict):
            out.update(flat_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)[:500]
    return out


# Always in the `gpu` pool (one at a time, docker/dagster.yaml), as trained_checkpoint is: a
# pool is fixed when the definitions load, but whether a plan measures the machine (detection,
# calibration) is only known from the run's config; a measurement taken beside a running
# training would share its GPU (or CPU) and be kept for this machine's later plans.
@dg.asset(group_name="training", pool="gpu", kinds={"python", "mlflow"}, owners=OWNERS,
          code_version="1", automation_condition=WEEKLY_RETRAIN, ins={"tokenized_bins": ALL_SHARDS_IN},
          description="Model, batch and schedule sized for this hardware and the tokenized data of "
          "every materialized shard, with a requirements report (time, memory, energy).")
def training_config(context: dg.AssetExecutionContext, config: PlanRequest,
                    finegpt_home: FineGPTHome, tokenized_bins: dict) -> dg.Output:
    import mlflow

    with lineage.asset_run(context, finegpt_home) as run:
        bins_dir, meta = bins_location(context, tokenized_bins, finegpt_home)
        source = f"tokenized_bins ({bins_dir})"
        plan = build_plan(config.gpu, tokens_from_meta(meta, source),
                          calibration=config.calibrate,
                          bins_dir=str(bins_dir), remeasure=config.remeasure,
                          home=finegpt_home.home().root,
                          hours=config.hours or None,
                          tokens_per_param=config.tokens_per_param or None,
                          overrides=config.overrides, preset=config.preset or None,
                          price_per_kwh=config.price_per_kwh,
                          val_tokens=tokens_from_meta(meta, source, key="val_tokens"))
        cfg, rep = plan["config"], plan["report"]
        report = requirements_report(plan)
        path = finegpt_home.home().plan_file(plan)
        write_json(path, plan)
        for warning in rep["warnings"]:
            context.log.warning(warning)
        mlflow.log_params({**flat_params(cfg), **flat_params(rep)})
        mlflow.log_text(report, "requirements.md")
        mlflow.log_dict(plan, "plan.json")
        return run.output(
            plan,
            metadata={
                "plan_path": home_path(path, finegpt_home.home().root),
                "shards": dg.MetadataValue.int(meta.get("shards", 1)),
                "bins": home_path(bins_dir, finegpt_home.home().root),
                "hardware": rep["gpu_name"],
                "model": f"{cfg['n_layer']}L/{cfg['n_head']}H/{cfg['n_embd']}d block {cfg['block_size']}",
                "params": dg.MetadataValue.int(rep["params"]),
                "tokens_per_step": dg.MetadataValue.int(rep["tokens_per_step"]),
                "max_iters": dg.MetadataValue.int(cfg["max_iters"]),
                "est_hours": float_value(rep["est_hours"], 3),
                "est_peak_memory_gib": float_value(rep["peak_memory_bytes"] / GIB, 3),
                "memory_budget_gib": float_value(rep["memory_budget_bytes"] / GIB, 3),
                "epochs": float_value(rep["epochs"], 3),
                "energy_kwh": float_value(rep["energy_kwh"], 3),
                # a table shows inline in the UI; Markdown this long hides behind a button
                "requirements": requirements_table(plan),
                **({"requirements_notes": dg.MetadataValue.md("\n".join(notes).strip())}
                   if (notes := requirements_notes(plan)) else {}),
                "mlflow_run_id": run.run_id,
            },
        )


REQUIREMENTS_SCHEMA = dg.TableSchema(columns=[dg.TableColumn("requirement"), dg.TableColumn("value")])


def requirements_table(plan: dict) -> dg.TableMetadataValue:
    """The plan's requirements (`plan/report.requirements_rows`) as a table the UI shows inline,
    each value followed by its source in brackets (a third column would not fit the UI's ~400
    px); the same rows as Markdown, in three columns, are the run's requirements.md in MLflow."""
    return dg.MetadataValue.table(
        records=[dg.TableRecord({"requirement": name, "value": f"{value} [{source}]"})
                 for name, value, source in requirements_rows(plan)],
        schema=REQUIREMENTS_SCHEMA)


# Blocking: a plan that does not fit (or does not load as a TrainConfig) stops trained_checkpoint.
@dg.asset_check(asset=training_config, blocking=True, description="The plan fits its memory "
                "budget and round-trips through the trainer's TrainConfig; failing blocks training.")
def training_config_fits_budget(training_config: dict) -> dg.AssetCheckResult:
    rep = training_config["report"]
    problems = []
    if rep["peak_memory_bytes"] > rep["memory_budget_bytes"]:
        problems.append("peak memory exceeds the budget")
    try:
        TrainConfig.from_plan(training_config, source="training_config")
    except ValueError as exc:
        problems.append(str(exc))
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"problems": "; ".join(problems) or "none",
                  "headroom_gib": float_value((rep["memory_budget_bytes"] - rep["peak_memory_bytes"]) / GIB, 3),
                  "epochs": float_value(rep["epochs"], 3)},
    )
