"""The `shards` dynamic partitions: one partition per shard source, so adding a shard is a new
partition and a data run of its own, never a re-run of the others.

A partition's key is the source's short name (`finegpt_pipeline.data.shard_keys`: the file's
stem, e.g. `fineweb-cc-main-2013-20-head300`, or `CC-MAIN-2013-20-000_00000` for a hub file),
registered under the FineGPT home beside the source it stands for; raw_shard's metadata shows
the full path. Keys of older versions (a resolved absolute path, or `hf:OWNER/NAME/PATH`) and
a path typed into the UI's "Add partition" still name their source. Shards are registered by
`python -m assets.shards add SOURCE` (assets/shards.py), the `incoming_shards_sensor`, or the
UI's "Add partition" (with a path); `assets/shard_inputs.py` reads every materialized
partition downstream.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from finegpt_pipeline import paths
from finegpt_pipeline.data import shard_keys
from finegpt_pipeline.data.shard import (HF_PREFIX, ShardError, hub_problem, is_hub_source,
                                         local_shard_path, open_shard)

SHARDS = dg.DynamicPartitionsDefinition(name="shards")
HUB_KEY_PREFIX = "hf:"  # an older version's hub keys
PARTITION_TAG = "dagster/partition"  # the run tag that targets a partition


def normalized(source: str | Path) -> str:
    """One spelling per source: a local file's resolved path, a hub URL without a trailing /."""
    source = str(source)
    if is_hub_source(source):
        return HF_PREFIX + source[len(HF_PREFIX):].strip("/")
    return str(local_shard_path(source))


def partition_key(source: str | Path) -> str:
    """The partition key of a shard source (local path or `hf://` URL): its short name,
    registered under the FineGPT home if it is new."""
    return shard_keys.register_key(normalized(source))


def registered_key(source: str | Path) -> str | None:
    """The key a source was registered under, or None (nothing is written)."""
    return shard_keys.key_of(normalized(source))


def source_of(key: str) -> str:
    """The shard source a partition key names. An unknown short name, or a URL typed into the
    UI's "Add partition" (Dagster cannot store outputs under one), is refused in one line with
    its fix."""
    found = shard_keys.source_for(key)
    if found:
        return found
    if is_hub_source(key):
        raise ShardError(f"partition {key}: a hub shard needs a short key (Dagster cannot store "
                         f"outputs under a URL); add it with `python -m assets.shards add {key}` "
                         "and run that partition")
    if key.startswith(HUB_KEY_PREFIX):  # registered by an older version
        return HF_PREFIX + key[len(HUB_KEY_PREFIX):]
    if "/" in key or key.endswith(".parquet"):  # a path: typed in the UI, or an older key
        return key
    raise ShardError(f"partition {key}: no shard is registered under this name (in "
                     f"{paths.home().shard_keys}); register its file with "
                     "`python -m assets.shards add PATH`")


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
