"""Declarative automation as the `finegpt_automation` sensor would evaluate it (Dagster's own
evaluator, a real instance, simulated clock): off until switched on; a new shard requests the
data assets of its partition alone; the weekly tick requests the plan, never before; a new
plan requests the training, a new checkpoint its eval report."""

import datetime as dt

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData)

from assets.automation import automation_sensor
from assets.definitions import STAGES, defs
from assets.partitions import SHARDS

BLOCKING = [spec for checks in dg.load_asset_checks_from_modules(STAGES)
            for spec in checks.check_specs if spec.blocking]

TUESDAY = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)
NEXT_MONDAY_0301 = dt.datetime(2026, 12, 7, 3, 1, tzinfo=dt.timezone.utc)


DATA = ("raw_shard", "token_stats", "tokenized_bins")


def requested(result) -> set[str]:
    """The assets requested, a partitioned one as `key[partition]`."""
    out = set()
    for key in (*DATA, "training_config", "trained_checkpoint", "eval_report"):
        subset = next((r.true_subset for r in result.results if r.key == dg.AssetKey(key)), None)
        if subset is None or subset.size == 0:
            continue
        partitions = subset.expensively_compute_partition_keys() if key in DATA else {None}
        out |= {key if p is None else f"{key}[{p}]" for p in partitions}
    return out


def materialized(instance, *keys, partition=None):
    """As a run materializes them: the assets, then their blocking checks, passed."""
    for key in keys:
        part = partition if key in DATA else None
        instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=part))
        [record] = instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(key), asset_partitions=[part] if part else None), limit=1).records
        target = AssetCheckEvaluationTargetMaterializationData(  # the check ran on this one
            storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp)
        for spec in BLOCKING:
            if spec.asset_key == dg.AssetKey(key):
                instance.report_runless_asset_event(dg.AssetCheckEvaluation(
                    asset_key=spec.asset_key, check_name=spec.name, passed=True, partition=part,
                    target_materialization_data=target))


def test_automation_is_off_until_switched_on():
    assert automation_sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert defs.get_sensor_def("finegpt_automation") is automation_sensor


def test_new_shard_then_weekly_retrain_then_eval():
    with dg.instance_for_test() as instance:
        def tick(when, cursor):
            return dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                                     cursor=cursor, evaluation_time=when)

        instance.add_dynamic_partitions(SHARDS.name, ["/data/a.parquet"])
        first = tick(TUESDAY, None)
        assert requested(first) == set()  # nothing materialized, no cron tick yet
        materialized(instance, "raw_shard", partition="/data/a.parquet")  # a new shard
        data = tick(TUESDAY + dt.timedelta(minutes=1), first.cursor)
        assert requested(data) == {"token_stats[/data/a.parquet]", "tokenized_bins[/data/a.parquet]"}
        materialized(instance, "token_stats", "tokenized_bins", partition="/data/a.parquet")
        # a second shard: its own partition runs, the first's is left alone
        instance.add_dynamic_partitions(SHARDS.name, ["/data/b.parquet"])
        materialized(instance, "raw_shard", partition="/data/b.parquet")
        second = tick(TUESDAY + dt.timedelta(minutes=2), data.cursor)
        assert requested(second) == {"token_stats[/data/b.parquet]", "tokenized_bins[/data/b.parquet]"}
        materialized(instance, "token_stats", "tokenized_bins", partition="/data/b.parquet")
        quiet = tick(TUESDAY + dt.timedelta(minutes=3), second.cursor)
        assert requested(quiet) == set()  # no retraining before the weekly tick
        weekly = tick(NEXT_MONDAY_0301, quiet.cursor)
        assert requested(weekly) == {"training_config"}
        materialized(instance, "training_config")
        train = tick(NEXT_MONDAY_0301 + dt.timedelta(minutes=5), weekly.cursor)
        assert requested(train) == {"trained_checkpoint"}
        materialized(instance, "trained_checkpoint")
        after = tick(NEXT_MONDAY_0301 + dt.timedelta(minutes=30), train.cursor)
        assert requested(after) == {"eval_report"}


def test_a_failed_blocking_check_holds_the_downstream_back():
    with dg.instance_for_test() as instance:
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                                  evaluation_time=TUESDAY)
        instance.report_runless_asset_event(dg.AssetMaterialization("trained_checkpoint"))
        instance.report_runless_asset_event(dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey("trained_checkpoint"),
            check_name="trained_checkpoint_loss_is_finite", passed=False))
        instance.add_dynamic_partitions(SHARDS.name, ["/data/a.parquet"])
        materialized(instance, "tokenized_bins", partition="/data/a.parquet")
        later = dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                                  cursor=first.cursor,
                                                  evaluation_time=TUESDAY + dt.timedelta(minutes=1))
        assert "eval_report" not in requested(later)  # a NaN model is never evaluated
