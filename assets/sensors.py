"""Sensors: rerun the pipeline when the local shard file changes."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from assets.jobs import pipeline_job
from finegpt_pipeline import paths


@dg.sensor(
    job=pipeline_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Requests a pipeline run when the local FINEGPT_SHARD file is replaced or modified.",
)
def shard_changed_sensor(context: dg.SensorEvaluationContext):
    source = paths.shard_source()
    if source.startswith("hf://"):
        return dg.SkipReason(f"{source} is a hub file; this sensor watches local shards only")
    path = Path(source)
    if not path.is_file():
        return dg.SkipReason(f"{path}: shard file not found")
    stat = os.stat(path)
    # size + mtime identify a version cheaply; raw_shard hashes the content itself.
    version = f"{stat.st_size}-{stat.st_mtime_ns}"
    if context.cursor == version:
        return dg.SkipReason(f"{path} unchanged")
    context.update_cursor(version)
    return dg.RunRequest(run_key=f"{path}:{version}")
