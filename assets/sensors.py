"""Sensors: rerun the pipeline when the local shard file changes."""

from __future__ import annotations

import dagster as dg

from assets.jobs import pipeline_job
from assets.resources import FineGPTPaths
from finegpt_pipeline.shard import is_hub_source, local_source_path, sha256_file

RAW_SHARD = dg.AssetKey("raw_shard")


@dg.sensor(
    job=pipeline_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Requests a pipeline run when the local shard file (the finegpt_paths resource's "
                "shard, else FINEGPT_SHARD) is replaced or modified; switched on, it requests "
                "nothing for the shard raw_shard last materialized.",
)
def shard_changed_sensor(context: dg.SensorEvaluationContext, finegpt_paths: FineGPTPaths):
    source = finegpt_paths.shard_source()  # the shard raw_shard will read
    if is_hub_source(source):
        return dg.SkipReason(f"{source} is a hub file; this sensor watches local shards only")
    path = local_source_path(source)
    if not path.is_file():
        return dg.SkipReason(f"{path}: shard file not found")
    stat = path.stat()
    # size + mtime identify a version cheaply; raw_shard hashes the content itself.
    version = f"{stat.st_size}-{stat.st_mtime_ns}"
    if context.cursor == version:
        return dg.SkipReason(f"{path} unchanged")
    first_tick = context.cursor is None
    context.update_cursor(version)
    if first_tick and _last_materialized_sha256(context) == sha256_file(path):
        # switched on beside an up-to-date pipeline: hash once, then watch size + mtime
        return dg.SkipReason(f"{path} is the shard raw_shard last materialized")
    return dg.RunRequest(run_key=f"{path}:{version}")


def _last_materialized_sha256(context: dg.SensorEvaluationContext) -> str | None:
    """raw_shard's content hash at its latest materialization (its data version)."""
    try:
        instance = context.instance
    except dg.DagsterInvariantViolationError:  # evaluated without an instance (a unit test)
        return None
    record = instance.get_latest_materialization_event(RAW_SHARD)
    materialization = record.asset_materialization if record else None
    entry = materialization.metadata.get("sha256") if materialization else None
    return getattr(entry, "value", None)
