"""The trainer learns, and rejects bad configs before any training starts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
import torch

from _bins_fixture import (child_env, heldout_unigram_nats, make_bins, sample_bins,  # noqa: F401
                           unigram_entropy_nats, write_plan)
from finegpt_pipeline import train
from finegpt_pipeline.config import TrainConfig


def test_lr_schedule_warms_up_then_decays_to_min():
    cfg = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, lr_decay_iters=100)
    lrs = [train.lr_at(i, cfg) for i in range(120)]
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))  # warmup rises
    assert lrs[10] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:100], lrs[11:101]))  # cosine falls
    assert lrs[100] == lrs[119] == pytest.approx(1e-4)


@pytest.mark.slow
def test_tiny_model_beats_unigram_entropy_on_held_out_documents(sample_bins, tmp_path):
    """The issue's learning criterion on 30 held-out documents: val loss below the unigram
    entropy of the training tokens (7.37 nats), and well below the best frequency-only predictor
    on the same val tokens (7.79; 8% of them never occur in the 270 training documents and cost
    ~13 nats each, so even a count-based bigram model reaches only 7.14). 2 M tokens, ~15
    minutes on 2 CPU cores, so it runs on demand (`make test-slow`), not in the default suite;
    docs/training.md has its latest result and the runs that show fewer steps do not clear the
    bar reliably."""
    entropy = unigram_entropy_nats(sample_bins / "train.bin")
    unigram = heldout_unigram_nats(sample_bins / "train.bin", sample_bins / "val.bin")
    steps = 2000
    plan = write_plan(tmp_path / "plan.json", n_embd=64, block_size=64, micro_batch=16,
                      dropout=0.1, learning_rate=1e-2, min_lr=1e-3, warmup_iters=20,
                      max_iters=steps, lr_decay_iters=steps, eval_interval=steps, eval_iters=28,
                      log_interval=100, checkpoint_interval=steps)
    summary = train.train(train.load_plan(plan), sample_bins, tmp_path / "run", mlflow=False)
    assert summary["steps"] == steps and summary["tokens_seen"] == steps * 16 * 64
    val = summary["final_val_loss"]
    assert val < unigram - 0.3, (val, unigram)
    assert val < entropy - 0.05, (val, entropy)  # seeds measured: 0.10-0.14 below
    assert (tmp_path / "run" / "ckpt.pt").exists()


def test_tiny_model_learns_context_on_one_document(sample_shard, tmp_path):
    """Fast learning check for every run: loss below the unigram entropy of the training tokens
    is out of reach of any predictor that ignores context, so getting there on one real document
    (many epochs) shows that model, loss, data windows and optimizer learn together. Small models
    sit on a plateau at the unigram entropy before they escape it, so the learning rate stays
    high (min_lr = learning_rate). The held-out version above takes ~15 minutes."""
    bins = make_bins(sample_shard, tmp_path / "bins", max_docs=2, val_every=2)
    entropy = unigram_entropy_nats(bins / "train.bin")
    plan = write_plan(tmp_path / "plan.json", n_embd=64, block_size=32, micro_batch=8,
                      learning_rate=1e-2, min_lr=1e-2, max_iters=200, lr_decay_iters=200,
                      warmup_iters=10, eval_interval=200, eval_iters=2, log_interval=10,
                      checkpoint_interval=200)
    torch.manual_seed(0)
    train.train(train.load_plan(plan), bins, tmp_path / "run", mlflow=False)
    history = json.loads((tmp_path / "run" / "summary.json").read_text())["history"]
    late_train_loss = sum(row["train_loss"] for row in history[-3:]) / 3
    assert late_train_loss < entropy - 0.5, (late_train_loss, entropy)


@pytest.mark.parametrize("fields, message", [
    ({"n_embd": 30, "n_head": 4}, "divisible by n_head"),
    ({"n_layers": 2}, "unknown config keys ['n_layers']"),
    ({"block_size": 1_000_000}, "fewer than block_size + 1"),
    ({"dtype": "float8"}, "dtype must be"),
])
def test_bad_config_fails_before_training(sample_bins, tmp_path, fields, message):
    plan = write_plan(tmp_path / "plan.json", **fields)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=re.escape(message)):
        train.train(train.load_plan(plan), sample_bins, tmp_path / "run", mlflow=False)
    assert time.perf_counter() - start < 5  # rejected up front, not after a training step
    assert not (tmp_path / "run" / "ckpt.pt").exists()


def test_cli_reports_bad_plan_in_one_line(sample_bins, tmp_path):
    plan = write_plan(tmp_path / "plan.json", n_embd=30, n_head=4)
    proc = subprocess.run(
        [sys.executable, "-m", "finegpt_pipeline.train", "--bins", str(sample_bins),
         "--plan", str(plan), "--out", str(tmp_path / "run")],
        capture_output=True, text=True, env=child_env(), timeout=60)
    assert proc.returncode == 2
    assert "n_embd (30) must be divisible by n_head (4)" in proc.stderr
    assert str(plan) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_bins_named_in_error(tmp_path):
    plan = write_plan(tmp_path / "plan.json")
    with pytest.raises(FileNotFoundError, match="bins directory not found"):
        train.train(train.load_plan(plan), tmp_path / "nope", tmp_path / "run", mlflow=False)


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "meta.json").write_text("{half written"), "meta.json: not valid JSON"),
    (lambda d: (d / "val.bin").write_bytes(b"\x01\x02\x03"), "val.bin: odd byte size"),
    (lambda d: (d / "train.bin").unlink(), "train.bin: missing"),
])
def test_damaged_bins_named_in_error(sample_bins, tmp_path, damage, message):
    import shutil

    bins = shutil.copytree(sample_bins, tmp_path / "bins")
    damage(bins)
    plan = write_plan(tmp_path / "plan.json")
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(str(bins / message))):
        train.train(train.load_plan(plan), bins, tmp_path / "run", mlflow=False)


def test_set_overrides_and_report_keys(tmp_path):
    plan = write_plan(tmp_path / "plan.json", tokens_per_step=128, warnings=["x"])
    cfg = train.load_plan(plan, ["n_layer=3", "learning_rate=5e-4"])
    assert (cfg.n_layer, cfg.learning_rate) == (3, 5e-4)
    with pytest.raises(ValueError, match="unknown config key 'nlayer'"):
        train.load_plan(plan, ["nlayer=3"])
    assert json.loads(plan.read_text())["warnings"] == ["x"]
