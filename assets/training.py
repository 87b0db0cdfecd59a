"""`trained_checkpoint`: launches the trainer as its own process through Dagster Pipes.

The process runs exactly the command a user or a cluster would run (`python -m
finegpt_pipeline.train ...`, under torchrun when several GPUs are visible); its log lines and
final materialization stream back into the Dagster run, its metrics go live to MLflow. A run
directory that already holds the finished run for the same plan, bins and launch settings is
returned as it is (metadata `reused`), without launching the trainer.
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import dagster as dg

from assets.resources import FineGPTPaths
from finegpt_pipeline import layout, run_dir
from finegpt_pipeline.atomic import write_json
from finegpt_pipeline.train_reporter import ASSET_KEY_ENV, DAGSTER_RUN_ID_ENV

TRAIN_MODULE = "finegpt_pipeline.train"


class TrainingLaunchConfig(dg.Config):
    max_iters: int = 0  # 0: the plan's max_iters
    overrides: list[str] = []  # `key=value` strings, as `finegpt train --set`
    fresh: bool = False  # True: new run directory instead of resuming one with the same inputs
    gpus: int = -1  # -1: every visible GPU (torchrun when more than one)


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def train_command(bins_dir: Path, plan_path: Path, out_dir: Path, resume: bool,
                  processes: int, extra: list[str] | None = None) -> list[str]:
    """The trainer's command line: one process, or one per GPU under torchrun."""
    args = ["-m", TRAIN_MODULE, "--bins", str(bins_dir), "--plan", str(plan_path),
            "--out", str(out_dir), *(["--resume"] if resume else []), *(extra or [])]
    if processes > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={processes}", *args]
    return [sys.executable, *args]


def run_key(plan: dict, bins_dir: Path, launch: TrainingLaunchConfig) -> str:
    """Same plan, bins and launch settings -> same run directory, so a retried run resumes;
    changing any of them (an override, max_iters) starts a run of its own."""
    blob = json.dumps({"plan": plan, "bins": layout.bins_fingerprint(bins_dir),
                       "overrides": list(launch.overrides), "max_iters": launch.max_iters},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dg.asset(
    group_name="training",
    pool="gpu",
    kinds={"pytorch", "mlflow"},
    description="A GPT trained on the tokenized bins under the plan; nanoGPT-format ckpt.pt.",
)
def trained_checkpoint(
    context: dg.AssetExecutionContext,
    config: TrainingLaunchConfig,
    finegpt_paths: FineGPTPaths,
    training_config: dict,
    tokenized_bins: dict,
) -> dg.Output[dict]:
    if "dir" not in tokenized_bins:
        raise ValueError(f"tokenized_bins: expected a dict with 'dir', got keys {sorted(tokenized_bins)}")
    bins_dir = Path(tokenized_bins["dir"])
    key = run_key(training_config, bins_dir, config)
    if config.fresh:
        key = f"{key}-{context.run_id[:8]}"
    out_dir = finegpt_paths.trained_runs_dir() / key
    finished = run_dir.finished_run(out_dir)
    if finished is not None:
        context.log.info(f"reusing the finished run in {out_dir} ({finished['steps']} steps): "
                         "same plan, bins and launch settings")
        _log_closing_summary(context, finished)
        return _output(finished, out_dir, {"reused": dg.MetadataValue.bool(True)},
                       data_version=dg.DataVersion(f"{out_dir.name}@{finished['steps']}"))
    # the run directory's one plan file: the trainer reads it as --plan, then rewrites it with
    # the config it trains (launch overrides applied) beside the plan's report
    plan_path = out_dir / run_dir.PLAN_NAME
    write_json(plan_path, training_config)
    # a checkpoint is continued; without one, whatever an interrupted start left is replaced
    resume = (out_dir / run_dir.CKPT_NAME).exists()

    gpus = visible_gpus() if config.gpus < 0 else config.gpus
    extra = [f"--max-iters={config.max_iters}"] if config.max_iters > 0 else []
    extra += [] if resume else ["--overwrite"]
    for item in config.overrides:
        extra += ["--set", item]
    command = train_command(bins_dir, plan_path, out_dir, resume, gpus, extra)
    home = finegpt_paths.home_dir()
    env = {
        "FINEGPT_HOME": str(home),
        "MLFLOW_TRACKING_URI": finegpt_paths.mlflow_tracking_uri(),
        DAGSTER_RUN_ID_ENV: context.run_id,
        ASSET_KEY_ENV: context.asset_key.to_user_string(),
        "MLFLOW_DISABLE_TELEMETRY": os.environ.get("MLFLOW_DISABLE_TELEMETRY", "true"),
    }
    context.log.info(("resuming: " if resume else "launching: ") + " ".join(command))
    result = dg.PipesSubprocessClient().run(command=command, context=context, env=env,
                                            cwd=str(Path(__file__).resolve().parents[1]))
    materialization = result.get_materialize_result()
    summary = json.loads((out_dir / run_dir.SUMMARY_NAME).read_text())
    metadata = {**(materialization.metadata or {}), "reused": dg.MetadataValue.bool(False),
                "command": dg.MetadataValue.text(" ".join(command))}
    _log_closing_summary(context, summary)
    return _output(summary, out_dir, metadata, materialization.data_version)


def dagster_run_url(run_id: str) -> str:
    """Where a run shows in the Dagster UI (`dagster dev`, port 3000 unless FINEGPT_DAGSTER_UI)."""
    return f"{os.environ.get('FINEGPT_DAGSTER_UI', 'http://127.0.0.1:3000')}/runs/{run_id}"


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
    context.log.info(f"Dagster run: {dagster_run_url(context.run_id)}")


def _output(summary: dict, out_dir: Path, metadata: dict, data_version) -> dg.Output[dict]:
    """The asset's value and metadata from a run's summary.json, launched now or reused."""
    value = {k: summary.get(k) for k in (
        "steps", "tokens_seen", "best_val_loss", "final_val_loss", "checkpoint",
        "mlflow_run_id", "mlflow_run_url", "params")}
    value["run_dir"] = str(out_dir)
    metadata = {**metadata, "run_dir": dg.MetadataValue.path(str(out_dir))}
    for key in ("steps", "tokens_seen", "best_val_loss", "final_val_loss", "checkpoint"):
        if key not in metadata and summary.get(key) is not None:
            metadata[key] = summary[key]
    if summary.get("mlflow_run_url"):
        metadata["mlflow_run_url"] = dg.MetadataValue.url(summary["mlflow_run_url"])
    return dg.Output(value, metadata=metadata, data_version=data_version)
