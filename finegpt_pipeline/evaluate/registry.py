"""The model registry: each trained checkpoint becomes a logged model of its training MLflow
run, registered as a version of one model (`finegpt`, env FINEGPT_MODEL_NAME) with alias
`candidate`; alias `champion` marks the version that passed the regression check.

The logged model's artifact is the run's `ckpt.pt` itself, plus MLmodel and its environment
files (`registered_model`): no second, pickled copy of the weights. Where the artifact store is
this machine's disk the model's `ckpt.pt` is a hard link to the run directory's (as the run's
own `ckpt.pt` artifact is), so the bytes are on disk once; a remote store gets one upload.
The version's source is that logged model (`models:/m-<id>`), not a copy of it.

`mlflow.pyfunc.load_model("models:/finegpt@champion")` generates text (`predict`) and hands
out the project's `GPT` module (`get_raw_model()`); `load` returns that module (eval mode, on
the device asked), also for versions registered before as pickled `mlflow.pytorch` modules.
`finegpt_pipeline.evaluate.sample.generate` samples from it as it does from a `ckpt.pt`.
Loading needs this package importable (MLmodel names its loader module).

A version carries tags: `finegpt.iter_num` and `finegpt.checkpoint` (what was registered) and,
once the champion check measured it, `finegpt.eval.*` (its val loss, se, tokens and the
fingerprint of the bins it was measured on), so a later check compares on the same data.
The champion rule itself is `finegpt_pipeline.evaluate.champion`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from finegpt_pipeline.evaluate import registered_model
from finegpt_pipeline.train import checkpoint
from finegpt_pipeline.tracking import models as mlflow_models
from finegpt_pipeline.tracking import store as mlflow_store

MODEL_NAME_ENV = "FINEGPT_MODEL_NAME"
DEFAULT_MODEL_NAME = "finegpt"
CANDIDATE = "candidate"
CHAMPION = "champion"
ARTIFACT_NAME = "model"  # the logged model's name inside its run
ITER_TAG = "finegpt.iter_num"
CKPT_TAG = "finegpt.checkpoint"
EVAL_PREFIX = "finegpt.eval."
EVAL_KEYS = ("val_loss", "val_loss_se", "val_bpb", "tokens", "bins_fingerprint", "bins_dir")


def model_name() -> str:
    return os.environ.get(MODEL_NAME_ENV) or DEFAULT_MODEL_NAME


def model_url(name: str) -> str:
    """The registered model's page (its versions and aliases) in the MLflow UI."""
    return f"{mlflow_store.ui_base()}/#/models/{quote(name, safe='')}{mlflow_store.UI_MODE}"


def version_url(name: str, version: int | str) -> str:
    """The registered version's page in the MLflow UI (route `#/models/<name>/versions/<v>`)."""
    return (f"{mlflow_store.ui_base()}/#/models/{quote(name, safe='')}/versions/{int(version)}"
            f"{mlflow_store.UI_MODE}")


def _info(mv) -> dict[str, Any]:
    """A model version as the pipeline passes it on (JSON-ready)."""
    return {"name": mv.name, "version": int(mv.version),
            "model_uri": f"models:/{mv.name}/{int(mv.version)}",
            "url": version_url(mv.name, mv.version), "run_id": mv.run_id,
            "aliases": sorted(getattr(mv, "aliases", None) or []), "tags": dict(mv.tags or {})}


def _client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _pip_requirements() -> list[str]:
    """Stated, not inferred: inference loads the model in a subprocess (slow) and may consult
    the package index; the model needs torch and this package (its loader and GPT class)."""
    from importlib import metadata

    import torch

    reqs = [f"torch=={torch.__version__.split('+')[0]}"]
    try:
        reqs.append(f"finegpt-pipeline=={metadata.version('finegpt-pipeline')}")
    except metadata.PackageNotFoundError:
        reqs.append("finegpt-pipeline")
    return reqs


def _versions_of_run(client, name: str, run_id: str) -> list:
    from mlflow.exceptions import MlflowException

    try:
        return list(client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"))
    except MlflowException:
        return []


def _ensure_registered_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(
                name, description="FineGPT checkpoints; alias `champion` is the one in use.")
        except MlflowException as exc:  # created meanwhile by another process
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise


def _log_model(client, run_id: str, iter_num: int, ckpt_path: Path):
    """The checkpoint as a logged model of the training run (MLflow 3's LoggedModel): its
    `ckpt.pt` placed first (linked where the store is local, else uploaded), then MLmodel and
    the environment files, which mark the model ready."""
    from mlflow.models import Model

    run = client.get_run(run_id)
    logged = client.create_logged_model(
        run.info.experiment_id, name=ARTIFACT_NAME, source_run_id=run_id,
        tags={ITER_TAG: str(iter_num), CKPT_TAG: str(ckpt_path)})
    target = mlflow_store.local_artifact_dir(logged.artifact_location)
    if target is not None:
        mlflow_store.link_or_copy(ckpt_path, target)
    else:
        client.log_model_artifact(logged.model_id, str(ckpt_path))
    return Model.log(None, registered_model, name=ARTIFACT_NAME, model_id=logged.model_id,
                     run_id=run_id, step=iter_num, pip_requirements=_pip_requirements(),
                     iter_num=iter_num)


def register_candidate(tracking_uri: str, run_id: str, ckpt_path: str | Path) -> dict[str, Any]:
    """Log `ckpt_path`'s model into MLflow run `run_id`, register it under `model_name()` and
    point alias `candidate` at it; returns {"name", "version", "model_uri", "url", ...}.

    Idempotent: a version of the same run at the same step is returned (alias set again), not
    registered twice."""
    ckpt_path = Path(ckpt_path).resolve()
    ckpt = checkpoint.load(ckpt_path)
    iter_num = int(ckpt.get("iter_num", 0))
    client, name = _client(tracking_uri), model_name()
    for mv in _versions_of_run(client, name, run_id):
        if (mv.tags or {}).get(ITER_TAG) == str(iter_num):
            client.set_registered_model_alias(name, CANDIDATE, mv.version)
            label_runs(client, name)
            return _info(client.get_model_version(name, mv.version))
    with mlflow_models.fluent_store(tracking_uri):
        logged = _log_model(client, run_id, iter_num, ckpt_path)
    _ensure_registered_model(client, name)
    mv = client.create_model_version(
        name, logged.model_uri, run_id=run_id, model_id=logged.model_id,
        tags={ITER_TAG: str(iter_num), CKPT_TAG: str(ckpt_path)},
        description=f"{ckpt_path} at step {iter_num}")
    client.set_registered_model_alias(name, CANDIDATE, mv.version)
    label_runs(client, name)
    return _info(client.get_model_version(name, mv.version))


def label_runs(client, name: str) -> None:
    """Tag each version's training run with the version and its aliases (`MODEL_TAG`: "v2
    champion", "v3 candidate", "v1"), so the runs table and the reports mark the champion and
    the candidate; only changed tags are written."""
    roles: dict[str, list[str]] = {}
    for alias, v in (client.get_registered_model(name).aliases or {}).items():
        roles.setdefault(str(v), []).append(alias)
    for mv in client.search_model_versions(f"name = '{name}'"):
        if not mv.run_id:
            continue
        label = " ".join([f"v{mv.version}", *sorted(roles.get(str(mv.version), []))])
        if client.get_run(mv.run_id).data.tags.get(mlflow_store.MODEL_TAG) != label:
            client.set_tag(mv.run_id, mlflow_store.MODEL_TAG, label)


def version_of_run(tracking_uri: str, run_id: str, iter_num: int) -> dict[str, Any] | None:
    """The version registered from training run `run_id` at step `iter_num`, or None."""
    client, name = _client(tracking_uri), model_name()
    for mv in _versions_of_run(client, name, run_id):
        if (mv.tags or {}).get(ITER_TAG) == str(int(iter_num)):
            return _info(client.get_model_version(name, mv.version))
    return None


def version(tracking_uri: str, version: int | str) -> dict[str, Any]:
    return _info(_client(tracking_uri).get_model_version(model_name(), str(int(version))))


def champion(tracking_uri: str) -> dict[str, Any] | None:
    """The version alias `champion` points at, or None (no such alias or model yet)."""
    from mlflow.exceptions import MlflowException

    try:
        mv = _client(tracking_uri).get_model_version_by_alias(model_name(), CHAMPION)
    except MlflowException:
        return None
    return _info(mv)


def promote(tracking_uri: str, version: int | str) -> dict[str, Any]:
    """Move alias `champion` to `version` (which must exist); returns that version."""
    client, name = _client(tracking_uri), model_name()
    client.get_model_version(name, str(int(version)))  # a missing version fails here, named
    client.set_registered_model_alias(name, CHAMPION, str(int(version)))
    label_runs(client, name)
    return _info(client.get_model_version(name, str(int(version))))


def load(tracking_uri: str, model_uri: str, device: str = "cpu"):
    """The GPT module `model_uri` (e.g. `models:/finegpt@champion`) names in this store."""
    return mlflow_models.load_gpt(
        tracking_uri, model_uri, device,
        hint=f"a trained_checkpoint registers versions of {model_name()!r}, the champion "
             f"check sets alias {CHAMPION!r}")


def describe(tracking_uri: str, version: int | str, text: str) -> None:
    """The version's description, as the registry's Versions table shows it (the verdict)."""
    _client(tracking_uri).update_model_version(model_name(), str(int(version)), description=text)


def record_eval(tracking_uri: str, version: int | str, numbers: dict[str, Any]) -> None:
    """Keep on the version what it measured and on which bins (`finegpt.eval.*` tags)."""
    client, name = _client(tracking_uri), model_name()
    for key in EVAL_KEYS:
        if numbers.get(key) is not None:
            client.set_model_version_tag(name, str(int(version)), EVAL_PREFIX + key,
                                         str(numbers[key]))


def recorded_eval(info: dict[str, Any]) -> dict[str, Any] | None:
    """The `finegpt.eval.*` numbers of a version's info, or None when it was never measured."""
    tags = info.get("tags") or {}
    if EVAL_PREFIX + "val_loss" not in tags or EVAL_PREFIX + "bins_fingerprint" not in tags:
        return None
    out: dict[str, Any] = {k: tags.get(EVAL_PREFIX + k) for k in EVAL_KEYS}
    for key in ("val_loss", "val_loss_se", "val_bpb"):
        out[key] = float(out[key]) if out[key] is not None else math.nan
    out["tokens"] = int(out["tokens"]) if out["tokens"] is not None else None
    return out
