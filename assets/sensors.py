"""Sensors over the `shards` partitions (both off until switched on):

- `incoming_shards_sensor`: a parquet file dropped into the incoming directory
  ($FINEGPT_HOME/incoming, or the `finegpt_home` resource's `incoming`) becomes a partition
  and a `data_job` run of its own. A file that is not a usable shard is reported in the tick's
  log, once per version of the file, and never registered; a file still being written (modified
  in the last SETTLE_S seconds) waits for the next tick.
- `shard_changed_sensor`: a registered local shard whose file changed since `raw_shard` last
  read it gets a `pipeline_job` run for its partition.

Neither requests anything for a shard that is already registered and unchanged, so switching
one on beside an up-to-date pipeline starts no run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import dagster as dg

from assets.dagster_internals import DATA_VERSION_TAG
from assets.jobs import data_job, pipeline_job
from assets.resources import FineGPTHome
from assets.partitions import SHARDS, partition_key, problem, registered_key, source_of
from finegpt_pipeline.data.shard import ShardError, file_version, is_hub_source, sha256_file

RAW_SHARD = dg.AssetKey("raw_shard")
SETTLE_S = 10  # a file modified more recently may still be being copied in


@dg.sensor(
    job=data_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Registers each new parquet file in the incoming directory ($FINEGPT_HOME/incoming) "
                "as a `shards` partition and requests its data_job run; bad files are reported "
                "in the tick's log and never registered.",
)
def incoming_shards_sensor(context: dg.SensorEvaluationContext, finegpt_home: FineGPTHome):
    folder = finegpt_home.incoming_dir()
    if not folder.is_dir():
        return dg.SkipReason(f"{folder}: no such directory; create it and copy parquet shards in")
    reported = json.loads(context.cursor) if context.cursor else {}  # path -> version found bad
    known = set(context.instance.get_dynamic_partitions(SHARDS.name))
    new, bad, settling = [], [], []
    for path in sorted(folder.glob("*.parquet")):
        if registered_key(path) in known:
            continue
        name, version = str(path), file_version(path)
        if time.time() - path.stat().st_mtime < SETTLE_S:
            settling.append(path.name)
        elif reported.get(name) != version:  # a bad file is reported once per version
            error = problem(path)
            if error:
                bad.append(error)
                reported[name] = version
            else:
                reported.pop(name, None)
                new.append(partition_key(path))  # its short name, registered
    for line in bad:
        context.log.error(f"not registered: {line}")
    context.update_cursor(json.dumps(reported, sort_keys=True))
    if not new:
        parts = [f"{len(bad)} bad file(s) reported"] if bad else []
        parts += [f"waiting for {', '.join(settling)} to settle"] if settling else []
        return dg.SkipReason(f"{folder}: no new shard" + (f" ({'; '.join(parts)})" if parts else ""))
    context.log.info(f"registering {len(new)} shard(s): {', '.join(new)}")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=key, run_key=f"incoming:{key}") for key in new],
        dynamic_partitions_requests=[SHARDS.build_add_request(new)],
    )


@dg.sensor(
    job=pipeline_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Requests a pipeline run for a registered local shard whose file was replaced "
                "or modified since raw_shard last read it; switched on, it requests nothing "
                "for unchanged shards.",
)
def shard_changed_sensor(context: dg.SensorEvaluationContext):
    seen = json.loads(context.cursor) if context.cursor else {}  # key -> file version
    requests = []
    for key in context.instance.get_dynamic_partitions(SHARDS.name):
        try:
            source = source_of(key)
        except ShardError:
            continue  # an unknown name fails its next run, saying how to register it
        if is_hub_source(source) or not Path(source).is_file():
            continue  # hub files do not change; a missing file fails its next run
        version = file_version(source)
        if seen.get(key) == version:
            continue
        first_sight = key not in seen
        seen[key] = version
        if first_sight and _unchanged_since_read(context, key, source, version):
            continue
        requests.append(dg.RunRequest(partition_key=key, run_key=f"{key}:{version}"))
    context.update_cursor(json.dumps(seen, sort_keys=True))
    return requests or dg.SkipReason("no registered local shard changed")


def _unchanged_since_read(context: dg.SensorEvaluationContext, key: str, source: str,
                          version: str) -> bool:
    """Is the file what raw_shard's latest materialization of this partition read (or never
    materialized, which the registering side runs)? The file version it recorded, else the
    content hash."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RAW_SHARD, asset_partitions=[key]), limit=1).records
    materialization = records[0].asset_materialization if records else None
    if materialization is None:
        return True
    meta = materialization.metadata
    recorded = getattr(meta.get("source_version"), "value", None)
    if recorded == version:
        return True
    return materialization.tags.get(DATA_VERSION_TAG) == sha256_file(source)
