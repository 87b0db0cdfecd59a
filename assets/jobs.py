"""Jobs: the data stage alone (cheap, CI runs it), training from existing bins, and the whole chain."""

import dagster as dg

DATA_ASSETS = ["raw_shard", "token_stats", "tokenized_bins"]
TRAINING_ASSETS = ["training_config", "trained_checkpoint"]
# Runs log at INFO: Dagster's per-event DEBUG lines (150 on a sample run) bury what a user reads.
# A run config that sets `loggers: console: config: log_level: DEBUG` brings them back.
RUN_DEFAULTS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}

data_job = dg.define_asset_job(
    "data_job",
    selection=dg.AssetSelection.assets(*DATA_ASSETS),
    config=RUN_DEFAULTS,
    description="Validate the raw shard, profile it into the DuckDB warehouse, tokenize it to nanoGPT bins.",
)

train_job = dg.define_asset_job(
    "train_job",
    selection=dg.AssetSelection.assets(*TRAINING_ASSETS),
    config=RUN_DEFAULTS,
    description="Plan for this hardware and train from the current bins.",
)

pipeline_job = dg.define_asset_job(
    "pipeline_job",
    selection=dg.AssetSelection.assets(*DATA_ASSETS, *TRAINING_ASSETS),
    config=RUN_DEFAULTS,
    description="The whole chain: shard to trained checkpoint.",
)
