"""The `shards` dynamic partitions: one partition per shard source, so adding a shard is a new
partition and a data run of its own, never a re-run of the others.

A partition's key is its source: a local shard's resolved absolute path, or a hub file as
`hf:OWNER/NAME/PATH` (its `hf://` URL less the `//`: Dagster stores each partition's output
under a path named by its key, and refuses a URL there). Register shards with

    python -m assets.shards add SOURCE [SOURCE ...]   # prints each partition key
    python -m assets.shards list
    dagster job execute -m assets.definitions -j data_job \
        --tags "$(python -m assets.shards add --tags SOURCE)"  # one shard's run

(`make run` does it for FINEGPT_SHARD), with the `incoming_shards_sensor` (a parquet file
dropped into $FINEGPT_HOME/incoming), or the UI's "Add partition" (a path or `hf:` key).
`training_config`, `trained_checkpoint` and `eval_report` read every materialized partition
of `tokenized_bins`: one shard's bins directory as it is, several as one bins set
(`finegpt_pipeline.bins_set`: windows drawn in proportion to each shard's size, val the union
of their val splits).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import dagster as dg

from finegpt_pipeline import paths
from finegpt_pipeline.shard import HF_PREFIX, ShardError, is_hub_source, local_source_path, open_shard

SHARDS = dg.DynamicPartitionsDefinition(name="shards")
HUB_KEY_PREFIX = "hf:"
PARTITION_TAG = "dagster/partition"  # the run tag that targets a partition
# what the assets downstream of the data stage declare for `tokenized_bins`: every partition
# materialized so far (a registered shard whose data run has not finished is left out)
ALL_SHARDS_IN = dg.AssetIn("tokenized_bins", metadata={"allow_missing_partitions": True})


def partition_key(source: str | Path) -> str:
    """The partition key of a shard source (local path or `hf://` URL)."""
    source = str(source)
    if is_hub_source(source):
        return HUB_KEY_PREFIX + source[len(HF_PREFIX):].strip("/")
    return str(local_source_path(source))


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
    """Why a local shard cannot be registered (one line naming the file), or None. Hub files
    are checked by raw_shard when it fetches them (tests and sensors stay offline)."""
    if is_hub_source(str(source)):
        return None
    try:
        open_shard(local_source_path(source))
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


def by_shard(value: dict, name: str = "tokenized_bins") -> dict[str, dict]:
    """An input read across the `shards` partitions, as {partition key: value}. Dagster hands a
    downstream asset the value itself when the partitions definition holds one key, a dict
    when it holds several (and an unpartitioned upstream, as in tests, gives the value)."""
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"{name}: expected a dict, got {type(value).__name__}")
    if value and "dir" in value:
        return {"": value}
    if not value:  # None: the one registered partition is not materialized
        raise ValueError(f"{name}: no shard has been tokenized yet; materialize the data assets "
                         "for a partition first (`make data-job`, or register one with "
                         "`python -m assets.shards add SOURCE`)")
    for key, item in value.items():
        if not isinstance(item, dict) or "dir" not in item:
            raise ValueError(f"{name}[{key}]: expected a dict with 'dir'")
    return dict(sorted(value.items()))


def held_back(instance: dg.DagsterInstance, keys: list[str]) -> dict[str, list[str]]:
    """The shards among `keys` whose latest run of a data-stage blocking check failed (a bad
    shard's bins stay stored for inspection, but no training reads them): key -> checks."""
    from dagster._core.event_api import PartitionKeyFilter
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    from assets import bins, data  # they import this module: only when it runs

    checks = [spec.key for defs in dg.load_asset_checks_from_modules([data, bins])
              for spec in defs.check_specs if spec.blocking]
    out = {}
    for key in keys:
        latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            checks, partition_filter=PartitionKeyFilter(key=key))
        failed = sorted(check.name for check, record in latest.items()
                        if record.status == AssetCheckExecutionRecordStatus.FAILED)
        if failed:
            out[key] = failed
    return out


def bins_location(context: dg.AssetExecutionContext, tokenized_bins: dict,
                  finegpt_paths) -> tuple[Path, dict]:
    """The bins a training or an eval reads and their counts (`train_tokens`, `val_tokens`,
    ...): one shard's directory and value as they are, or the bins set of all of them
    (written once under the `finegpt_paths` resource's bin_sets_dir, the same directory for
    the same shards) and its summed meta. A shard that failed a blocking check is left out."""
    shards = by_shard(tokenized_bins)
    held = held_back(context.instance, [key for key in shards if key])
    for key, checks in held.items():
        context.log.warning(f"{key}: left out, its blocking check(s) {', '.join(checks)} failed; "
                            "fix the shard and re-materialize its partition")
    shards = {key: value for key, value in shards.items() if key not in held}
    if not shards:
        raise dg.Failure(description="tokenized_bins: every tokenized shard failed a blocking "
                         "check; fix one and re-materialize its partition")
    if len(shards) == 1:
        [value] = shards.values()
        return Path(value["dir"]), value
    from finegpt_pipeline import bins_set, layout

    location = bins_set.write_set([item["dir"] for item in shards.values()],
                                  finegpt_paths.bin_sets_dir())
    return location, {**layout.read_meta(location), "dir": str(location), "shards": len(shards)}


def _instance() -> dg.DagsterInstance:
    return dg.DagsterInstance.get()  # $DAGSTER_HOME's, as `dagster job execute` uses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m assets.shards",
                                     description="Register FineWeb shards as `shards` partitions.")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="add a partition per shard; prints each partition key")
    add.add_argument("sources", nargs="*", help="local parquet path or hf://OWNER/NAME/PATH "
                     "(default: FINEGPT_SHARD, else FineWeb's first CC-MAIN-2013-20 shard)")
    add.add_argument("--tags", action="store_true",
                     help="print the run tags that target the (one) shard's partition, for "
                          "`dagster job execute --tags`")
    sub.add_parser("list", help="the registered partitions and their sources")
    args = parser.parse_args(argv)
    with _instance() as instance:
        if args.command == "add":
            try:
                keys = register(instance, args.sources or [paths.shard_source()])
            except ShardError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            if args.tags:
                if len(keys) != 1:
                    parser.error("--tags takes one source")
                print(json.dumps({PARTITION_TAG: keys[0]}))
            else:
                print("\n".join(keys))
        else:
            for key in instance.get_dynamic_partitions(SHARDS.name):
                print(f"{key}\t{source_of(key)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
