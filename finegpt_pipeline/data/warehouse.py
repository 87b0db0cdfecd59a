"""The DuckDB warehouse file, written so that people querying it never break the pipeline.

DuckDB admits one writing process, and any open connection, even a read-only one in a
notebook, keeps a writer out. So a stage never writes the warehouse in place: it copies it,
writes the copy, checkpoints, and renames the copy over the original. Open read-only
connections keep the version they opened (reconnect to see new rows). Writers take turns
through an flock on `<warehouse>.lock`, so concurrent runs never lose each other's rows.

Only a read-write connection held elsewhere (`duckdb.connect(path)` without `read_only=True`)
can still block a stage: it then waits up to FINEGPT_WAREHOUSE_WAIT_S seconds (default 300)
and fails in one line naming the holder's PID and the fix.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

from finegpt_pipeline.atomic import artifact_mode
from finegpt_pipeline.locks import Busy, describe_holders, try_lock

DEFAULT_WAIT_S = 300.0
_HOLDER_RE = re.compile(r"Conflicting lock is held in (.+?) \(PID (\d+)\)")


def wait_s() -> float:
    value = os.environ.get("FINEGPT_WAREHOUSE_WAIT_S")
    try:
        return DEFAULT_WAIT_S if value is None else float(value)
    except ValueError:
        raise ValueError(f"FINEGPT_WAREHOUSE_WAIT_S={value!r}: expected seconds") from None


def _retry(attempt: Callable, db: Path, holder: Callable[[Exception | None], str], fix: str,
           timeout: float, progress: Callable[[str], None] | None):
    """`attempt()` until it returns non-None, or raises other than a lock conflict, or
    `timeout` passes: then one line, "<db>: <holder> for N s; <fix>"."""
    import duckdb

    deadline, delay, told = time.monotonic() + timeout, 0.05, False
    while True:
        try:
            result, last = attempt(), None
        except duckdb.IOException as exc:
            if "Could not set lock" not in str(exc):
                raise
            result, last = None, exc
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise Busy(f"{db}: {holder(last)} for {timeout:.0f} s; {fix}")
        if progress and not told:
            progress(f"{db}: {holder(last)}; waiting up to {timeout:.0f} s")
            told = True
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(2 * delay, 2.0)


def _open_read_write(exc: Exception | None) -> str:
    m = _HOLDER_RE.search(str(exc or ""))
    return "held open read-write by " + (f"PID {m.group(2)} ({m.group(1)})" if m
                                         else "another process")


_CLOSE_IT = ("close that connection (query with duckdb.connect(path, read_only=True), which "
             "never blocks the pipeline) or raise FINEGPT_WAREHOUSE_WAIT_S")


@contextlib.contextmanager
def reading(db_path: str | Path, timeout: float | None = None) -> Iterator:
    """A read-only connection, waiting (at most `timeout`) for a read-write holder to leave."""
    import duckdb

    db = Path(db_path)
    timeout = wait_s() if timeout is None else timeout
    con = _retry(lambda: duckdb.connect(str(db), read_only=True), db, _open_read_write,
                 _CLOSE_IT, timeout, None)
    try:
        yield con
    finally:
        con.close()


@contextlib.contextmanager
def writing(db_path: str | Path, timeout: float | None = None,
            progress: Callable[[str], None] | None = None) -> Iterator:
    """A read-write connection to a copy of the warehouse; on success the copy, checkpointed,
    replaces the warehouse. A failure leaves the warehouse as it was."""
    import duckdb

    db = Path(db_path)
    timeout = wait_s() if timeout is None else timeout
    db.parent.mkdir(parents=True, exist_ok=True)
    lock_path = db.with_name(db.name + ".lock")
    lock = _retry(lambda: try_lock(lock_path, shared=False), db,
                  lambda _: f"being written by {describe_holders(lock_path)}",
                  "let that run finish or raise FINEGPT_WAREHOUSE_WAIT_S", timeout, progress)
    tmp = db.with_name(f".{db.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        if db.exists():
            # a read-only connection admits other readers but no writer: the copy is consistent
            with _retry(lambda: duckdb.connect(str(db), read_only=True), db, _open_read_write,
                        _CLOSE_IT, timeout, progress):
                shutil.copyfile(db, tmp)
                if db.with_name(db.name + ".wal").exists():  # a crashed writer's log
                    shutil.copyfile(db.with_name(db.name + ".wal"), tmp.with_name(tmp.name + ".wal"))
        con = duckdb.connect(str(tmp))
        try:
            yield con
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.chmod(tmp, artifact_mode())
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, db)
    finally:
        for path in (tmp, tmp.with_name(tmp.name + ".wal")):
            path.unlink(missing_ok=True)
        lock.close()
