"""Every private Dagster API this code location relies on, in one place: each has no public
equivalent in the Dagster release pinned here (1.13). tests/assets/test_dagster_internals.py
calls each, so a Dagster upgrade that moves one fails there first, loudly, not mid-run.
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
