"""The environment contract every stage uses to find its inputs and artifacts.

FINEGPT_HOME    root of all artifacts (default: `.finegpt/` in the working directory)
FINEGPT_SHARD   raw shard source: a local parquet path or `hf://REPO/PATH/IN/REPO`
MLFLOW_TRACKING_URI  as usual; default a SQLite store under FINEGPT_HOME
"""

from __future__ import annotations

import os
from pathlib import Path

# The shard users start from: the first file of FineWeb's oldest dump.
DEFAULT_SHARD = "hf://HuggingFaceFW/fineweb/data/CC-MAIN-2013-20/000_00000.parquet"


def finegpt_home() -> Path:
    return Path(os.environ.get("FINEGPT_HOME") or ".finegpt").resolve()


def shard_source() -> str:
    return os.environ.get("FINEGPT_SHARD") or DEFAULT_SHARD


def warehouse_path(home: Path | None = None) -> Path:
    """The persistent DuckDB file holding token statistics, keyed by shard."""
    return (home or finegpt_home()) / "warehouse.duckdb"


def bins_dir(home: Path | None = None) -> Path:
    return (home or finegpt_home()) / "bins"


def runs_dir(home: Path | None = None) -> Path:
    return (home or finegpt_home()) / "runs"


def hardware_dir(home: Path | None = None) -> Path:
    """Per-machine hardware measurements (matmul rate, calibration probes), reused by plans."""
    return (home or finegpt_home()) / "hardware"


def mlflow_tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    home = finegpt_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


def mlflow_artifact_root() -> str:
    """Where a default (SQLite) MLflow store keeps artifacts: beside it, not in the cwd."""
    return (finegpt_home() / "mlartifacts").as_uri()
