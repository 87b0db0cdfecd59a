"""Offline without tiktoken's files: every stage says in one line what is missing and which
variable fixes it, from the CLI and from Dagster. The network is made unreachable (proxies on a
closed local port), so these tests never leave the machine."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def offline_env(tmp_path) -> dict[str, str]:
    empty = tmp_path / "empty-tiktoken-cache"
    empty.mkdir()
    proxy = f"http://127.0.0.1:{_closed_port()}"
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "all_proxy")}
    env.update(TIKTOKEN_CACHE_DIR=str(empty), https_proxy=proxy, HTTPS_PROXY=proxy,
               http_proxy=proxy, HTTP_PROXY=proxy, PYTHONPATH=str(REPO),
               FINEGPT_HOME=str(tmp_path / "home"))
    return env


@pytest.mark.parametrize("stage", ["stats", "tokenize"])
def test_cli_one_line_names_tiktoken_cache_dir(stage, offline_env, sample_shard, tmp_path):
    out = tmp_path / "out"
    args = ["--db", str(out / "w.duckdb")] if stage == "stats" else ["--out", str(out)]
    proc = subprocess.run([sys.executable, "-m", "finegpt_pipeline", stage, str(sample_shard),
                           *args], env=offline_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"finegpt {stage}: error: tiktoken's gpt2 files")
    assert f"TIKTOKEN_CACHE_DIR={offline_env['TIKTOKEN_CACHE_DIR']}" in lines[0]
    assert "set TIKTOKEN_CACHE_DIR" in lines[0]
    assert not out.exists()  # nothing written


_DAGSTER_RUN = """
import sys, dagster as dg
from assets.data import data_assets
from assets.bins import tokenized_bins
from assets.resources import FineGPTHome
from tests._shards import materialize_shard
for selection in (["raw_shard", "token_stats"], ["raw_shard", "tokenized_bins"]):
    result = materialize_shard([*data_assets, tokenized_bins], sys.argv[2], selection=selection,
                               raise_on_error=False,
                               resources={"finegpt_home": FineGPTHome(root=sys.argv[1])})
    failure = next(e for e in result.all_events if e.is_step_failure)
    print(failure.step_key, "|", failure.step_failure_data.error.message.strip())
"""


def test_dagster_failure_is_the_one_line(offline_env, sample_shard, tmp_path):
    home = tmp_path / "home"
    proc = subprocess.run([sys.executable, "-c", _DAGSTER_RUN, str(home), str(sample_shard)],
                          env=offline_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [line for line in proc.stdout.splitlines() if " | " in line]
    assert [r.split(" | ")[0] for r in reports] == ["token_stats", "tokenized_bins"]
    for report in reports:
        message = report.split(" | ", 1)[1]
        assert "set TIKTOKEN_CACHE_DIR" in message and "\n" not in message, message
        assert "Traceback" not in message
    assert not (home / "warehouse.duckdb").exists() and not (home / "bins").exists()
