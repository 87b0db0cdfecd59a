"""Materializing one shard's `shards` partition in a test (the data assets are partitioned)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from assets.partitions import SHARDS, partition_key


def materialize_shard(assets, shard: str | Path, instance: dg.DagsterInstance | None = None,
                      **kwargs) -> dg.ExecuteInProcessResult:
    """`dg.materialize` on `shard`'s partition, added first (unchecked, as the UI's "Add
    partition" adds one: raw_shard's own errors are under test too); a fresh in-memory instance
    (seconds faster than one on disk) unless one is given."""
    instance = instance or dg.DagsterInstance.ephemeral()
    key = partition_key(shard)
    if not instance.has_dynamic_partition(SHARDS.name, key):
        instance.add_dynamic_partitions(SHARDS.name, [key])
    return dg.materialize(assets, instance=instance, partition_key=key, **kwargs)
