"""`trained_checkpoint`: launches the trainer as its own process through Dagster Pipes.

The process runs exactly the command a user or a cluster would run (`python -m
finegpt_pipeline.train ...`, under torchrun when several GPUs are visible); its log lines and
final materialization stream back into the Dagster run, its metrics go live to MLflow. A run
directory that already holds the finished run for the same plan, bins and launch settings is
returned as it is (metadata `reused`), without launching the trainer.
"""

import os
import time
from pathlib import Path

import dagster as dg

from assets import lineage
from assets.launchers import TrainingLauncher
from assets.automation import AFTER_UPSTREAM
from assets.metadata_format import OWNERS, float_value, home_path, link
from assets.resources import FineGPTHome
from assets.shard_inputs import ALL_SHARDS_IN, bins_location
from finegpt_pipeline.tracking import store as mlflow_store
from finegpt_pipeline.train import curve_forecast, run_dir
from finegpt_pipeline.atomic import write_json
from finegpt_pipeline.config import plan_parts
from finegpt_pipeline.hardware import GIB
from finegpt_pipeline.train.loss_curve import LOSS_CURVE_NAME, curve_points, write_loss_curve

TRAINER_RETRIES = dg.RetryPolicy(max_retries=2, delay=5)
MAX_RUNTIME_TAG = "dagster/max_runtime"  # enforced by run monitoring (docker/dagster.yaml)


class TrainingLaunchConfig(dg.Config):
    max_iters: int = 0  # 0: the plan's max_iters
    overrides: list[str] = []  # `key=value` strings, as `finegpt train --set`
    fresh: bool = False  # True: new run directory instead of resuming one with the same inputs
    gpus: int = -1  # -1: every visible GPU (torchrun when more than one)


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@dg.asset(
    group_name="training",
    pool="gpu",
    automation_condition=AFTER_UPSTREAM,  # after each new plan (weekly, assets/automation.py)
    # a trainer that died (OOM kill, preemption, SIGKILL) is retried within the run: the
    # retry resumes from the last checkpoint into the same MLflow run
    retry_policy=TRAINER_RETRIES,
    kinds={"pytorch", "mlflow"},
    owners=OWNERS,
    code_version="1",
    ins={"tokenized_bins": ALL_SHARDS_IN},
    description="A GPT trained under the plan on the tokenized bins of every materialized shard "
                "(windows drawn in proportion to each shard's size); nanoGPT-format ckpt.pt.",
)
def trained_checkpoint(
    context: dg.AssetExecutionContext,
    config: TrainingLaunchConfig,
    finegpt_home: FineGPTHome,
    training_launcher: TrainingLauncher,
    training_config: dict,
    tokenized_bins: dict,
) -> dg.Output[dict]:
    with lineage.asset_run(context, finegpt_home, own_run=False) as lineage_run:
        return _train(context, config, finegpt_home, training_launcher, training_config,
                      tokenized_bins, lineage_run)


def _train(context: dg.AssetExecutionContext, config: TrainingLaunchConfig,
           finegpt_home: FineGPTHome, launcher: TrainingLauncher, training_config: dict,
           tokenized_bins: dict, lineage_run: lineage.AssetRun) -> dg.Output[dict]:
    bins_dir, _ = bins_location(context, tokenized_bins, finegpt_home)
    key = run_dir.run_key(training_config, bins_dir, config.overrides, config.max_iters)
    if config.fresh:
        key = f"{key}-{context.run.run_id[:8]}"
    out_dir = finegpt_home.home().trained_runs / key
    finished = run_dir.finished_run(out_dir)
    if finished is not None:
        context.log.info(f"reusing the finished run in {out_dir} ({finished['steps']} steps): "
                         "same plan, bins and launch settings")
        _log_closing_summary(context, finished)
        return _output(context, finegpt_home, finished, out_dir, {"reused": dg.MetadataValue.bool(True)},
                       dg.DataVersion(f"{out_dir.name}@{finished['steps']}"), lineage_run, bins_dir)
    # the run directory's one plan file: the trainer reads it as --plan, then rewrites it with
    # the config it trains (launch overrides applied) beside the plan's report
    plan_path = out_dir / run_dir.PLAN_NAME
    write_json(plan_path, training_config)
    # a checkpoint is continued; without one, whatever an interrupted start left is replaced
    resume = (out_dir / run_dir.CKPT_NAME).exists()

    gpus = launcher.processes(config.gpus, visible_gpus() if config.gpus < 0 and
                              launcher.backend == "local" else 0)
    extra = [f"--max-iters={config.max_iters}"] if config.max_iters > 0 else []
    extra += [] if resume else ["--overwrite"]
    for item in config.overrides:
        extra += ["--set", item]
    command = run_dir.train_command(bins_dir, plan_path, out_dir, resume, gpus, extra,
                                    python=launcher.interpreter())
    home = finegpt_home.home().root
    env = {
        "FINEGPT_HOME": str(home),
        "MLFLOW_TRACKING_URI": finegpt_home.mlflow_tracking_uri(),
        # the trainer's MLflow run is this asset's nested run in the Dagster run's parent run
        **lineage_run.trainer_env(),
        "MLFLOW_DISABLE_TELEMETRY": os.environ.get("MLFLOW_DISABLE_TELEMETRY", "true"),
    }
    context.log.info(("resuming: " if resume else "launching: ") + " ".join(command))
    limit_runtime(context, training_config)
    result = launcher.run(context, command, env, cwd=str(Path(__file__).resolve().parents[1]),
                          home=home, processes=gpus)
    materialization = result.get_materialize_result()
    summary = run_dir.read_summary(out_dir)
    if summary is None:
        raise dg.Failure(description=f"{out_dir}: the trainer exited without a readable "
                                     f"{run_dir.SUMMARY_NAME}; see its log above")
    # the metadata is built from summary.json (as for a reused run), not from the trainer's
    # streamed materialization, so both read alike: rounded floats, the plot, units
    metadata = {"reused": dg.MetadataValue.bool(False)}  # the command is in the run's log
    _log_closing_summary(context, summary)
    return _output(context, finegpt_home, summary, out_dir, metadata, materialization.data_version,
                   lineage_run, bins_dir)


RUNTIME_MARGIN, RUNTIME_SLACK_S = 2.0, 600  # the plan's estimate x2, plus 10 minutes


def limit_runtime(context: dg.AssetExecutionContext, plan: dict) -> int | None:
    """Tag the run `dagster/max_runtime` from the plan's estimated hours (x RUNTIME_MARGIN +
    RUNTIME_SLACK_S, counted from the run's start), so run monitoring fails a training that
    hangs; a limit the run was launched with is kept. Returns the limit in seconds."""
    tags = context.run.tags
    if MAX_RUNTIME_TAG in tags:
        return int(float(tags[MAX_RUNTIME_TAG]))
    hours = plan_parts(plan, "training_config")[1].get("est_hours")
    if not isinstance(hours, (int, float)) or hours <= 0:
        return None
    record = context.instance.get_run_record_by_id(context.run.run_id)
    started = record.start_time if record and record.start_time else time.time()
    limit = int(time.time() - started + hours * 3600 * RUNTIME_MARGIN + RUNTIME_SLACK_S)
    context.instance.add_run_tags(context.run.run_id, {MAX_RUNTIME_TAG: str(limit)})
    context.log.info(f"run time limit {limit:,} s ({MAX_RUNTIME_TAG}: the plan's "
                     f"{hours * 3600:,.0f} s x{RUNTIME_MARGIN:g} + {RUNTIME_SLACK_S} s)")
    return limit


def dagster_run_url(run_id: str) -> str:
    """Where a run shows in the Dagster UI (`dagster dev`, port 3000 unless FINEGPT_DAGSTER_UI)."""
    return mlflow_store.dagster_run_url(run_id)


def _log_closing_summary(context: dg.AssetExecutionContext, summary: dict) -> None:
    """The lines a user reads at the end of a run: what was trained, how well, where to look."""
    def loss(key: str) -> str:
        value = summary.get(key)
        return f"{value:.4f}" if isinstance(value, (int, float)) else "n/a"

    context.log.info(
        f"trained_checkpoint: {summary.get('checkpoint')} ({summary.get('steps')} steps, "
        f"{summary.get('tokens_seen') or 0:,} tokens, {summary.get('params') or 0:,} params); "
        f"val loss {loss('final_val_loss')} (best {loss('best_val_loss')})")
    context.log.info(f"MLflow run: {summary.get('mlflow_run_url') or 'not tracked'}")
    context.log.info(f"Dagster run: {dagster_run_url(context.run.run_id)}")


def _output(context: dg.AssetExecutionContext, finegpt_home: FineGPTHome, summary: dict,
            out_dir: Path, metadata: dict, data_version, lineage_run: lineage.AssetRun,
            bins_dir: Path) -> dg.Output[dict]:
    """The asset's value and metadata from a run's summary.json, launched now or reused;
    `bins_dir` is what it trained on (one shard's bins, or the bins set of several)."""
    value = {k: summary.get(k) for k in (
        "steps", "tokens_seen", "best_val_loss", "final_val_loss", "checkpoint",
        "mlflow_run_id", "mlflow_run_url", "params")}
    value.update(run_dir=str(out_dir), bins_dir=str(bins_dir))
    value.update(model_version=None, model_version_url=None)
    if summary.get("mlflow_run_id") and summary.get("checkpoint"):  # the registry's candidate
        from finegpt_pipeline.evaluate import registry

        version = registry.register_candidate(finegpt_home.mlflow_tracking_uri(),
                                              summary["mlflow_run_id"], summary["checkpoint"])
        value.update(model_version=version["version"], model_version_url=version["url"])
        metadata = {**metadata, "model_version": dg.MetadataValue.int(version["version"]),
                    "model_version_url": link(f"model finegpt v{version['version']}", version["url"])}
    png = write_loss_curve(out_dir)
    home = finegpt_home.home().root
    metadata = {**metadata, "run_dir": home_path(out_dir, home), "bins": home_path(bins_dir, home),
                **summary_metadata(summary, home)}  # the plot: loss_curve.png in run_dir
    metadata["loss_curve"] = dg.MetadataValue.md(
        _loss_curve_md(context, finegpt_home.mlflow_tracking_uri(), summary, png))
    metadata["val_loss_by_tokens"] = dg.MetadataValue.md(val_loss_table(summary))
    forecasts = curve_forecast.forecast_md(summary.get("curve_forecasts"))  # '' for older runs
    if forecasts:  # what the in-run forecast said at 25/50/75 % of the steps, against the end
        metadata["val_loss_forecasts"] = dg.MetadataValue.md(forecasts)
    from finegpt_pipeline.evaluate import champion  # torch: only when an asset runs
    from finegpt_pipeline.evaluate.render import diff_text

    diff = champion.config_diff(finegpt_home.mlflow_tracking_uri(), run_dir.read_config(out_dir),
                                bins_dir)
    if diff and diff["version"] != value["model_version"]:
        metadata["vs_champion"] = dg.MetadataValue.text(diff_text(diff))
    lineage_run.adopt(summary.get("mlflow_run_id"))
    if summary.get("mlflow_run_url") and lineage_run.run_id != summary.get("mlflow_run_id"):
        # reused (or resumed from an earlier Dagster run's start): where the checkpoint is
        metadata["training_run_url"] = run_link(summary)
    return lineage_run.output(value, metadata=metadata, data_version=data_version)


def summary_metadata(summary: dict, home: Path) -> dict:
    """What a user reads of a finished run: counts as ints, floats rounded, memory in GiB
    where it was measured (CUDA), never a 0 standing for "not measured"; paths under `home`
    (FINEGPT_HOME) relative to it."""
    meta = {}
    for key in ("steps", "tokens_seen", "params"):
        if summary.get(key) is not None:
            meta[key] = dg.MetadataValue.int(int(summary[key]))
    for key, digits in (("best_val_loss", 4), ("final_val_loss", 4), ("wall_time_s", 4),
                        ("tokens_per_s", 4), ("mfu", 3)):
        if isinstance(summary.get(key), (int, float)):
            meta[key] = float_value(summary[key], digits)
    if summary.get("checkpoint"):
        meta["checkpoint"] = home_path(summary["checkpoint"], home)
    device = str(summary.get("device") or "?")
    if device.startswith("cuda") and summary.get("peak_memory_bytes"):
        meta["peak_memory"] = dg.MetadataValue.text(f"{summary['peak_memory_bytes'] / GIB:.2f} GiB")
        meta["peak_memory_bytes"] = dg.MetadataValue.int(int(summary["peak_memory_bytes"]))
    else:
        meta["peak_memory"] = dg.MetadataValue.text(f"not measured on {device.split(':')[0]}")
    for key in ("device", "dtype", "world_size"):
        if summary.get(key) is not None:
            meta[key] = dg.MetadataValue.text(str(summary[key]))
    if summary.get("mlflow_run_url"):
        meta["mlflow_run_url"] = run_link(summary)
    return meta


def run_link(summary: dict) -> dg.MetadataValue:
    """The training run's MLflow page as a short link."""
    return link(f"MLflow run {str(summary.get('mlflow_run_id') or '')[:8]}".rstrip(),
                summary["mlflow_run_url"])


VAL_TABLE_ROWS = 8  # the UI shows short Markdown inline


def val_loss_table(summary: dict) -> str:
    """Val loss against tokens seen (up to VAL_TABLE_ROWS evaluations, the last included)."""
    points = curve_points(summary.get("val_history") or [], "val_loss")
    if not points:
        return "_no evaluations recorded_"
    n = len(points)
    picks = sorted({round(i * (n - 1) / (VAL_TABLE_ROWS - 1)) for i in range(VAL_TABLE_ROWS)})
    rows = "\n".join(f"| {int(points[i][0]):,} | {points[i][1]:.4f} |" for i in picks)
    return "| tokens seen | val loss |\n|---|---|\n" + rows


def _loss_curve_md(context: dg.AssetExecutionContext, tracking_uri: str, summary: dict,
                   png: Path) -> str:
    """The loss-curve image by URL (the UI inlines short Markdown only, never a data URI):
    the PNG is logged to the run's MLflow run and served by the MLflow UI."""
    run_id = summary.get("mlflow_run_id")
    if not run_id:
        return f"_no MLflow run to serve the plot; it is at `{png}`_"
    try:
        import mlflow

        mlflow.MlflowClient(tracking_uri=tracking_uri).log_artifact(run_id, str(png))
    except Exception as exc:  # the plot is a nicety: report it, keep the checkpoint
        context.log.warning(f"loss curve not logged to MLflow run {run_id} ({type(exc).__name__}: {exc})")
        return f"_not logged to MLflow; the plot is at `{png}`_"
    return (f"![loss curve]({mlflow_store.artifact_url(run_id, LOSS_CURVE_NAME)})\n\n"
            f"(served by the MLflow UI at {mlflow_store.ui_base()})")
