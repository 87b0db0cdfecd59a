"""The MLflow store every stage logs to: one place decides the tracking store, the
experiment and the tags that tie a run to its Dagster run and git commit. (What a training
run reports, and where, is `train_reporter`.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from finegpt_pipeline import paths

EXPERIMENT = os.environ.get("FINEGPT_EXPERIMENT", "finegpt")
# MLflow's UI opens an experiment in its GenAI mode (traces, evaluation runs) unless this tag
# says it trains models; with it, the runs table and the model-training views come first.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
# The UI's own mode switch (GenAI by default, kept per browser); a link that carries it opens
# the model-training views, whatever the browser last showed.
UI_MODE = "?workflowType=machine_learning"


def configure() -> str:
    """Point MLflow at the project's store and experiment; returns the tracking URI.

    A default SQLite store keeps its artifacts under FINEGPT_HOME rather than the cwd."""
    import mlflow

    uri = paths.mlflow_tracking_uri()
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        location = paths.mlflow_artifact_root() if uri.startswith("sqlite:") else None
        mlflow.create_experiment(EXPERIMENT, artifact_location=location,
                                 tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
    elif EXPERIMENT_KIND_TAG not in experiment.tags:  # made before the tag, or by hand
        mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG,
                                                 MODEL_TRAINING)
    mlflow.set_experiment(EXPERIMENT)
    return uri


def git_commit(cwd: str | Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_tags(stage: str, dagster_run_id: str | None = None, asset_key: str | None = None) -> dict[str, str]:
    tags = {"finegpt.stage": stage, "mlflow.source.git.commit": git_commit()}
    if dagster_run_id:
        tags["dagster.run_id"] = dagster_run_id
    if asset_key:
        tags["dagster.asset_key"] = asset_key
    return tags


def run_url(run_id: str) -> str:
    """Where the run shows in the MLflow UI (`mlflow ui --backend-store-uri URI`, port 5000),
    in its model-training views: MLflow 3's UI otherwise opens in its GenAI mode."""
    import mlflow

    exp = mlflow.get_run(run_id).info.experiment_id
    return f"{ui_base()}/#/experiments/{exp}/runs/{run_id}{UI_MODE}"


def ui_base() -> str:
    """The MLflow UI's base URL: FINEGPT_MLFLOW_UI, else `mlflow ui`'s default port 5000."""
    return os.environ.get("FINEGPT_MLFLOW_UI", "http://127.0.0.1:5000")


def artifact_url(run_id: str, path: str) -> str:
    """The file itself as the MLflow server serves it (an image a web page can show)."""
    return f"{ui_base()}/get-artifact?path={path}&run_uuid={run_id}"
