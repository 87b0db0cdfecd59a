"""Old name of `mlflow_store`, kept only for assets/planning.py's import. Remove at merge."""

from finegpt_pipeline.mlflow_store import EXPERIMENT, configure, git_commit, run_tags, run_url  # noqa: F401
