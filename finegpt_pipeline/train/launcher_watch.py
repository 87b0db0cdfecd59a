"""A trainer the pipeline launched stops once the process that launched it is gone.

`trained_checkpoint` starts the trainer with FINEGPT_LAUNCHER_PID set to the Dagster run
worker's pid. A worker killed outright (SIGKILL, the OOM killer taking it alone) leaves its
trainer running, while Dagster fails the run and its retry starts a new trainer on the same run
directory. The orphan must not train beside it. A daemon thread checks on the launcher four
times a second. Once the launcher is gone, the thread interrupts the trainer as Ctrl-C would:
the MLflow run is closed, and the checkpoint on disk stays the last complete one. If that has
not ended the process within a grace period, the thread ends it outright. The retry waits for
the run directory's lock (`run_dir.lock`), then resumes from that checkpoint into the same
MLflow run. A trainer started by hand has no such variable and is not watched.
"""

from __future__ import annotations

import _thread
import os
import sys
import threading
import time
from pathlib import Path

LAUNCHER_PID_ENV = "FINEGPT_LAUNCHER_PID"
POLL_S = 0.25
GRACE_S = 30.0  # from the interrupt to the hard exit
HARD_EXIT_CODE = 70
gone = threading.Event()  # set once the launcher is gone (the trainer's exit is then quiet)
_PROC = Path("/proc")


def identity(pid: int) -> str | None:
    """The process's start time (what tells it from a later process given the same pid), or
    "" where the OS has no /proc; None once it is gone (a zombie counts as gone)."""
    if not (_PROC / "self" / "stat").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return ""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command, which may hold spaces
    return None if fields[0] in ("Z", "X") else fields[19]  # state; starttime (field 22)


def watch(env: dict[str, str] | None = None) -> threading.Thread | None:
    """Start watching the launcher FINEGPT_LAUNCHER_PID names; None when it names none."""
    value = (os.environ if env is None else env).get(LAUNCHER_PID_ENV, "")
    if not value:
        return None
    if not value.isdigit():
        raise ValueError(f"{LAUNCHER_PID_ENV}={value!r}: not a process id; unset it to train "
                         "without watching a launcher")
    pid = int(value)
    thread = threading.Thread(target=_watch, args=(pid, identity(pid)), name="launcher-watch",
                              daemon=True)
    thread.start()
    return thread


def _watch(pid: int, started: str | None) -> None:
    while started is not None and identity(pid) == started:
        time.sleep(POLL_S)
    print(f"finegpt train: the process that launched this trainer (pid {pid}) is gone; "
          "stopping, so that a retry resumes from the last checkpoint", file=sys.stderr,
          flush=True)
    gone.set()
    _thread.interrupt_main()
    time.sleep(GRACE_S)
    os._exit(HARD_EXIT_CODE)  # the interrupt did not end it (a hung collective): end it outright
