"""Build nanoGPT bins from the real FineWeb sample for trainer tests (the tokenizer stage is
another module's job; this is the format it writes: EOT before each document, uint16)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from finegpt_pipeline.config import EOT_TOKEN, GPT2_VOCAB_SIZE
from finegpt_pipeline.tokenizer import encode_batch


def make_bins(shard: Path, out: Path, val_docs: int = 30) -> Path:
    """Last `val_docs` documents go to val.bin, the rest to train.bin."""
    texts = pq.read_table(shard, columns=["text"]).column("text").to_pylist()
    docs = encode_batch(texts)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, part in (("train", docs[:-val_docs]), ("val", docs[-val_docs:])):
        ids = np.array([t for doc in part for t in (EOT_TOKEN, *doc)], dtype=np.uint16)
        ids.tofile(out / f"{split}.bin")
        counts[split] = int(ids.size)
    (out / "meta.json").write_text(json.dumps({
        "vocab_size": GPT2_VOCAB_SIZE, "eot_token": EOT_TOKEN,
        "train_tokens": counts["train"], "val_tokens": counts["val"]}))
    return out


def unigram_entropy_nats(bin_path: Path) -> float:
    ids = np.fromfile(bin_path, dtype=np.uint16)
    p = np.bincount(ids).astype(np.float64)
    p = p[p > 0] / ids.size
    return float(-(p * np.log(p)).sum())
