"""Old name of `train_reporter`, kept only for train.py's and assets/training.py's imports.
Remove at merge."""

from finegpt_pipeline.train_reporter import (  # noqa: F401
    ASSET_KEY_ENV, DAGSTER_RUN_ID_ENV, Reporter, mlflow_wanted,
)
