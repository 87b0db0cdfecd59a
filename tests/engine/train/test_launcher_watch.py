"""A trainer whose launcher dies stops by itself (finegpt_pipeline/train/launcher_watch.py), and one
run directory takes one trainer at a time (run_dir.lock), so a retried run never trains beside
an orphan of the run it replaces."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests._bins_fixture import child_env, sample_bins, write_plan  # noqa: F401 (fixture)
from finegpt_pipeline.train import checkpoint, launcher_watch, run_dir
from finegpt_pipeline.locks import Busy


def test_identity_tells_a_live_process_from_a_gone_one():
    assert launcher_watch.identity(os.getpid())
    proc = subprocess.Popen(["sleep", "60"])
    started = launcher_watch.identity(proc.pid)
    assert started and started == launcher_watch.identity(proc.pid)
    proc.kill()
    deadline = time.time() + 10
    while launcher_watch.identity(proc.pid) is not None and time.time() < deadline:
        time.sleep(0.05)
    assert launcher_watch.identity(proc.pid) is None  # a zombie, not yet reaped, is gone
    proc.wait()
    assert launcher_watch.identity(proc.pid) is None


def test_nothing_is_watched_without_a_launcher_and_a_bad_pid_is_one_line():
    assert launcher_watch.watch(env={}) is None
    with pytest.raises(ValueError, match=r"^FINEGPT_LAUNCHER_PID='12x': not a process id; unset"):
        launcher_watch.watch(env={launcher_watch.LAUNCHER_PID_ENV: "12x"})


def test_a_run_directory_takes_one_trainer_and_the_lock_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(run_dir, "LOCK_WAIT_S", 0.2)
    held = run_dir.lock(tmp_path)
    with pytest.raises(Busy, match=rf"^{tmp_path}: held by pid {os.getpid()} .* for over 0 s; "
                                   "another trainer is using this run directory"):
        run_dir.lock(tmp_path)
    held.close()
    run_dir.lock(tmp_path).close()
    assert list(tmp_path.iterdir()) == []


def test_an_orphaned_trainer_stops_and_leaves_its_last_checkpoint(sample_bins, tmp_path,
                                                                  monkeypatch):
    launcher = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    plan = write_plan(tmp_path / "plan.json", max_iters=100_000, lr_decay_iters=100_000,
                      checkpoint_interval=2, eval_interval=0)
    out = tmp_path / "run"
    env = {**child_env(), launcher_watch.LAUNCHER_PID_ENV: str(launcher.pid)}
    trainer = subprocess.Popen([sys.executable, "-m", "finegpt_pipeline.train", "--bins",
                                str(sample_bins), "--plan", str(plan), "--out", str(out),
                                "--no-mlflow"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while not (out / "ckpt.pt").exists():
            assert trainer.poll() is None, trainer.stderr.read()[-2000:]
            assert time.time() < deadline, "no checkpoint within 180 s"
            time.sleep(0.1)
        monkeypatch.setattr(run_dir, "LOCK_WAIT_S", 0.2)
        with pytest.raises(Busy, match=f"held by pid {trainer.pid} "):
            run_dir.lock(out)  # the trainer holds its run directory
        launcher.kill()
        launcher.wait()
        returncode = trainer.wait(timeout=60)
    finally:
        launcher.kill()
        trainer.kill()
    stderr = trainer.stderr.read()
    assert returncode == 1  # interrupted: not the hard exit after the grace period
    assert stderr.strip().splitlines()[-1] == (
        f"finegpt train: the process that launched this trainer (pid {launcher.pid}) is gone; "
        "stopping, so that a retry resumes from the last checkpoint")
    ckpt = checkpoint.load(out / "ckpt.pt", map_location="cpu")
    assert ckpt["iter_num"] > 0 and ckpt["iter_num"] % 2 == 0
    assert not list(out.glob(".*.tmp-*"))  # an interrupted save removed its temp file
    run_dir.lock(out).close()  # released: a retry's trainer takes it at once
