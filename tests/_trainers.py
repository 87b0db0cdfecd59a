"""Finding a test's own trainer processes (others train beside it under pytest-xdist)."""

from __future__ import annotations

from pathlib import Path


def trainer_pids(under: Path) -> list[int]:
    """PIDs of `finegpt_pipeline.train` processes with an argument under `under` (their --out
    or --bins), so other tests' trainers are left alone."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"finegpt_pipeline.train" in cmd and any(str(under).encode() in a for a in cmd):
                pids.append(int(entry.name))
    return pids


def parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])
