"""The environment contract every stage uses to find its inputs and artifacts.

FINEGPT_HOME    root of all artifacts (default: `.finegpt/` in the working directory); what
                lives under it is `layout.Home`
FINEGPT_SHARD   raw shard source: a local parquet path or `hf://REPO/PATH/IN/REPO`
MLFLOW_TRACKING_URI  as usual; default a SQLite store under FINEGPT_HOME
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from finegpt_pipeline.layout import Home

# The shard users start from: the first file of FineWeb's oldest dump.
DEFAULT_SHARD = "hf://HuggingFaceFW/fineweb/data/CC-MAIN-2013-20/000_00000.parquet"


def check_writable(root: Path | None = None) -> Path:
    """The home (`root`, else FINEGPT_HOME) when this process can write there (or create it:
    nothing is created here); else one ValueError naming it and the fix, before any stage
    starts work."""
    where = home(root).root
    existing = where
    while not existing.exists():
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file")
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as exc:
        raise ValueError(f"FINEGPT_HOME={where} is not writable ({exc.strerror or exc}); point "
                         "FINEGPT_HOME at a directory you can write, e.g. "
                         "`export FINEGPT_HOME=$PWD/.finegpt`") from None
    return where


def home(root: str | Path | None = None) -> Home:
    """The artifact tree under `root`, else under the environment's FINEGPT_HOME (default
    `.finegpt/` in the working directory); its `root` is resolved."""
    return Home(Path(root if root is not None else os.environ.get("FINEGPT_HOME") or ".finegpt")
                .resolve())


def shard_source() -> str:
    return os.environ.get("FINEGPT_SHARD") or DEFAULT_SHARD


def mlflow_tracking_uri(root: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI, else the SQLite store under the home (created if needed)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    tree = home(root)
    tree.root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{tree.mlflow_db}"


def mlflow_artifact_root(root: Path | None = None) -> str:
    """Where a default (SQLite) MLflow store keeps artifacts: beside it, not in the cwd."""
    return home(root).mlartifacts.as_uri()
