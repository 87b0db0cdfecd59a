"""Advisory `flock` locks between the pipeline's processes, and who holds them.

A lock is taken without waiting, or waited for a bounded time (`wait_for`): a stage that cannot
have it raises `Busy`, one line naming the resource, the holding processes (from /proc/locks,
where the OS has it) and what to do. A directory can be locked itself, creating nothing in it.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path


class Busy(RuntimeError):
    """Another process holds a resource this stage needs; the message names it and the fix."""


class Lock:
    """A held `flock` on `path`: a directory, or a file (created if missing); `close()`
    releases it, as does the end of the process."""

    def __init__(self, path: str | Path, shared: bool):
        self.path = Path(path)
        if self.path.is_dir():
            fd = os.open(self.path, os.O_RDONLY)
        else:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except PermissionError:  # a read-only directory: nobody can replace files there
                fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise
        self._fd: int | None = fd

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the last descriptor releases the flock

    @property
    def held(self) -> bool:
        return self._fd is not None


def try_lock(path: str | Path, shared: bool) -> Lock | None:
    """The lock, or None while another process holds a conflicting one."""
    try:
        return Lock(path, shared)
    except BlockingIOError:
        return None


def wait_for(path: str | Path, shared: bool, wait_s: float, fix: str) -> Lock:
    """The lock, waited for up to `wait_s` seconds; then Busy naming the holders and `fix`."""
    deadline = time.monotonic() + wait_s
    while (lock := try_lock(path, shared)) is None:
        if time.monotonic() > deadline:
            raise Busy(f"{path}: held by {describe_holders(path)} for over {wait_s:.0f} s; "
                       f"{fix}")
        time.sleep(0.05)
    return lock


def read_bins_lock(bins_dir: str | Path, lock_name: str, then: str) -> Lock | None:
    """A shared lock on a bins directory's lock file (`layout.LOCK_NAME`), so nothing
    re-tokenizes the bins while they are read; None for a read-only directory without the
    file (nothing can replace the bins there). Busy, naming the tokenizing process and `then`
    (what to do), while they are being written."""
    path = Path(bins_dir) / lock_name
    try:
        lock = try_lock(path, shared=True)
    except OSError:
        return None
    if lock is None:
        raise Busy(f"{bins_dir}: being tokenized by {describe_holders(path)}; {then}")
    return lock


def holders(path: str | Path) -> list[int]:
    """PIDs holding an flock on `path`, per /proc/locks (empty where unknown)."""
    try:
        st = os.stat(path)
        table = Path("/proc/locks").read_text()
    except OSError:
        return []
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    for line in table.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device:
            pids.append(int(fields[4]))
    return sorted(set(pids))


def describe_holders(path: str | Path) -> str:
    """'pid 123 (python -m finegpt_pipeline.train ...)', or 'another process'."""
    described = []
    for pid in holders(path):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            cmd = ""
        described.append(f"pid {pid}" + (f" ({cmd[:80]})" if cmd else ""))
    return ", ".join(described) or "another process"
