"""Jobs: the data stage alone (cheap, CI runs it), training and its evaluation from existing bins, and the whole
chain. Each selects assets by their group (`data`, `training`, `evaluation`), so a new asset
joins its stage's jobs by naming its group."""

import dagster as dg

from assets.dagster_internals import repository_tags

DATA = dg.AssetSelection.groups("data")
TRAINING = dg.AssetSelection.groups("training")
EVALUATION = dg.AssetSelection.groups("evaluation")
# Runs log at INFO: Dagster's per-event DEBUG lines (150 on a sample run) bury what a user reads.
# A run config that sets `loggers: console: config: log_level: DEBUG` brings them back.
# Each step's process forks from a server that has imported the code location once, instead of
# starting Python, Dagster and torch afresh (~4 s a step on 2 cores: an unchanged sample run
# took 74 s spawning, 31 s forking; docs/benchmarks.md), and what the steps import only when
# they run: MLflow with its SQL store (~3 s a step otherwise) and matplotlib. None of them starts
# a thread on import, so forking stays safe. A run config given at launch (`-c`, the
# launchpad) replaces these defaults: configs/*.yaml say their executor themselves.
PRELOAD = ["assets.definitions", "mlflow", "mlflow.store.tracking.sqlalchemy_store",
           "matplotlib.pyplot"]
FORKSERVER = {"forkserver": {"preload_modules": PRELOAD}}
RUN_DEFAULTS = {"execution": {"config": {"multiprocess": {"start_method": FORKSERVER}}},
                "loggers": {"console": {"config": {"log_level": "INFO"}}}}

# The one code location name: workspace.yaml's `location_name` and pyproject's
# [tool.dagster] `code_location_name` say it too (tests/assets/test_code_location.py holds them equal).
# Each job carries its tags, so CLI runs show under the same job as runs launched from the UI.
LOCATION = "finegpt"
LOCATION_TAGS = repository_tags(LOCATION)

data_job = dg.define_asset_job(
    "data_job",
    tags=LOCATION_TAGS,
    selection=DATA,
    config=RUN_DEFAULTS,
    description="Validate the raw shard, profile it into the DuckDB warehouse, tokenize it to nanoGPT bins.",
)

train_job = dg.define_asset_job(
    "train_job",
    tags=LOCATION_TAGS,
    selection=TRAINING | EVALUATION,
    config=RUN_DEFAULTS,
    description="Plan for this hardware, train on every tokenized shard, and evaluate the new "
                "model against the champion.",
)

pipeline_job = dg.define_asset_job(
    "pipeline_job",
    tags=LOCATION_TAGS,
    selection=DATA | TRAINING | EVALUATION,
    config=RUN_DEFAULTS,
    description="The whole chain: shard to trained checkpoint and its eval report.",
)
