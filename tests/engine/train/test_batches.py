"""The trainer's `Bins`: refuses bins without a meta.json or whose meta.json disagrees with the
files, and, while open, keeps `finegpt tokenize` from replacing them (a real second process
holds the lock in each direction)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from finegpt_pipeline import layout
from finegpt_pipeline.data import tokenized_bins
from finegpt_pipeline.train.batches import Bins
from finegpt_pipeline.locks import Busy
from tests._holder import hold, release

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def tokenized(sample_shard, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bins") / "b"
    tokenized_bins.tokenize_shard(sample_shard, out, num_workers=1)
    return out


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in (*layout.BIN_NAMES, layout.META_NAME):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_reads_counts_from_verified_meta(tokenized):
    with Bins(tokenized) as b:
        meta = json.loads((tokenized / "meta.json").read_text())
        assert b.tokens == {"train": meta["train_tokens"], "val": meta["val_tokens"]}


def test_missing_meta_is_refused_with_the_fix(tokenized, tmp_path):
    d = _copy(tokenized, tmp_path / "d")
    (d / "meta.json").unlink()
    with pytest.raises(FileNotFoundError) as err:
        Bins(d)
    assert str(d / "meta.json") in str(err.value) and "finegpt tokenize" in str(err.value)


@pytest.mark.parametrize("split", ["train", "val"])
def test_meta_disagreeing_with_the_files_is_refused(split, tokenized, tmp_path):
    d = _copy(tokenized, tmp_path / "d")
    ids = np.fromfile(d / f"{split}.bin", dtype=np.uint16)
    ids[:-4].tofile(d / f"{split}.bin")  # e.g. a bin from another run beside this meta.json
    with pytest.raises(ValueError, match="not from one run") as err:
        Bins(d)
    assert str(d / f"{split}.bin") in str(err.value)


def test_write_meta_makes_foreign_bins_readable(tmp_path):
    d = tmp_path / "nanogpt"
    d.mkdir()
    np.arange(100, dtype=np.uint16).tofile(d / "train.bin")
    np.arange(40, dtype=np.uint16).tofile(d / "val.bin")
    meta = layout.write_meta(d, note="made elsewhere")
    assert (meta["train_tokens"], meta["val_tokens"], meta["note"]) == (100, 40, "made elsewhere")
    with Bins(d) as b:
        assert b.tokens == {"train": 100, "val": 40}


HOLD_BINS = ("import sys; from finegpt_pipeline.train.batches import Bins; b = Bins(sys.argv[1]); "
             "print('ready', flush=True); sys.stdin.read()")
HOLD_TOKENIZE_LOCK = ("import sys; from finegpt_pipeline.locks import Lock; "
                      "l = Lock(sys.argv[1] + '/.lock', shared=False); "
                      "print('ready', flush=True); sys.stdin.read()")


def test_tokenize_refuses_bins_a_training_reads(tokenized, sample_shard, tmp_path):
    d = _copy(tokenized, tmp_path / "d")
    before = {n: (d / n).read_bytes() for n in (*layout.BIN_NAMES, layout.META_NAME)}
    reader = hold(HOLD_BINS, str(d))
    try:
        with pytest.raises(Busy) as err:
            tokenized_bins.tokenize_shard(sample_shard, d, val_fraction=0.2, num_workers=1)
        message = str(err.value)
        assert str(d) in message and f"pid {reader.pid}" in message and "\n" not in message
        # the CLI says the same in one line (--force: the same shard and settings are reused)
        cli = subprocess.run([sys.executable, "-m", "finegpt_pipeline", "tokenize",
                              str(sample_shard), "--out", str(d), "--force"],
                             capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
        assert cli.returncode == 2 and len(cli.stderr.strip().splitlines()) == 1, cli.stderr
        assert f"{d}: in use by pid {reader.pid}" in cli.stderr
        assert {n: (d / n).read_bytes() for n in before} == before
        assert not [p for p in d.iterdir() if ".tmp-" in p.name]
    finally:
        release(reader)
    meta = tokenized_bins.tokenize_shard(sample_shard, d, val_fraction=0.2, num_workers=1)
    assert layout.verify_files(d) == meta and meta["split"]["val_fraction"] == 0.2


def test_training_refuses_bins_being_tokenized(tokenized, tmp_path):
    d = _copy(tokenized, tmp_path / "d")
    writer = hold(HOLD_TOKENIZE_LOCK, str(d))
    try:
        with pytest.raises(Busy, match=f"being tokenized by pid {writer.pid}"):
            Bins(d)
    finally:
        release(writer)
    Bins(d).close()


def test_closed_bins_release_the_lock(tokenized, sample_shard, tmp_path):
    d = _copy(tokenized, tmp_path / "d")
    readers = [Bins(d), Bins(d)]  # shared: DDP ranks read together
    with pytest.raises(Busy):
        tokenized_bins.tokenize_shard(sample_shard, d, num_workers=1)
    for b in readers:
        b.close()
    tokenized_bins.tokenize_shard(sample_shard, d, num_workers=1)
