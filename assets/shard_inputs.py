"""What the assets after the data stage read across the `shards` partitions: every
materialized partition of `tokenized_bins` (a registered shard whose data run has not finished
is left out), one shard's bins directory as it is, several as one bins set
(`finegpt_pipeline.data.bins_set`: windows drawn in proportion to each shard's size, val the
union of their val splits). A shard whose latest data-stage blocking check failed is left out.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from assets import bins, dagster_internals, data
from finegpt_pipeline import layout
from finegpt_pipeline.data import bins_set

ALL_SHARDS_IN = dg.AssetIn("tokenized_bins", metadata={"allow_missing_partitions": True})


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


def blocking_data_checks() -> list[dg.AssetCheckKey]:
    """The blocking checks of the data-stage (shard-partitioned) assets."""
    return sorted((spec.key for defs in dg.load_asset_checks_from_modules([data, bins])
                   for spec in defs.check_specs if spec.blocking),
                  key=lambda key: key.to_user_string())


def held_back(context: dg.AssetExecutionContext, keys: list[str]) -> dict[str, list[str]]:
    """The shards among `keys` whose latest run of a data-stage blocking check failed (a bad
    shard's bins stay stored for inspection, but no training reads them): key -> checks."""
    checks = blocking_data_checks()
    out = {}
    for key in keys:
        failed = dagster_internals.failed_checks(context.instance, checks, key)
        if failed:
            out[key] = failed
    return out


# (run id, asset) -> bins_location's answer: computed once per asset per run, so its check
# history queries and warnings are not repeated by the MLflow wrapper and the asset body. Only
# the current run's answers are kept: a process that runs many jobs in turn (the in-process
# executor, a long-lived code server) does not grow it.
_LOCATIONS: dict[tuple[str, str], tuple[Path, dict]] = {}


def bins_location(context: dg.AssetExecutionContext, tokenized_bins: dict,
                  finegpt_home) -> tuple[Path, dict]:
    """The bins a training or an eval reads and their counts (`train_tokens`, `val_tokens`,
    ...): one shard's directory and value as they are, or the bins set of all of them
    (written once under the `finegpt_home` resource's bin_sets_dir, the same directory for
    the same shards) and its summed meta. A shard that failed a blocking check is left out."""
    memo_key = (context.run.run_id, context.asset_key.to_user_string())
    if memo_key not in _LOCATIONS:
        for stale in [key for key in _LOCATIONS if key[0] != memo_key[0]]:
            del _LOCATIONS[stale]
        _LOCATIONS[memo_key] = _locate(context, tokenized_bins, finegpt_home)
    return _LOCATIONS[memo_key]


def _locate(context: dg.AssetExecutionContext, tokenized_bins: dict,
            finegpt_home) -> tuple[Path, dict]:
    shards = by_shard(tokenized_bins)
    held = held_back(context, [key for key in shards if key])
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
    location = bins_set.write_set([item["dir"] for item in shards.values()],
                                  finegpt_home.home().bin_sets)
    warning = bins_set.overlap_warning(bins_set.read_overlap(location))
    if warning:
        context.log.warning(f"{context.asset_key.to_user_string()}: {warning}")
    return location, {**layout.read_meta(location), "dir": str(location), "shards": len(shards)}
