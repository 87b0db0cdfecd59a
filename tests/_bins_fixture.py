"""Build nanoGPT bins from the real FineWeb sample for trainer tests (the tokenizer stage is
another module's job; this is the format it writes: EOT before each document, uint16)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from finegpt_pipeline.layout import write_meta
from finegpt_pipeline.config import EOT_TOKEN
from finegpt_pipeline.data.tokenizer import encode_batch


def make_bins(shard: Path, out: Path, val_every: int = 10, max_docs: int | None = None) -> Path:
    """Every `val_every`-th document goes to val.bin (spread over the shard), the rest to train.bin."""
    texts = pq.read_table(shard, columns=["text"]).column("text").to_pylist()[:max_docs]
    docs = encode_batch(texts)
    out.mkdir(parents=True, exist_ok=True)
    val = [d for i, d in enumerate(docs) if i % val_every == val_every - 1]
    train = [d for i, d in enumerate(docs) if i % val_every != val_every - 1]
    for split, part in (("train", train), ("val", val)):
        ids = np.array([t for doc in part for t in (EOT_TOKEN, *doc)], dtype=np.uint16)
        ids.tofile(out / f"{split}.bin")
    write_meta(out)  # the trainer's Bins wants a meta.json that matches the files
    return out


def unigram_entropy_nats(bin_path: Path) -> float:
    ids = np.fromfile(bin_path, dtype=np.uint16)
    p = np.bincount(ids).astype(np.float64)
    p = p[p > 0] / ids.size
    return float(-(p * np.log(p)).sum())


def heldout_unigram_nats(train_bin: Path, val_bin: Path, vocab_size: int = 50304) -> float:
    """The best a frequency-only predictor does on the val tokens: training counts with add-alpha
    smoothing (alpha picked on val itself, so this baseline is, if anything, flattered)."""
    train = np.bincount(np.fromfile(train_bin, dtype=np.uint16), minlength=vocab_size)
    val = np.fromfile(val_bin, dtype=np.uint16)
    return min(float(-np.log((train[val] + a) / (train.sum() + a * vocab_size)).mean())
               for a in (0.01, 0.03, 0.1, 0.3, 1.0))


@pytest.fixture(scope="session")
def sample_bins(tmp_path_factory, sample_shard) -> Path:
    """nanoGPT bins of the real 300-document sample (187,298 train, 28,792 val tokens)."""
    return make_bins(sample_shard, tmp_path_factory.mktemp("bins"))


def write_plan(path: Path, **fields) -> Path:
    """A tiny CPU plan; keyword arguments override. Plan report keys are allowed, as in a real plan."""
    plan = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, micro_batch=4, grad_accum=1,
                learning_rate=3e-3, min_lr=3e-4, warmup_iters=5, lr_decay_iters=40, max_iters=40,
                eval_interval=20, eval_iters=2, log_interval=1, checkpoint_interval=8,
                device="cpu", dtype="auto", compile="auto", est_hours=0.001)
    plan.update(fields)
    path.write_text(json.dumps(plan))
    return path


def child_env(threads: int = 1) -> dict[str, str]:
    """Environment for trainer subprocesses: this tree's code, fixed threads, no tracking."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI",)}
    # this tree first, then whatever the caller's PYTHONPATH held (packages installed there)
    path = [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join(p for p in path if p))
    return env


def damaged_copy(bins: Path, dest: Path, flip_at: int) -> Path:
    """A copy of finished bins with two faults in train.bin: the id at `flip_at` changed (the
    decoded text no longer matches its document) and the last id outside GPT-2's vocabulary."""
    dest.mkdir()
    for name in ("meta.json", "val.bin"):
        (dest / name).write_bytes((bins / name).read_bytes())
    train = np.fromfile(bins / "train.bin", dtype=np.uint16)
    train[flip_at] = (int(train[flip_at]) + 1) % 50000
    train[-1] = 50300  # outside the vocabulary
    train.tofile(dest / "train.bin")
    return dest
