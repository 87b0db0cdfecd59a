"""The warehouse while someone else has it open (a real second process each time): read-only
connections never block or break `token_stats`; a read-write holder makes it wait and then
fail in one line naming the PID and the fix; writers take turns."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from finegpt_pipeline.data import stats, warehouse
from finegpt_pipeline.locks import Busy
from tests._holder import hold, release

REPO = Path(__file__).resolve().parents[3]
HOLD = ("import sys, duckdb; c = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == 'ro'); "
        "print('ready', flush=True); sys.stdin.readline(); "
        "print(c.execute('SELECT count(*) FROM documents').fetchone()[0], flush=True); "
        "sys.stdin.read()")


@pytest.fixture
def db(sample_shard, tmp_path) -> Path:
    path = tmp_path / "w.duckdb"
    stats.compute_stats(sample_shard, path, shard_key="first")
    return path


def _rows(db: Path) -> dict:
    with duckdb.connect(str(db), read_only=True) as con:
        return dict(con.execute("SELECT shard, count(*) FROM documents GROUP BY shard").fetchall())


def test_read_only_connection_elsewhere_never_blocks(db, sample_shard, tmp_path):
    reader = hold(HOLD, str(db), "ro")
    try:
        summary = stats.compute_stats(sample_shard, db, shard_key="second")  # no wait, no error
        assert summary["documents"] == 300
        assert len(stats.token_lengths(db, "second")) == 300
        reader.stdin.write("\n")
        reader.stdin.flush()
        assert reader.stdout.readline().strip() == "300"  # its snapshot still reads
    finally:
        release(reader)
    assert _rows(db) == {"first": 300, "second": 300}
    assert stat.S_IMODE(db.stat().st_mode) == 0o666 & ~_umask()
    assert sorted(p.name for p in db.parent.iterdir()) == ["w.duckdb", "w.duckdb.lock"]


def test_cli_stats_beside_a_notebook_reader(db, sample_shard):
    reader = hold(HOLD, str(db), "ro")
    try:
        proc = subprocess.run([sys.executable, "-m", "finegpt_pipeline", "stats",
                               str(sample_shard), "--db", str(db), "--json"],
                              env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                              text=True, timeout=120)
    finally:
        release(reader)
    assert proc.returncode == 0, proc.stderr


def test_read_write_holder_fails_in_one_line_with_pid(db, sample_shard):
    writer = hold(HOLD, str(db), "rw")
    try:
        start = time.monotonic()
        with pytest.raises(Busy) as err:
            with warehouse.writing(db, timeout=1.0):
                pass
        assert 1.0 <= time.monotonic() - start < 10
        message = str(err.value)
        assert message.startswith(f"{db}: held open read-write by PID {writer.pid}")
        assert "read_only=True" in message and "\n" not in message
        with pytest.raises(Busy, match=f"PID {writer.pid}"):
            with warehouse.reading(db, timeout=0.5):
                pass
        proc = subprocess.run([sys.executable, "-m", "finegpt_pipeline", "stats",
                               str(sample_shard), "--db", str(db)], capture_output=True,
                              text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO),
                                                           "FINEGPT_WAREHOUSE_WAIT_S": "1"})
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()  # progress lines, then the error in one
        assert lines[-1] == f"finegpt stats: error: {message}"
        assert any(line.endswith("waiting up to 1 s") for line in lines[:-1])
    finally:
        release(writer)
    assert _rows(db) == {"first": 300}
    assert not [p for p in db.parent.iterdir() if ".tmp-" in p.name]


def test_writers_take_turns(db):
    code = ("import sys; from finegpt_pipeline.locks import Lock; "
            "l = Lock(sys.argv[1] + '.lock', shared=False); print('ready', flush=True); "
            "sys.stdin.read()")
    other = hold(code, str(db))
    try:
        with pytest.raises(Busy, match=f"being written by pid {other.pid}"):
            with warehouse.writing(db, timeout=0.5):
                pass
    finally:
        release(other)
    with warehouse.writing(db, timeout=0.5) as con:
        con.execute("DELETE FROM documents WHERE shard = 'first'")
    assert _rows(db) == {}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
