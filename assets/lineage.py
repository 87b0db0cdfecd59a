"""Each asset's MLflow run, nested in its Dagster run's parent run: the code location's run
tree (the engine only tags runs, `finegpt_pipeline.tracking.store`).

One parent run per Dagster run (`parent_run`, found or created under a file lock under
FINEGPT_HOME, since Dagster's multiprocess executor runs steps in parallel processes) and one
nested run per asset (`nested_run`; the trainer's own run is `trained_checkpoint`'s). Every
run of a Dagster run carries `dagster.run_id`, `dagster.run_url` and a Markdown link to it as
its description.

    with lineage.asset_run(context, finegpt_home) as run:   # the nested run, active in mlflow
        ...
        return run.output(value, metadata={...}, data_version=...)

`output` adds `mlflow_run_url` (this asset's run in this Dagster run) to the metadata and
tags the run with the asset's data version (the one given, else the one Dagster computes from
the code version and the inputs' data versions). The run ends FINISHED with the asset, FAILED
when it raises; the parent's status follows its nested runs'. `trained_checkpoint` passes
`trainer_env()` to the trainer, whose own MLflow run is its nested run (`own_run=False`, then
`adopt(training_run_id)`). An asset whose body stays as it is takes `@lineage.tracked(...)`
under its `@dg.asset` instead: the same run around the whole body.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import dagster as dg

from assets import dagster_internals, metadata_format
from finegpt_pipeline.locks import wait_for
from finegpt_pipeline.tracking import datasets as mlflow_datasets, store as mlflow_store
from finegpt_pipeline.train.reporter import (ASSET_KEY_ENV, CODE_VERSION_ENV, DAGSTER_RUN_ID_ENV,
                                             PARENT_RUN_ENV)

TRAINING_RUN_TAG = "finegpt.training_run_id"  # on a nested run standing for a reused training
JOB_TAG = "dagster.job_name"
PARENT_STAGE = "dagster_run"  # the stage tag of a Dagster run's parent run
PARENT_LOCK_NAME = ".mlflow-parent-runs.lock"  # under FINEGPT_HOME
LOCK_WAIT_S = 120.0


def data_version_of(context: dg.AssetExecutionContext, given: dg.DataVersion | None) -> str:
    """The data version Dagster records for this materialization: the one the asset gives,
    else Dagster's logical version of the code version and the inputs' data versions."""
    if given is not None:
        return given.value
    return dagster_internals.logical_data_version(context)


def _experiment_id(client) -> str:
    return client.get_experiment_by_name(mlflow_store.EXPERIMENT).experiment_id


class _Held:
    """The parent-run lock, waited for (a parallel step holds it for a moment only)."""

    def __init__(self, path: Path):
        self.path, self.lock = Path(path), None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = wait_for(self.path, shared=False, wait_s=LOCK_WAIT_S,
                             fix="end that process or remove the lock file")
        return self

    def __exit__(self, *exc):
        self.lock.close()


def parent_run(client, dagster_run_id: str, job_name: str, lock_path: str | Path) -> str:
    """The Dagster run's parent MLflow run (its id), found by tag or created, under the lock."""
    with _Held(lock_path):
        found = client.search_runs(
            [_experiment_id(client)], max_results=1,
            filter_string=f"tags.`{mlflow_store.RUN_ID_TAG}` = '{dagster_run_id}' and "
                          f"tags.`{mlflow_store.STAGE_TAG}` = '{PARENT_STAGE}'")
        if found:
            return found[0].info.run_id
        tags = mlflow_store.run_tags(PARENT_STAGE, dagster_run_id)
        tags[JOB_TAG] = job_name
        # assets materialized outside a named job run in Dagster's implicit `__ASSET_JOB`
        shown = "assets" if job_name.startswith("__") else job_name
        tags[mlflow_store.NOTE_TAG] = mlflow_store.dagster_note(dagster_run_id, f"`{shown}`")
        run = client.create_run(_experiment_id(client), tags=tags,
                                run_name=mlflow_store.run_label(f"dagster {shown}", dagster_run_id))
        return run.info.run_id


def nested_run(client, parent_id: str, dagster_run_id: str, asset_key: str,
               code_version: str | None) -> str:
    """The asset's nested run in the Dagster run (its id): a retried step continues its run."""
    found = client.search_runs(
        [_experiment_id(client)], max_results=1,
        filter_string=f"tags.`{mlflow_store.PARENT_TAG}` = '{parent_id}' and "
                      f"tags.`{mlflow_store.ASSET_KEY_TAG}` = '{asset_key}'")
    if found:
        client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    tags = mlflow_store.run_tags(asset_key, dagster_run_id, asset_key, code_version, parent_id)
    run = client.create_run(_experiment_id(client), tags=tags,
                            run_name=mlflow_store.run_label(asset_key, dagster_run_id))
    return run.info.run_id


def children(client, parent_id: str) -> list:
    """The nested runs of a parent run."""
    return client.search_runs([_experiment_id(client)],
                              filter_string=f"tags.`{mlflow_store.PARENT_TAG}` = '{parent_id}'")


def settle_parent(client, parent_id: str, lock_path: str | Path) -> str:
    """The parent's status from its nested runs': RUNNING while one runs, else FAILED when one
    failed, else FINISHED (the end time is the last nested run's); returns it."""
    with _Held(lock_path):
        statuses = {run.info.status for run in children(client, parent_id)}
        if "RUNNING" in statuses or "SCHEDULED" in statuses:
            client.update_run(parent_id, status="RUNNING")
            return "RUNNING"
        status = "FAILED" if statuses & {"FAILED", "KILLED"} else "FINISHED"
        client.set_terminated(parent_id, status)
        return status


def log_headline(metrics: dict[str, float | None]) -> None:
    """The run's headline numbers on its Dagster run's parent MLflow run too, under the names
    the training run has them (`eval/val_loss`, `tokens_seen`, ...): one column serves both,
    and a runs table sorted by a metric (which lists runs flat) still shows each Dagster run.
    Called inside an asset's run (`tracked`, `asset_run`); a run with no parent logs nothing."""
    import mlflow

    active = mlflow.active_run()
    parent = active.data.tags.get(mlflow_store.PARENT_TAG) if active else None
    if parent:
        client = mlflow.MlflowClient()
        for key, value in metrics.items():
            if value is not None:
                client.log_metric(parent, key, float(value))


class AssetRun:
    """An asset's MLflow run in its Dagster run (`asset_run`)."""

    def __init__(self, context: dg.AssetExecutionContext, client, parent_id: str, lock):
        self.context, self.client, self.parent_id, self.lock = context, client, parent_id, lock
        self.asset_key = context.asset_key.to_user_string()
        self.code_version = context.assets_def.code_versions_by_key.get(context.asset_key)
        self.run_id: str | None = None
        self.active = False  # started here as mlflow's active run
        self.ends_here = True  # False for the trainer's run: the trainer ends it

    @property
    def url(self) -> str:
        return mlflow_store.run_url(self.run_id)

    def _nested(self) -> str:
        return nested_run(self.client, self.parent_id, self.context.run.run_id,
                                      self.asset_key, self.code_version)

    def trainer_env(self) -> dict[str, str]:
        """What the trainer's MLflow run needs to be this asset's nested run."""
        env = {DAGSTER_RUN_ID_ENV: self.context.run.run_id, ASSET_KEY_ENV: self.asset_key,
               PARENT_RUN_ENV: self.parent_id}
        if self.code_version:
            env[CODE_VERSION_ENV] = self.code_version
        return env

    def adopt(self, training_run_id: str | None) -> None:
        """The training run is this asset's run when this Dagster run started it; a reused
        one, or one an earlier Dagster run started and this one resumed, gets a nested run
        here that links to it (as does an untracked one, linking nothing)."""
        if training_run_id is None:
            self.run_id = self._nested()
            return
        training = self.client.get_run(training_run_id)
        if training.data.tags.get(mlflow_store.PARENT_TAG) == self.parent_id:
            self.run_id, self.ends_here = training_run_id, False
            return
        self.run_id = self._nested()
        link = f"[{training.info.run_name}]({mlflow_store.run_url(training_run_id)})"
        note = mlflow_store.dagster_note(self.context.run.run_id, f"`{self.asset_key}`")
        self.client.set_tag(self.run_id, TRAINING_RUN_TAG, training_run_id)
        self.client.set_tag(self.run_id, mlflow_store.NOTE_TAG,
                            f"{note}: the checkpoint of training run {link}")

    def log_inputs(self, inputs: list, context: str) -> None:
        """(dataset, tags) pairs (`finegpt_pipeline.tracking.datasets`) as this run's inputs."""
        mlflow_datasets.log_inputs(self.client, self.run_id, inputs, context)

    def output(self, value: Any, metadata: dict | None = None,
               data_version: dg.DataVersion | None = None) -> dg.Output:
        self.client.set_tag(self.run_id, mlflow_store.DATA_VERSION_TAG,
                            data_version_of(self.context, data_version))
        metadata = {**(metadata or {}),
                    "mlflow_run_url": metadata_format.link(f"MLflow run {self.run_id[:8]}", self.url)}
        return dg.Output(value, metadata=metadata, data_version=data_version)

    def _end(self, status: str) -> None:
        if self.active:
            import mlflow

            mlflow.end_run(status=status)
        elif status == "FAILED" or (self.ends_here and self.run_id):
            # a failed asset's run, the trainer's too (a killed trainer leaves it RUNNING)
            self.client.set_terminated(self.run_id or self._nested(), status)
        settle_parent(self.client, self.parent_id, self.lock)


@contextmanager
def asset_run(context: dg.AssetExecutionContext, finegpt_home,
              own_run: bool = True) -> Iterator[AssetRun]:
    """The asset's nested MLflow run (made mlflow's active run) under the Dagster run's
    parent run; `own_run=False` leaves making it to the trainer (`trainer_env`, `adopt`)."""
    import mlflow

    home = finegpt_home.home().root
    client = mlflow.MlflowClient(mlflow_store.configure(home))
    lock = home / PARENT_LOCK_NAME
    parent_id = parent_run(client, context.run.run_id, context.run.job_name, lock)
    run = AssetRun(context, client, parent_id, lock)
    if own_run:
        run.run_id = run._nested()
        mlflow.start_run(run_id=run.run_id)
        run.active = True
    try:
        yield run
    except BaseException:
        run._end("FAILED")
        raise
    run._end("FINISHED")


def tracked(bins_context: str | None = None, bins_location=None):
    """The asset's body inside `asset_run` (its `finegpt_home` resource names the store); the
    dg.Output it returns gets `output`'s metadata and data version tag. With `bins_context`,
    the bins `bins_location(context, tokenized_bins, finegpt_home)` finds for the
    `tokenized_bins` input (and their shard) are the run's datasets in that context."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(context, *args, **kwargs):
            with asset_run(context, kwargs["finegpt_home"]) as run:
                if bins_context:
                    bins_dir, _ = bins_location(context, kwargs["tokenized_bins"],
                                                kwargs["finegpt_home"])
                    run.log_inputs(mlflow_datasets.bins_inputs(bins_dir), bins_context)
                out = fn(context, *args, **kwargs)
                return run.output(out.value, metadata=dict(out.metadata),
                                  data_version=out.data_version)
        return wrapper
    return decorate
