"""Schedules: periodic retraining. Off by default; switch on in the UI or with
`dagster schedule start weekly_retrain`."""

import dagster as dg

from assets.jobs import pipeline_job

weekly_retrain = dg.ScheduleDefinition(
    name="weekly_retrain",
    job=pipeline_job,
    cron_schedule="0 3 * * 1",  # Mondays 03:00, when a home GPU is idle
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Re-run the whole chain; unchanged inputs keep their data versions, so stale assets show why.",
)
