"""Every private Dagster API this code location relies on, in one place: each has no public
equivalent in the Dagster release pinned here (1.13). tests/assets/test_dagster_internals.py
calls each (tests/assets/test_code_location.py runs a launch), so a Dagster upgrade that moves
one fails there first, loudly, not mid-run.
"""

from __future__ import annotations

import dagster as dg

# The UI lists a job's runs by this hidden tag (repository@location). `dagster job execute -m`
# runs in-process and records no code location, so each job carries it and CLI runs show
# under the same job as runs launched from the UI.
REPOSITORY_TAG = ".dagster/repository"

# The materialization tag holding its data version (raw_shard's: the shard's full sha256).
DATA_VERSION_TAG = "dagster/data_version"


def repository_tags(location: str) -> dict[str, str]:
    return {REPOSITORY_TAG: f"__repository__@{location}", "dagster/code_location": location}


def workspace_job_origin(workspace_yaml: str, location: str, repository: str, job: str):
    """The origin a run of `job` records when launched from the UI of a webserver loading
    `workspace_yaml`: the Overview timeline places runs by it, and Re-execute warns about a run
    without it. `dagster job execute` records none."""
    from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    origins = {origin.location_name: origin
               for origin in WorkspaceFileTarget(paths=[workspace_yaml]).create_origins()}
    if location not in origins:
        raise ValueError(f"{workspace_yaml}: no code location named {location!r} "
                         f"(it names {sorted(origins)})")
    return RemoteJobOrigin(RemoteRepositoryOrigin(origins[location], repository), job)


def module_job(module: str, attribute: str, job: str):
    """`job` of the Definitions at `module.attribute`, as `dagster job execute -m module` finds
    it: a reconstructable job each step's process loads again."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    return ReconstructableRepository.for_module(module, attribute).get_reconstructable_job(job)


def execute_in_process(recon_job, instance: dg.DagsterInstance, run_config: dict,
                       tags: dict[str, str], op_selection: list[str] | None,
                       origin) -> dg.DagsterRun:
    """Run `recon_job` here, step by step as its executor says, exactly as `dagster job execute`
    does (dagster._core.execution.api._logged_execute_job), but filed under `origin`."""
    from dagster._core.execution.api import (_check_execute_job_args,
                                             _job_with_repository_load_data, execute_run)

    job, load_data = _job_with_repository_load_data(recon_job)
    job, run_config, tags, resolved, selection = _check_execute_job_args(
        job_arg=job, run_config=run_config, tags=tags, op_selection=op_selection)
    run = instance.create_run_for_job(
        job_def=job.get_definition(), run_config=run_config, tags=tags,
        resolved_op_selection=resolved, op_selection=selection, remote_job_origin=origin,
        job_code_origin=job.get_python_origin(), repository_load_data=load_data)
    execute_run(job, run, instance, raise_on_error=False)
    return run


def failed_checks(instance: dg.DagsterInstance, checks: list[dg.AssetCheckKey],
                  partition: str) -> list[str]:
    """Names of `checks` whose latest execution for `partition` failed (no public API reads a
    check's latest result per partition)."""
    from dagster._core.event_api import PartitionKeyFilter
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        checks, partition_filter=PartitionKeyFilter(key=partition))
    return sorted(check.name for check, record in latest.items()
                  if record.status == AssetCheckExecutionRecordStatus.FAILED)


def logical_data_version(context: dg.AssetExecutionContext) -> str:
    """Dagster's logical data version of this materialization: of the code version and the
    inputs' data versions (a partitioned input: a hash of its partitions' versions), read from
    the step's own cache, as Dagster will record it (no public API computes it)."""
    from dagster._core.definitions.data_version import (DEFAULT_DATA_VERSION,
                                                        compute_logical_data_version)

    key = context.asset_key
    code_version = context.assets_def.code_versions_by_key.get(key) or context.run.run_id
    step = context.op_execution_context._step_execution_context
    inputs = {}
    for parent in context.assets_def.asset_deps[key]:
        info = step.maybe_fetch_and_get_input_asset_version_info(parent)
        inputs[parent] = (info.data_version if info and info.data_version
                          else DEFAULT_DATA_VERSION)
    return compute_logical_data_version(code_version, inputs).value


def pickled_io_manager() -> type:
    """The class behind Dagster's filesystem IO manager (`dg.FilesystemIOManager` builds it but
    is a factory, not a class to subclass); assets/io_manager.py subclasses it to drop the
    `path` row it adds to every materialization."""
    from dagster._core.storage.fs_io_manager import PickledObjectFilesystemIOManager

    return PickledObjectFilesystemIOManager
