"""Declarative automation as the `finegpt_automation` sensor would evaluate it (Dagster's own
evaluator, a real instance, simulated clock): off until switched on; a new shard requests the
data assets; the weekly tick requests the plan and the training together, never before; a new
checkpoint requests its eval report."""

import datetime as dt

import dagster as dg

from assets.automation import automation_sensor
from assets.definitions import defs

TUESDAY = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)
NEXT_MONDAY_0301 = dt.datetime(2026, 12, 7, 3, 1, tzinfo=dt.timezone.utc)


def requested(result) -> set[str]:
    keys = ("raw_shard", "token_stats", "tokenized_bins", "training_config",
            "trained_checkpoint", "eval_report")
    return {k for k in keys if result.get_num_requested(dg.AssetKey(k))}


def materialized(instance, *keys):
    for key in keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(key))


def test_automation_is_off_until_switched_on():
    assert automation_sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert defs.get_sensor_def("finegpt_automation") is automation_sensor


def test_new_shard_then_weekly_retrain_then_eval():
    with dg.instance_for_test() as instance:
        def tick(when, cursor):
            return dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                                     cursor=cursor, evaluation_time=when)

        first = tick(TUESDAY, None)
        assert requested(first) == set()  # nothing materialized, no cron tick yet
        materialized(instance, "raw_shard")  # a new shard
        data = tick(TUESDAY + dt.timedelta(minutes=1), first.cursor)
        assert requested(data) == {"token_stats", "tokenized_bins"}
        materialized(instance, "token_stats", "tokenized_bins")
        quiet = tick(TUESDAY + dt.timedelta(minutes=2), data.cursor)
        assert requested(quiet) == set()  # no retraining before the weekly tick
        weekly = tick(NEXT_MONDAY_0301, quiet.cursor)
        assert requested(weekly) == {"training_config", "trained_checkpoint"}
        materialized(instance, "training_config", "trained_checkpoint")
        after = tick(NEXT_MONDAY_0301 + dt.timedelta(minutes=30), weekly.cursor)
        assert requested(after) == {"eval_report"}
