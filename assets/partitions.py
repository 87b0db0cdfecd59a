"""The `shards` dynamic partitions: one partition per shard source, so adding a shard is a new
partition and a data run of its own, never a re-run of the others.

A partition's key is its source: a local shard's resolved absolute path, or a hub file as
`hf:OWNER/NAME/PATH` (its `hf://` URL less the `//`: Dagster stores each partition's output
under a path named by its key, and refuses a URL there). Shards are registered by
`python -m assets.shards add SOURCE` (assets/shards.py), the `incoming_shards_sensor`, or the
UI's "Add partition"; `assets/shard_inputs.py` reads every materialized partition downstream.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from finegpt_pipeline.data.shard import (HF_PREFIX, ShardError, hub_problem, is_hub_source,
                                         local_shard_path, open_shard)

SHARDS = dg.DynamicPartitionsDefinition(name="shards")
HUB_KEY_PREFIX = "hf:"
PARTITION_TAG = "dagster/partition"  # the run tag that targets a partition


def partition_key(source: str | Path) -> str:
    """The partition key of a shard source (local path or `hf://` URL)."""
    source = str(source)
    if is_hub_source(source):
        return HUB_KEY_PREFIX + source[len(HF_PREFIX):].strip("/")
    return str(local_shard_path(source))


def source_of(key: str) -> str:
    """The shard source a partition key names; a key Dagster cannot store outputs under (an
    `hf://` URL typed into the UI's "Add partition") is refused in one line with its fix."""
    if is_hub_source(key):
        raise ShardError(f"partition {key}: a hub shard's key is {partition_key(key)} (Dagster "
                         f"cannot store outputs under a URL); add it with `python -m assets.shards "
                         f"add {key}` and run that partition")
    if key.startswith(HUB_KEY_PREFIX):
        return HF_PREFIX + key[len(HUB_KEY_PREFIX):]
    return key


def problem(source: str | Path) -> str | None:
    """Why a shard cannot be registered (one line naming the file and the fix), or None: a
    local file must be a readable FineWeb-like parquet, a hub file in the local Hugging Face
    cache or served by the hub (offline, with HF_HUB_OFFLINE=1, nothing is asked)."""
    if is_hub_source(str(source)):
        return hub_problem(str(source))
    try:
        open_shard(local_shard_path(source))
    except ShardError as exc:
        return str(exc)
    return None


def register(instance: dg.DagsterInstance, sources: list[str]) -> list[str]:
    """Add a partition per source (validated first: nothing is added if one is bad); returns
    the keys, those already registered included."""
    bad = [p for p in map(problem, sources) if p]
    if bad:
        raise ShardError("; ".join(bad))
    keys = [partition_key(s) for s in sources]
    known = set(instance.get_dynamic_partitions(SHARDS.name))
    new = [k for k in dict.fromkeys(keys) if k not in known]
    if new:
        instance.add_dynamic_partitions(SHARDS.name, new)
    return keys
