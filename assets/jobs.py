"""Jobs: the data stage alone (cheap, CI runs it), training from existing bins, and the whole
chain. Each selects assets by their group (`data`, `training`, `evaluation`), so a new asset
joins its stage's jobs by naming its group."""

import dagster as dg

DATA = dg.AssetSelection.groups("data")
TRAINING = dg.AssetSelection.groups("training")
EVALUATION = dg.AssetSelection.groups("evaluation")
# Runs log at INFO: Dagster's per-event DEBUG lines (150 on a sample run) bury what a user reads.
# A run config that sets `loggers: console: config: log_level: DEBUG` brings them back.
RUN_DEFAULTS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}

data_job = dg.define_asset_job(
    "data_job",
    selection=DATA,
    config=RUN_DEFAULTS,
    description="Validate the raw shard, profile it into the DuckDB warehouse, tokenize it to nanoGPT bins.",
)

train_job = dg.define_asset_job(
    "train_job",
    selection=TRAINING,
    config=RUN_DEFAULTS,
    description="Plan for this hardware and train from the current bins.",
)

pipeline_job = dg.define_asset_job(
    "pipeline_job",
    selection=DATA | TRAINING | EVALUATION,
    config=RUN_DEFAULTS,
    description="The whole chain: shard to trained checkpoint and its eval report.",
)
