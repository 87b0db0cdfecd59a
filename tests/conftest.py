"""Shared fixtures: the real 300-document FineWeb sample, an isolated FINEGPT_HOME, offline
tokenizer files. Tests never touch the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SAMPLE_SHARD = SHARED / "data" / "fineweb-cc-main-2013-20-head300.parquet"

# Before any test imports tiktoken or mlflow.
if (SHARED / "tiktoken-cache").is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken-cache"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def sample_shard() -> Path:
    if not SAMPLE_SHARD.exists():
        pytest.fail(f"shared FineWeb sample missing: {SAMPLE_SHARD}")
    return SAMPLE_SHARD


@pytest.fixture
def finegpt_home(tmp_path, monkeypatch) -> Path:
    """A private FINEGPT_HOME with its own SQLite MLflow store."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("FINEGPT_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    monkeypatch.delenv("FINEGPT_SHARD", raising=False)
    return home


@pytest.fixture(autouse=True)
def _a_private_home_by_default(request, tmp_path_factory, monkeypatch):
    """Every test writes under a FINEGPT_HOME of its own (shard keys, shard hashes, ...), never
    the checkout's `.finegpt`; tests that read what `make demo` left (`demo`) keep theirs."""
    if request.node.get_closest_marker("demo") or "finegpt_home" in request.fixturenames:
        return
    monkeypatch.setenv("FINEGPT_HOME", str(tmp_path_factory.mktemp("home")))
