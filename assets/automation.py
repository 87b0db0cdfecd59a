"""Declarative automation, off until `finegpt_automation` is switched on (UI: Automation, or
`dagster sensor start finegpt_automation`):

- the data assets (`token_stats`, `tokenized_bins`) run as soon as their shard changed
  (`raw_shard` materialized by a run, the `shard_changed_sensor` or by hand);
- the model is retrained weekly: `training_config` is requested at each tick, Mondays 03:00
  UTC (unchanged inputs give the same plan), `trained_checkpoint` follows the new plan
  (unchanged inputs reuse the finished run) and `eval_report` the new checkpoint;
- each only once its upstream's blocking checks passed (a plan over budget is not trained, a
  NaN model is not evaluated).

The asset definitions carry these conditions; this sensor evaluates them.
"""

import dagster as dg

WEEKLY = "0 3 * * 1"  # Mondays 03:00, when a home GPU is idle
TIMEZONE = "UTC"

# after a changed upstream; never while it is in progress, missing or failing a blocking check
AFTER_UPSTREAM = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
# once per weekly tick, whatever changed: same inputs give the same plan
WEEKLY_RETRAIN = (dg.AutomationCondition.cron_tick_passed(WEEKLY, TIMEZONE)
                  & ~dg.AutomationCondition.any_deps_missing()
                  & ~dg.AutomationCondition.any_deps_in_progress()
                  & ~dg.AutomationCondition.in_progress()
                  & dg.AutomationCondition.all_deps_blocking_checks_passed()
                  ).with_label("weekly retrain")

automation_sensor = dg.AutomationConditionSensorDefinition(
    "finegpt_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=60,
    description="Data assets when their shard changes, the model weekly (Mondays 03:00 UTC), "
                "the eval report after each new checkpoint. Off until switched on.",
)
