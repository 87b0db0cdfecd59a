"""A training run's directory: the files a run writes there, and the rules for reusing one.

A directory holding a run is continued (`--resume`), started over (`--overwrite`: the run's
files are removed once the new run is known to start), or refused; a finished one (its summary
at the planned step count, checkpoint beside it) can be returned as it is. No torch import
here: the Dagster code location reads these rules too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterable

from finegpt_pipeline import layout
from finegpt_pipeline.config import plan_parts
from finegpt_pipeline.locks import Lock, wait_for
from finegpt_pipeline.train import launcher_watch

CKPT_NAME = "ckpt.pt"
SUMMARY_NAME = "summary.json"
LOG_NAME = "train_log.jsonl"
MLFLOW_RUN_FILE = "mlflow_run_id"
# the run's one plan file: the config it trained (overrides applied) and the --plan file's
# report (estimates, hardware, warnings) as it was; the `trained_checkpoint` asset also
# launches the trainer with --plan pointing here
PLAN_NAME = "plan.json"
# what a run leaves behind; a directory with any of the first three holds a run
RUN_FILES = (CKPT_NAME, SUMMARY_NAME, LOG_NAME, MLFLOW_RUN_FILE, PLAN_NAME)
_RUN_MARKERS = RUN_FILES[:3]
# plan files older runs kept beside plan.json: removed with them on --overwrite
_OLD_PLAN_FILES = ("plan_estimates.json", "launch_plan.json")
# longer than an orphaned trainer takes to stop (at most its grace period, then a hard exit)
LOCK_WAIT_S = launcher_watch.GRACE_S + 30.0


def lock(out_dir: str | Path) -> Lock:
    """The run directory's lock, held while a trainer uses it (two trainers on one run would
    mix its checkpoints): the directory itself is locked, so nothing is written in it. Waited
    for, since a trainer whose launcher died may still be stopping; then Busy."""
    return wait_for(out_dir, shared=False, wait_s=LOCK_WAIT_S,
                    fix="another trainer is using this run directory: wait for it to finish, "
                        "stop it, or choose another --out")


def held_run(out_dir: str | Path) -> list[str]:
    """The run files in `out_dir` that show it already holds a run ([] for a fresh one)."""
    out = Path(out_dir)
    return [name for name in _RUN_MARKERS if (out / name).exists()]


def check_start(out_dir: str | Path, resume: bool, overwrite: bool) -> None:
    """A fresh run into a directory that holds one would mix two runs' checkpoints and logs."""
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other: continue the run in "
                         f"{out_dir} or start it over")
    if resume:
        if not (Path(out_dir) / CKPT_NAME).exists():
            raise FileNotFoundError(f"{Path(out_dir) / CKPT_NAME}: --resume given but no "
                                    "checkpoint there")
        return
    found = held_run(out_dir)
    if found and not overwrite:
        raise ValueError(f"{out_dir}: already holds a run ({', '.join(found)}); pass --resume "
                         "to continue it, --overwrite to start over, or choose another --out")


def clear(out_dir: str | Path) -> None:
    """Remove a previous run's files (for --overwrite, once the new run is known to start)."""
    for name in RUN_FILES + _OLD_PLAN_FILES:
        (Path(out_dir) / name).unlink(missing_ok=True)


TRAIN_MODULE = "finegpt_pipeline.train"  # `python -m` / `torchrun -m` runs its __main__


def run_key(plan: dict, bins_dir: str | Path, overrides: Iterable[str] = (),
            max_iters: int = 0) -> str:
    """A run directory's name: same plan, bins and launch settings (`--set` overrides,
    `--max-iters`) -> same directory, so a retried run resumes; changing any of them starts a
    run of its own. The loss forecast is a prediction about the run, not an input to it: a
    refit after an eval must not start the same training again."""
    report = {k: v for k, v in (plan.get("report") or {}).items() if k != "loss_forecast"}
    plan = {**plan, "report": report} if "report" in plan else plan
    return layout.json_digest({"plan": plan, "bins": layout.bins_fingerprint(bins_dir),
                               "overrides": list(overrides), "max_iters": max_iters}, 12)


def train_command(bins_dir: str | Path, plan_path: str | Path, out_dir: str | Path,
                  resume: bool, processes: int, extra: list[str] | None = None,
                  python: str = sys.executable) -> list[str]:
    """The trainer's command line, as a user or a cluster runs it: one process, or one per GPU
    under torchrun; `python` is the interpreter where it runs (a k8s pod's image has its own)."""
    args = ["-m", TRAIN_MODULE, "--bins", str(bins_dir), "--plan", str(plan_path),
            "--out", str(out_dir), *(["--resume"] if resume else []), *(extra or [])]
    if processes > 1:
        return [python, "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={processes}", *args]
    return [python, *args]


def read_summary(out_dir: str | Path) -> dict[str, Any] | None:
    """The run directory's summary.json (the one reader of it); None when it is missing or
    unreadable (a bare nanoGPT checkpoint's directory, a run not finished)."""
    try:
        summary = json.loads((Path(out_dir) / SUMMARY_NAME).read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def read_config(out_dir: str | Path) -> dict[str, Any]:
    """The config the run in `out_dir` trained (its plan.json `config`); {} when unreadable."""
    try:
        return plan_parts(json.loads((Path(out_dir) / PLAN_NAME).read_text()))[0]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def finished_run(out_dir: str | Path) -> dict[str, Any] | None:
    """The summary of a run in `out_dir` that reached the max_iters it planned (its own
    plan.json), checkpoint beside it; None when there is none, or its files are unreadable
    (a fresh or resumed run then repairs them)."""
    out = Path(out_dir)
    if not (out / CKPT_NAME).exists():
        return None
    try:
        planned = plan_parts(json.loads((out / PLAN_NAME).read_text()))[0]["max_iters"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    summary = read_summary(out)
    if summary is None or summary.get("steps") != planned:
        return None
    return summary
