"""The MLflow store every stage logs to: one place decides the tracking store, the
experiment (FINEGPT_EXPERIMENT, default `finegpt`), the links into the MLflow UI, and the tags
that tie a run to the git commit and, when an orchestrator started it, to its Dagster run
(`run_tags`: `dagster.run_id`, `dagster.run_url`, a Markdown link as its description, and
`mlflow.parentRunId` when the run is nested).

The engine tags runs but never groups them: the tree of one parent run per Dagster run and a
nested run per asset is the code location's (`assets/lineage.py`), its only user. A trainer
started by an asset is handed its parent's id (`train/reporter.py`'s environment) and nests its
own run under it with these same tags. (What a training run reports, and where, is
`train/reporter.py`; datasets are `tracking/datasets.py`.)
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

from finegpt_pipeline import paths
from finegpt_pipeline.tracking import ui as mlflow_ui

EXPERIMENT = os.environ.get("FINEGPT_EXPERIMENT", "finegpt")
# MLflow's UI opens an experiment in its GenAI mode (traces, evaluation runs) unless this tag
# says it trains models; with it, the runs table and the model-training views come first.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
# The UI's own mode switch (GenAI by default, kept per browser); a link that carries it opens
# the model-training views, whatever the browser last showed.
UI_MODE = "?workflowType=machine_learning"

# the lineage tags (README "Lineage")
STAGE_TAG = "finegpt.stage"
COMMIT_TAG = "mlflow.source.git.commit"
PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"  # the run's description; the UI renders its Markdown
RUN_ID_TAG = "dagster.run_id"
RUN_URL_TAG = "dagster.run_url"
ASSET_KEY_TAG = "dagster.asset_key"
CODE_VERSION_TAG = "dagster.code_version"
DATA_VERSION_TAG = "dagster.data_version"
# On a training run: its registered version and that version's aliases, e.g. "v2 champion"
# (evaluate/registry.label_runs keeps it current as the aliases move; a runs-table column)
MODEL_TAG = mlflow_ui.MODEL_TAG


def configure(root: str | Path | None = None) -> str:
    """Point MLflow at the project's store and experiment (FINEGPT_HOME `root`, else the
    environment's); returns the tracking URI.

    A default SQLite store keeps its artifacts under FINEGPT_HOME rather than the cwd. The
    `Default` experiment MLflow makes in a new store is deleted while it holds no runs, so the
    UI lists the project's experiment alone."""
    import mlflow

    uri = paths.mlflow_tracking_uri(Path(root) if root else None)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        location = paths.mlflow_artifact_root(Path(root) if root else None) \
            if uri.startswith("sqlite:") else None
        try:
            mlflow.create_experiment(EXPERIMENT, artifact_location=location,
                                     tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
        except mlflow.exceptions.MlflowException:  # another process made it meanwhile
            if mlflow.get_experiment_by_name(EXPERIMENT) is None:
                raise
    elif EXPERIMENT_KIND_TAG not in experiment.tags:  # made before the tag, or by hand
        mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG,
                                                 MODEL_TRAINING)
    experiment_id = mlflow.set_experiment(EXPERIMENT).experiment_id
    client = mlflow.MlflowClient()
    mlflow_ui.ensure_runs_view(client, experiment_id)  # the runs table's default columns
    drop_empty_default(client)
    return uri


def drop_empty_default(client) -> bool:
    """Delete (MLflow's soft delete) the `Default` experiment while it holds no runs."""
    from mlflow.exceptions import MlflowException

    default = client.get_experiment_by_name("Default")
    if default is None or default.lifecycle_stage != "active" or EXPERIMENT == "Default":
        return False
    from mlflow.entities import ViewType

    if client.search_runs([default.experiment_id], run_view_type=ViewType.ALL, max_results=1):
        return False
    try:
        client.delete_experiment(default.experiment_id)
    except MlflowException:  # deleted by a parallel process first
        pass
    return True


@functools.lru_cache(maxsize=None)
def git_commit(cwd: str | Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def dagster_ui_base() -> str:
    """The Dagster UI's base URL: FINEGPT_DAGSTER_UI, else `dagster dev`'s port 3000."""
    return os.environ.get("FINEGPT_DAGSTER_UI", "http://127.0.0.1:3000")


def dagster_run_url(run_id: str) -> str:
    """Where a Dagster run shows in the Dagster UI."""
    return f"{dagster_ui_base()}/runs/{run_id}"


def dagster_note(dagster_run_id: str, what: str = "") -> str:
    """A run's description: a Markdown link to its Dagster run (MLflow renders it clickable)."""
    link = f"[Dagster run {dagster_run_id[:8]}]({dagster_run_url(dagster_run_id)})"
    return f"{what} in {link}" if what else link


def run_tags(stage: str, dagster_run_id: str | None = None, asset_key: str | None = None,
             code_version: str | None = None, parent_run_id: str | None = None) -> dict[str, str]:
    """The tags of a run of `stage`; those of a Dagster run's asset when its ids are given."""
    tags = {STAGE_TAG: stage, COMMIT_TAG: git_commit()}
    if dagster_run_id:
        tags[RUN_ID_TAG] = dagster_run_id
        tags[RUN_URL_TAG] = dagster_run_url(dagster_run_id)
        tags[NOTE_TAG] = dagster_note(dagster_run_id, f"`{asset_key}`" if asset_key else "")
    if asset_key:
        tags[ASSET_KEY_TAG] = asset_key
    if code_version:
        tags[CODE_VERSION_TAG] = code_version
    if parent_run_id:
        tags[PARENT_TAG] = parent_run_id
    return tags


def run_label(what: str, dagster_run_id: str | None = None) -> str:
    """A run's name: what it is, when it started (UTC), and the Dagster run, e.g.
    `raw_shard 2026-12-01 10:40 (1a2b3c4d)`."""
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    return f"{what} {started}" + (f" ({dagster_run_id[:8]})" if dagster_run_id else "")


# ---------------------------------------------------------------- links

def run_url(run_id: str) -> str:
    """Where the run shows in the MLflow UI (`mlflow ui --backend-store-uri URI`, port 5000),
    in its model-training views: MLflow 3's UI otherwise opens in its GenAI mode."""
    import mlflow

    exp = mlflow.get_run(run_id).info.experiment_id
    return f"{ui_base()}/#/experiments/{exp}/runs/{run_id}{UI_MODE}"


def experiment_url(experiment_id: str) -> str:
    """The experiment's runs table, in the project's view (val loss, bpb, tokens columns)."""
    return mlflow_ui.experiment_url(ui_base(), experiment_id, UI_MODE)


def ui_base() -> str:
    """The MLflow UI's base URL: FINEGPT_MLFLOW_UI, else `mlflow ui`'s default port 5000."""
    return os.environ.get("FINEGPT_MLFLOW_UI", "http://127.0.0.1:5000")


def artifact_url(run_id: str, path: str) -> str:
    """The file itself as the MLflow server serves it (an image a web page can show)."""
    return f"{ui_base()}/get-artifact?path={path}&run_uuid={run_id}"


# ---------------------------------------------------------------- artifacts

def local_artifact_dir(artifact_uri: str) -> Path | None:
    """The directory of a run's artifacts when the artifact store is this machine's disk
    (a path or file:// URI), else None (a server, a bucket)."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or len(parsed.scheme) == 1:  # a plain path (or a Windows drive)
        return Path(artifact_uri)
    return None


def link_or_copy(path: str | Path, target_dir: str | Path) -> str:
    """Put file `path` into local directory `target_dir` under its own name, stored once on
    disk: a hard link (a copy across filesystems), placed by rename; returns "linked" or
    "copied". The file must only ever be replaced by rename, never written in place (ckpt.pt
    is): then a link keeps the bytes it was made from."""
    path, target_dir = Path(path), Path(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / path.name
    tmp = target.with_name(f".{path.name}.link-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:  # another filesystem, or links not allowed: store a copy
        shutil.copyfile(path, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        return "copied"
    os.replace(tmp, target)
    return "linked"


def log_artifact_once(client, run_id: str, path: str | Path) -> str:
    """Log a file as an artifact of the run, stored once on disk where the artifact store is
    local (`link_or_copy`); returns "linked" or "copied"."""
    target_dir = local_artifact_dir(client.get_run(run_id).info.artifact_uri)
    if target_dir is not None:
        return link_or_copy(path, target_dir)
    client.log_artifact(run_id, str(path))
    return "copied"
