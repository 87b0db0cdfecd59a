"""Progress lines: throttled to ~10% / 10 s (a minute of silence at most), two lines on the
sample, and they reach the terminal (stderr) and the Dagster run's log."""

from __future__ import annotations

import json

import dagster as dg
import pyarrow.parquet as pq

from finegpt_pipeline import cli
from finegpt_pipeline.data import stats, tokenized_bins
from finegpt_pipeline.data.progress import Progress, duration


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_throttle_on_a_long_stage():
    lines, clock = [], Clock()
    prog = Progress(lines.append, "tokenize", total=1000, clock=clock)
    prog.begin("shard.parquet: 1,000,000 docs in 1000 row groups")
    for _ in range(1000):  # 0.5 s per row group: an 8-minute stage
        clock.now += 0.5
        prog.advance(1, docs=1000, tokens=700_000)
    prog.finish("done")
    assert len(lines) == 1 + 9 + 1  # start, every 10% (50 s apart), end
    assert lines[1] == ("tokenize: 100/1000 row groups (10%), 100,000 docs, 70,000,000 tokens, "
                        "1,400,000 tokens/s, ETA 7m30s")
    assert lines[-1] == "tokenize: done: 1,000,000 docs, 700,000,000 tokens in 8m20s"


def test_a_slow_stage_is_never_silent_for_more_than_a_minute():
    lines, clock = [], Clock()
    prog = Progress(lines.append, "stats", total=10, clock=clock)
    for _ in range(3):
        clock.now += 100.0  # 10% every 100 s, the minute rule has it report every step
        prog.advance(1)
    assert len(lines) == 3


def test_fast_steps_are_not_reported_more_than_every_10_s():
    lines, clock = [], Clock()
    prog = Progress(lines.append, "tokenize", total=100, clock=clock)
    for _ in range(99):
        clock.now += 0.5  # 50 s in all: 30% steps are due, but 10 s apart at most
        prog.advance(1)
    assert 3 <= len(lines) <= 5
    assert duration(3725) == "1h02m" and duration(9.6) == "10s"


def test_cli_sample_says_two_lines_on_stderr(sample_shard, tmp_path, capsys):
    assert cli.main(["tokenize", str(sample_shard), "--out", str(tmp_path / "b"),
                      "--workers", "1"]) == 0
    out = capsys.readouterr()
    json.loads(out.out)  # stdout stays the machine-readable result
    lines = out.err.strip().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"tokenize: {sample_shard.resolve()}: 300 docs in 3 row groups")
    assert lines[1].startswith("tokenize: 270 train / 30 val docs in") and "216,090 tokens" in lines[1]
    assert cli.main(["stats", str(sample_shard), "--db", str(tmp_path / "w.duckdb"), "--json"]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2, lines
    assert lines[0] == f"stats: {sample_shard.resolve()}: recounting 300 docs in 3 row groups"
    assert lines[1].startswith("stats: 300 docs, 215,790 tokens in")


def test_assets_log_progress(sample_shard, finegpt_home):
    from assets import bins as bins_assets
    from assets.data import data_assets
    from assets.resources import FineGPTHome
    from tests._shards import materialize_shard

    instance = dg.DagsterInstance.ephemeral()
    result = materialize_shard([*data_assets, bins_assets.tokenized_bins], sample_shard,
                               instance=instance,
                               resources={"finegpt_home": FineGPTHome(root=str(finegpt_home))})
    assert result.success
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any(m.startswith("stats: 300 docs, 215,790 tokens in") for m in messages)
    assert any(m.startswith("tokenize: 270 train / 30 val docs") for m in messages)
    assert pq.ParquetFile(sample_shard).num_row_groups == 3
