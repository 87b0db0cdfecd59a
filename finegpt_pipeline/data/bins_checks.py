"""The asset checks' verification of `tokenized_bins`: ids in the vocabulary, totals against
the stats' recount, and an exact round trip of the bins to the shard's texts. They read the bins
in bounded chunks, never whole, so a check's memory does not grow with the shard."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import numpy as np

from finegpt_pipeline.data import tokenizer
from finegpt_pipeline.config import EOT_TOKEN, GPT2_VOCAB_SIZE, TOKEN_BYTES
from finegpt_pipeline.layout import BIN_NAMES, read_meta
from finegpt_pipeline.data.tokenized_bins import Split, doc_hash
from finegpt_pipeline.data.shard import open_shard


def _split_from_meta(meta: dict) -> Split:
    s = meta["split"]
    min_key = None if s["min_key"] is None else (int(s["min_key"][0]), int(s["min_key"][1]))
    return Split(int(s["hash_threshold"]), min_key)


def verify_ids_in_vocab(bins_dir: str | Path) -> dict:
    top = max_token_id(bins_dir)
    return {"max_id": top, "vocab_size": GPT2_VOCAB_SIZE, "ok": top < GPT2_VOCAB_SIZE}


def verify_totals(meta: dict, tokens_tiktoken: int, documents: int) -> dict:
    """Bins hold the stats' recount plus one EOT per document, and every document."""
    bins_tokens = meta["train_tokens"] + meta["val_tokens"]
    bins_docs = meta["train_docs"] + meta["val_docs"]
    return {"bins_tokens": bins_tokens, "expected_tokens": tokens_tiktoken + documents,
            "bins_docs": bins_docs, "stats_docs": documents,
            "ok": bins_tokens == tokens_tiktoken + documents and bins_docs == documents}


CHUNK_TOKENS = 1 << 22  # 8 MiB of uint16 read at a time: the checks' memory, whatever the bins' size


def _chunks(path: Path, chunk: int) -> Iterator[np.ndarray]:
    """A bin file's ids, `chunk` at a time, read (not memory-mapped: mapped pages that were
    touched stay resident, and a full shard's train.bin is 1.4 GB)."""
    with open(path, "rb") as fh:
        while True:
            data = np.fromfile(fh, dtype=np.uint16, count=chunk)
            if not data.size:
                return
            yield data


def max_token_id(bins_dir: str | Path, chunk: int = CHUNK_TOKENS) -> int:
    """Largest id in train.bin and val.bin (-1 if both are empty), read in chunks."""
    best = -1
    for name in BIN_NAMES:
        for data in _chunks(Path(bins_dir) / name, chunk):
            best = max(best, int(data.max()))
    return best


def _doc_spans(path: Path, chunk: int) -> np.ndarray:
    """Start offsets of documents (positions of their leading EOT), plus the end."""
    starts, end = [], 0
    for data in _chunks(path, chunk):
        starts.append(np.flatnonzero(data == EOT_TOKEN) + end)
        end += data.size
    return np.concatenate(starts + [np.array([end])])


def _read_ids(fh, lo: int, hi: int) -> np.ndarray:
    fh.seek(TOKEN_BYTES * lo)
    return np.fromfile(fh, dtype=np.uint16, count=hi - lo)


def verify_roundtrip(bins_dir: str | Path, shard_path: str | Path,
                     max_docs: int | None = None, chunk: int = CHUNK_TOKENS) -> dict:
    """Decode the bins, split at EOT, and compare with the shard's texts in split order.

    With `max_docs`, only every k-th document (k = ceil(docs / max_docs)) is decoded, so the check
    stays cheap on a full shard. Returns counts and the first mismatches (empty when all agree).
    Memory is bounded whatever the bins' size: the bins are read `chunk` ids at a time (and each
    decoded document), the shard a row group at a time; only the documents' offsets are kept.
    """
    bins_dir = Path(bins_dir)
    meta = read_meta(bins_dir)
    split = _split_from_meta(meta)
    pf = open_shard(shard_path)
    spans = {name: _doc_spans(bins_dir / name, chunk) for name in BIN_NAMES}
    n_docs = sum(len(s) - 1 for s in spans.values())
    step = 1 if not max_docs or n_docs <= max_docs else -(-n_docs // max_docs)
    position = {name: 0 for name in BIN_NAMES}
    mismatches, checked, index = [], 0, 0
    if n_docs != pf.metadata.num_rows:
        mismatches.append(f"bins hold {n_docs} documents, shard has {pf.metadata.num_rows}")
    enc = tokenizer.get_encoding()
    with contextlib.ExitStack() as stack:
        files = {name: stack.enter_context(open(bins_dir / name, "rb")) for name in BIN_NAMES}
        for rg in range(pf.metadata.num_row_groups):
            for text in pf.read_row_group(rg, columns=["text"]).column("text").to_pylist():
                name = "val.bin" if split.is_val(doc_hash(text or ""), index) else "train.bin"
                j = position[name]
                position[name] += 1
                if index % step == 0 and j < len(spans[name]) - 1:
                    lo, hi = int(spans[name][j]), int(spans[name][j + 1])
                    checked += 1
                    try:
                        decoded = enc.decode(_read_ids(files[name], lo + 1, hi).tolist())
                    except KeyError:  # an id outside the vocabulary
                        decoded = None
                    if decoded != text and len(mismatches) < 5:
                        what = "an id outside the vocabulary" if decoded is None else "different text"
                        mismatches.append(f"row {index} ({name} doc {j}) decodes to {what}")
                index += 1
    for name in BIN_NAMES:
        if position[name] != len(spans[name]) - 1:
            mismatches.append(f"{name} holds {len(spans[name]) - 1} documents, the split rule "
                              f"assigns it {position[name]}")
    return {"documents": n_docs, "checked": checked, "mismatches": mismatches,
            "ok": not mismatches}
