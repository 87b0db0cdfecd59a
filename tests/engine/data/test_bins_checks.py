"""tokenized_bins' checks read the bins in bounded chunks: the same verdicts at any chunk size,
and a check's memory does not grow with the bins (a full shard's train.bin is 1.4 GB)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from finegpt_pipeline import layout
from finegpt_pipeline.data import bins_checks, tokenized_bins, tokenizer
from finegpt_pipeline.config import EOT_TOKEN
from tests._bins_fixture import damaged_copy

REPO = Path(__file__).resolve().parents[3]


def test_same_results_at_any_chunk_size(sample_shard, tmp_path):
    out = tmp_path / "b"
    tokenized_bins.tokenize_shard(sample_shard, out, num_workers=1)
    broken = damaged_copy(out, tmp_path / "broken", flip_at=5000)
    for bins in (out, broken):
        whole = bins_checks.verify_roundtrip(bins, sample_shard)
        for chunk in (61, 4096):
            assert bins_checks.verify_roundtrip(bins, sample_shard, chunk=chunk) == whole
            assert bins_checks.max_token_id(bins, chunk=chunk) == bins_checks.max_token_id(bins)
        assert whole["ok"] == (bins == out) and whole["checked"] == 300
    assert bins_checks.max_token_id(broken, chunk=5) == 50300


# VmHWM, this process's own peak RSS (ru_maxrss would start from the forked test runner's)
_MEASURE = """
import json, re, sys
import pyarrow.parquet as pq
from finegpt_pipeline.data import bins_checks, tokenizer
def hwm():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
tokenizer.get_encoding()
pq.ParquetFile(sys.argv[2]).read_row_group(0)  # imports and first buffers before the baseline
base = hwm()
roundtrip = bins_checks.verify_roundtrip(sys.argv[1], sys.argv[2], max_docs=40)
in_vocab = bins_checks.verify_ids_in_vocab(sys.argv[1])
peak = hwm()
print(json.dumps({"growth_kib": peak - base, "roundtrip": roundtrip, "in_vocab": in_vocab}))
"""


def test_check_memory_stays_bounded_on_bins_far_larger_than_a_chunk(sample_shard, tmp_path):
    """70 MB of train.bin (8 chunks) and 140 MB of text: the checks, run in their own process,
    grow its peak RSS by less than half the bins' size (mapping the bins whole kept every page
    touched resident, all 70 MB, and pyarrow's batch reader kept the texts: 860 MB)."""
    enc = tokenizer.get_encoding()
    pattern_text = pq.read_table(sample_shard, columns=["text"]).column("text")[0].as_py()
    pattern = enc.encode_ordinary(pattern_text)
    reps = -(-100_000 // len(pattern))
    texts, bins = [], {"train.bin": [], "val.bin": []}
    split = tokenized_bins.Split(tokenized_bins._threshold(0.1))
    for i in range(400):  # decoding ids_i gives text_i exactly, which is all the check compares
        prefix = f"document {i}\n"
        text = prefix + pattern_text * reps
        ids = np.concatenate([[EOT_TOKEN], enc.encode_ordinary(prefix), np.tile(pattern, reps)])
        texts.append(text)
        name = "val.bin" if split.is_val(tokenized_bins.doc_hash(text), i) else "train.bin"
        bins[name].append(ids.astype(np.uint16))
    out = tmp_path / "big"
    out.mkdir()
    for name, parts in bins.items():
        np.concatenate(parts).tofile(out / name)
    layout.write_meta(out, split={"hash_threshold": str(split.hash_threshold), "min_key": None})
    shard = tmp_path / "big.parquet"
    pq.write_table(pa.table({"text": texts}), shard, row_group_size=4)
    train_bytes = (out / "train.bin").stat().st_size
    assert train_bytes > 8 * 2 * bins_checks.CHUNK_TOKENS  # 8 chunks and more
    del texts, bins
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(out), str(shard)], check=True,
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    result = json.loads(done.stdout)
    assert result["roundtrip"]["ok"] and result["roundtrip"]["documents"] == 400
    assert result["roundtrip"]["checked"] == 40 and result["in_vocab"]["ok"]
    # ~24 MB: a chunk and its EOT mask, a row group's texts, a decoded document (before: 860 MB)
    assert result["growth_kib"] * 1024 < train_bytes / 2, result["growth_kib"]

