"""Declarative automation, off until `finegpt_automation` is switched on (UI: Automation, or
`dagster sensor start finegpt_automation`):

- the data assets (`token_stats`, `tokenized_bins`) run as soon as their shard changed
  (`raw_shard` materialized by a run, the `shard_changed_sensor` or by hand), once their
  upstream's blocking checks pass;
- the model is retrained weekly, Mondays 03:00 UTC: `training_config` and `trained_checkpoint`
  are requested together at each tick (unchanged inputs reuse the plan and the finished run);
- `eval_report` follows every new checkpoint whose blocking check (finite loss) passed.

The asset definitions carry these conditions; this sensor evaluates them.
"""

import dagster as dg

WEEKLY = "0 3 * * 1"  # Mondays 03:00, when a home GPU is idle
TIMEZONE = "UTC"

# after a changed upstream; never while it is in progress, missing or failing a blocking check
ON_NEW_DATA = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
# once per weekly tick, whatever changed: same inputs give the same plan and reuse the run
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
