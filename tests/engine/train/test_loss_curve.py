"""`loss_curve`: the run's train/val loss against tokens seen, as a PNG in its run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests._bins_fixture import child_env, sample_bins, write_plan  # noqa: F401
from finegpt_pipeline.atomic import artifact_mode
from finegpt_pipeline.train.loss_curve import curve_points, write_loss_curve


def _summary(tmp_path, **extra):
    history = [{"iter": float(i), "tokens_seen": 128.0 * i, "train_loss": 10.0 - i / 4} for i in range(1, 9)]
    val = [{"iter": 0.0, "tokens_seen": 0.0, "val_loss": 10.9}, {"iter": 4.0, "tokens_seen": 512.0, "val_loss": 9.5},
           {"iter": 4.0, "tokens_seen": 512.0, "val_loss": 9.4},  # a resumed run evaluates step 4 again
           {"iter": 8.0, "tokens_seen": 1024.0, "val_loss": 8.7}]
    (tmp_path / "summary.json").write_text(json.dumps({"steps": 8, "history": history, "val_history": val, **extra}))


def test_points_are_one_per_step_in_step_order_the_last_record_winning():
    rows = [{"iter": 4.0, "tokens_seen": 512.0, "val_loss": 9.5}, {"iter": 0.0, "tokens_seen": 0.0, "val_loss": 11.0},
            {"iter": 4.0, "tokens_seen": 512.0, "val_loss": 9.4}, {"iter": 2.0, "tokens_seen": 256.0, "lr": 1.0}]
    assert curve_points(rows, "val_loss") == [(0.0, 11.0), (512.0, 9.4)]


def test_writes_a_png_atomically_into_the_run_dir(tmp_path):
    _summary(tmp_path)
    path = write_loss_curve(tmp_path)
    assert path == tmp_path / "loss_curve.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert path.read_bytes()[16:24] == (340).to_bytes(4, "big") + (250).to_bytes(4, "big")  # width, height: the UI column at 1,400 px
    assert os.stat(path).st_mode & 0o777 == artifact_mode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss_curve.png", "summary.json"]


def test_a_run_without_val_history_still_plots_its_train_curve(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps(
        {"steps": 2, "history": [{"iter": 1.0, "tokens_seen": 8.0, "train_loss": 10.0}]}))
    assert write_loss_curve(tmp_path).read_bytes()[:4] == b"\x89PNG"


def test_no_summary_is_a_one_line_error_naming_the_file_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"summary\.json: no readable run summary.*train the run"):
        write_loss_curve(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_trainer_records_val_history_across_a_resume(sample_bins, tmp_path):
    """summary.json's `val_history` (what the curve's val line reads) survives a resume."""
    plan = write_plan(tmp_path / "plan.json", max_iters=6, lr_decay_iters=6, eval_interval=2,
                      checkpoint_interval=2)
    out = tmp_path / "run"

    def train(*extra):
        subprocess.run([sys.executable, "-m", "finegpt_pipeline.train", "--bins", str(sample_bins),
                        "--plan", str(plan), "--out", str(out), "--no-mlflow", *extra],
                       env=child_env(), check=True, capture_output=True, timeout=120)

    train("--max-iters=4")
    first = json.loads((out / "summary.json").read_text())["val_history"]
    assert int(first[0]["iter"]) == 0 and int(first[-1]["iter"]) == 4 and len(first) >= 2
    assert all(r["tokens_seen"] == 128 * r["iter"] for r in first)  # 4 x 32 tokens a step
    train("--resume")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["val_history"][:len(first)] == first  # kept through the checkpoint
    tokens = [t for t, _ in curve_points(summary["val_history"], "val_loss")]
    assert tokens == sorted(set(tokens)) and tokens[-1] == 6 * 128 and 512.0 in tokens
