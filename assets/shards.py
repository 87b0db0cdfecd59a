"""`python -m assets.shards`: register FineWeb shards as `shards` partitions (assets/partitions.py).

    python -m assets.shards add SOURCE [SOURCE ...]   # prints each partition key
    python -m assets.shards list
    dagster job execute -m assets.definitions -j data_job \
        --tags "$(python -m assets.shards add --tags SOURCE)"  # one shard's run

(`make run` does it for FINEGPT_SHARD.)
"""

from __future__ import annotations

import argparse
import json
import sys

import dagster as dg

from assets.partitions import PARTITION_TAG, SHARDS, register, source_of
from finegpt_pipeline import paths
from finegpt_pipeline.data.shard import ShardError


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
                paths.check_writable()  # the run after this writes every artifact there
                keys = register(instance, args.sources or [paths.shard_source()])
            except (ShardError, ValueError) as exc:
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
