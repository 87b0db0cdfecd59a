"""The tokenize stage (`finegpt tokenize`, the `tokenized_bins` asset): a FineWeb shard as
nanoGPT's `train.bin` / `val.bin` (uint16 GPT-2 ids, every document preceded by EOT 50256) plus
`meta.json`. The directory's layout, the meta.json reader and the fingerprint are in `layout`
(light: the trainer reads bins through `batches.Bins` without importing this stage).

Each worker process reads its own row groups straight from the parquet file and returns one
contiguous token array per row group, so neither texts nor per-document token lists cross
process boundaries (the cost of the usual multiprocessing-Pool-per-document pattern). The main
process only appends arrays, in source order, to temp files beside the targets; peak memory is a
few row groups, whatever the shard size. `meta.json` is renamed into place last: it is the
marker of a complete output. Into a FINEGPT_HOME's `bins/`, the shard is tokenized once for
both data stages (`token_ids`): the ids token_stats kept are split instead, a chunk at a time,
with the same bytes as a result; with none kept yet, this stage keeps them first (token_stats
then reuses them). A damaged cache is noticed before anything is published, removed, and the
shard tokenized as usual.

Split rule (stable, streaming-decidable): a document is in val iff blake2b-64(utf-8 text) <
val_fraction * 2**64, or its key (hash, row index) is among the `min_val_docs` smallest keys of
the shard. The row index only breaks ties between exact duplicates. By default `min_val_docs`
is 30, or a tenth of a shard under 300 documents: a sample gets a val split worth reporting
(0.5% of 300 documents would be two), while a full shard (~1M documents) keeps its 0.5%.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
import multiprocessing as mp

import numpy as np

from finegpt_pipeline.data import token_ids, tokenizer
from finegpt_pipeline.atomic import temp_beside, write_json
from finegpt_pipeline.config import EOT_TOKEN, GPT2_VOCAB_SIZE
from finegpt_pipeline.layout import BIN_NAMES, LOCK_NAME, META_NAME, verify_files
from finegpt_pipeline.locks import Busy, describe_holders, try_lock
from finegpt_pipeline.data.progress import Progress, Report, to_stderr
from finegpt_pipeline.data.shard import (ShardError, add_shard_arguments, open_shard, shard_from_args,
                                    verified_sha256)
from finegpt_pipeline.data.token_ids import doc_hash  # the split rule's hash (bins_checks' too)

DEFAULT_VAL_FRACTION = 0.005
DEFAULT_MIN_VAL_DOCS = 30  # at most; a smaller shard gets a tenth of its documents (min_val_docs_for)
# Beyond this many expected val docs, falling short of min_val_docs is practically impossible
# (P < e^-100), so the extra hashing pass is skipped; the rare miss still gets a second pass.
_PREPASS_MARGIN = 100
SPLIT_RULE = ("val iff blake2b(utf-8 text, digest_size=8) as big-endian uint64 < hash_threshold, "
              "or (hash, row index) <= min_key (the min_val_docs-th smallest key); "
              "documents keep source order within each split")


def min_val_docs_for(n_docs: int, requested: int | None = None) -> int:
    """The val-document minimum for a shard: `requested` as given, or by default
    DEFAULT_MIN_VAL_DOCS, capped at a tenth of the shard (at least one document)."""
    if requested is not None:
        return requested
    return min(DEFAULT_MIN_VAL_DOCS, max(1, n_docs // 10))


@dataclass(frozen=True)
class Split:
    hash_threshold: int          # hash < threshold -> val
    min_key: tuple[int, int] | None = None   # (hash, index) <= min_key -> val

    def is_val(self, h: int, index: int) -> bool:
        return h < self.hash_threshold or (self.min_key is not None and (h, index) <= self.min_key)


def _threshold(val_fraction: float) -> int:
    return min(int(val_fraction * 2**64), 2**64)


def _null_text(path: str, row: int, nulls: int, rg: int) -> ShardError:
    return ShardError(f"{path}: `text` is null at row {row} ({nulls} null rows in row group {rg})")


# ---------------------------------------------------------------- worker side (one row group)

def _row_group_texts(path: str, rg: int, first_index: int) -> list[str]:
    col = token_ids.worker_shard(path).read_row_group(rg, columns=["text"]).column("text")
    if col.null_count:
        first_null = next(i for i, v in enumerate(col.is_null().to_pylist()) if v)
        raise _null_text(path, first_index + first_null, col.null_count, rg)
    return col.to_pylist()


def _smallest_keys(path: str, rg: int, first_index: int, k: int) -> list[tuple[int, int]]:
    texts = _row_group_texts(path, rg, first_index)
    return heapq.nsmallest(k, ((doc_hash(t), first_index + i) for i, t in enumerate(texts)))


def _encode_row_group(path: str, rg: int, first_index: int, split: Split):
    """Row group -> (train uint16, val uint16, train docs, val docs)."""
    texts = _row_group_texts(path, rg, first_index)
    train, val = [], []
    for i, text in enumerate(texts):
        (val if split.is_val(doc_hash(text), first_index + i) else train).append(text)
    try:
        return (tokenizer.encode_docs_uint16(train), tokenizer.encode_docs_uint16(val),
                len(train), len(val))
    except ValueError as exc:
        raise ValueError(f"{path}: row group {rg}: {exc}") from None


# ---------------------------------------------------------------- driver

def tokenize_shard(shard_path: str | Path, out_dir: str | Path,
                   val_fraction: float = DEFAULT_VAL_FRACTION,
                   min_val_docs: int | None = None,
                   num_workers: int | None = None,
                   expected_sha256: str | None = None,
                   progress: Report | None = None,
                   ids_root: str | Path | None = None) -> dict:
    """Write `train.bin`, `val.bin`, `meta.json` for a shard into `out_dir`; return the meta.
    `min_val_docs=None` is the default minimum (`min_val_docs_for`); `expected_sha256` (what
    raw_shard recorded) refuses a file whose bytes changed since (`shard.verified_sha256`, the
    policy token_stats follows too); `progress` gets progress lines (`finegpt_pipeline.data.progress`);
    the shard's ids that token_stats kept are looked for under `ids_root` (default:
    `token_ids.root_for_bins(out_dir)`, the FINEGPT_HOME holding `out_dir`).

    Everything is written to temp files first; only a finished run replaces the files under
    their final names (old meta.json first, new one last). A failed run into a new directory
    leaves nothing; into an existing one, the previous output as it was. The directory's lock
    is taken first: bins that a training reads (`batches.Bins`) are never replaced."""
    shard_path = Path(shard_path)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val fraction must be in [0, 1), got {val_fraction}")
    if min_val_docs is not None and min_val_docs < 0:
        raise ValueError(f"min val docs must be >= 0, got {min_val_docs}")
    pf = open_shard(shard_path)
    tokenizer.get_encoding()  # tokenizer files present, or one clear error before any work
    sha256 = verified_sha256(shard_path, expected_sha256)  # before anything is written
    n_docs = pf.metadata.num_rows
    requested, min_val_docs = min_val_docs, min_val_docs_for(n_docs, min_val_docs)
    if min_val_docs >= n_docs:
        raise ShardError(f"{shard_path}: {n_docs} documents cannot hold {min_val_docs} val "
                         f"documents and a train split")
    starts = np.cumsum([0] + [pf.metadata.row_group(i).num_rows
                              for i in range(pf.num_row_groups)]).tolist()
    path = str(shard_path.resolve())
    workers = max(1, num_workers or tokenizer.default_threads())
    workers = min(workers, pf.num_row_groups)
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = try_lock(out_dir / LOCK_NAME, shared=False)
    if lock is None:
        raise Busy(f"{out_dir}: in use by {describe_holders(out_dir / LOCK_NAME)}; re-tokenizing "
                   "would change the data under a running training: wait for it to end, or "
                   "tokenize into another directory")
    temps: dict[str, Path] = {}
    prog = Progress(progress, "tokenize", len(starts) - 1)
    publishing = False
    if ids_root is None:
        ids_root = token_ids.root_for_bins(out_dir)
    try:
        temps.update({name: temp_beside(out_dir / name) for name in BIN_NAMES})
        meta = _tokenize(shard_path, path, starts, temps, val_fraction,
                         (min_val_docs, requested), workers, sha256, prog, ids_root, out_dir)
        publishing = True
        _publish(out_dir, temps, meta)
        prog.finish(f"{meta['train_docs']:,} train / {meta['val_docs']:,} val docs in {out_dir}")
    except BaseException:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        if created:  # a failed run into a new dir leaves nothing behind
            for name in (*BIN_NAMES, META_NAME, LOCK_NAME):
                (out_dir / name).unlink(missing_ok=True)
            if not any(out_dir.iterdir()):
                out_dir.rmdir()
        elif publishing:  # half replaced: nothing under the final names
            for name in BIN_NAMES:
                (out_dir / name).unlink(missing_ok=True)
        raise
    finally:
        lock.close()
    return meta


def finished_bins(out_dir: str | Path, source_sha256: str, val_fraction: float,
                  min_val_docs: int | None) -> dict | None:
    """The meta of complete bins in `out_dir` tokenized from this shard (`source_sha256`) with
    these split settings, as `tokenize_shard` records them; None when there are none (missing,
    unfinished, or made from other inputs)."""
    try:
        meta = verify_files(out_dir)
    except (FileNotFoundError, ValueError):
        return None
    split = meta.get("split", {})
    same = (meta.get("source_sha256") == source_sha256 and split.get("val_fraction") == val_fraction
            and split.get("min_val_docs_requested") == min_val_docs)
    return meta if same else None


def _publish(out_dir: Path, temps: dict[str, Path], meta: dict) -> None:
    """Old marker first, new marker last: in between, the directory reads as incomplete."""
    (out_dir / META_NAME).unlink(missing_ok=True)
    for name, tmp in temps.items():
        os.replace(tmp, out_dir / name)
    write_json(out_dir / META_NAME, meta)


def _tokenize(shard_path, path, starts, temps, val_fraction, min_val, workers, sha256: str,
              prog: Progress, ids_root, out_dir) -> dict:
    (min_val_docs, requested), n_docs = min_val, starts[-1]
    done, damaged = None, None
    for attempt in ("kept", "built") if ids_root is not None else ():
        if attempt == "built":  # nobody kept them yet: tokenize once, keeping them for token_stats
            token_ids.counts_for(path, sha256, ids_root, workers, prog.report, "tokenize",
                                 "tokenizing")
        with token_ids.reading(sha256, n_docs, ids_root, report=prog.report) as ids:
            if ids is not None:
                prog.begin(f"{shard_path}: {n_docs:,} docs in {len(starts) - 1} row groups, "
                           f"from the ids {attempt} in {ids.dir} -> {out_dir}")
                try:
                    done = _split_ids(path, starts, ids, temps, val_fraction, min_val_docs, prog)
                except token_ids.CacheInvalid as exc:
                    damaged = exc
        if done is not None or damaged is not None:
            break
    if damaged is not None:
        token_ids.discard(sha256, ids_root)
        prog.begin(f"{damaged}: the cache is removed; tokenizing the shard instead")
    if done is None:
        prog.begin(f"{shard_path}: {n_docs:,} docs in {len(starts) - 1} row groups, "
                   f"{workers} worker(s) -> {out_dir}")
        prog.total, prog.unit = len(starts) - 1, "row groups"
        prog.done = prog.docs = prog.tokens = 0
        pool = (ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
                if workers > 1 else None)
        try:
            done = _tokenize_texts(path, starts, temps, val_fraction, min_val_docs, workers, pool,
                                   prog)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    split, counts = done
    if counts["train_docs"] == 0:
        raise ShardError(f"{shard_path}: val fraction {val_fraction} leaves no train documents")
    return {
        "vocab_size": GPT2_VOCAB_SIZE,
        "eot_token": EOT_TOKEN,
        "dtype": "uint16",
        "tokenizer": f"tiktoken {tokenizer.ENCODING_NAME} encode_ordinary",
        **counts,
        "split": {"rule": SPLIT_RULE, "val_fraction": val_fraction, "min_val_docs": min_val_docs,
                  "min_val_docs_requested": requested,  # None: the default for this shard's size
                  "hash_threshold": str(split.hash_threshold),
                  "min_key": None if split.min_key is None else [str(split.min_key[0]),
                                                                 split.min_key[1]]},
        "source_path": path,  # the local file tokenized (raw_shard's `path`)
        "source_sha256": sha256,
        "source_rows": n_docs,
    }


def _tokenize_texts(path, starts, temps, val_fraction, min_val_docs, workers, pool,
                    prog: Progress) -> tuple[Split, dict]:
    """The split and the counts, tokenizing the shard's texts in the worker pool."""
    split = Split(_threshold(val_fraction))
    if starts[-1] * val_fraction < _PREPASS_MARGIN * max(min_val_docs, 1):
        split = _with_min_key(split, path, starts, min_val_docs, pool, workers)
    counts = _write_bins(path, starts, split, temps, pool, workers, prog)
    if counts["val_docs"] < min_val_docs:
        prog.note(f"{counts['val_docs']} val docs, fewer than {min_val_docs}: a second pass")
        split = _with_min_key(split, path, starts, min_val_docs, pool, workers)
        prog.done = prog.docs = prog.tokens = 0
        counts = _write_bins(path, starts, split, temps, pool, workers, prog)
    return split, counts


def _split_ids(path, starts, ids: token_ids.TokenIds, temps, val_fraction, min_val_docs,
               prog: Progress) -> tuple[Split, dict]:
    """The same split and bytes as `_tokenize_texts`, from the shard's cached ids: the rule
    applied to the cached hashes (vectorized), then the ids copied a chunk at a time."""
    nulls = np.flatnonzero(ids.counts < 0)
    if nulls.size:  # the error tokenizing would give
        rg = bisect.bisect_right(starts, int(nulls[0])) - 1
        raise _null_text(path, int(nulls[0]), int(np.count_nonzero(nulls < starts[rg + 1])), rg)
    split = Split(_threshold(val_fraction))
    if starts[-1] * val_fraction < _PREPASS_MARGIN * max(min_val_docs, 1):
        split = _min_key_of(split, ids.hashes, min_val_docs)
    is_val = _val_mask(split, ids.hashes)
    if np.count_nonzero(is_val) < min_val_docs:
        split = _min_key_of(split, ids.hashes, min_val_docs)
        is_val = _val_mask(split, ids.hashes)
    lens = ids.doc_tokens
    counts = dict(train_tokens=int(lens[~is_val].sum()), val_tokens=int(lens[is_val].sum()),
                  train_docs=int(np.count_nonzero(~is_val)), val_docs=int(np.count_nonzero(is_val)))
    prog.total, prog.unit = starts[-1], "docs"
    with open(temps["train.bin"], "wb") as ftrain, open(temps["val.bin"], "wb") as fval:
        token_ids.stream_split(ids, is_val, ftrain, fval,
                               advance=lambda docs, tokens: prog.advance(docs, docs, tokens))
        for fh in (ftrain, fval):
            fh.flush()
            os.fsync(fh.fileno())
    return split, counts


def _min_key_of(split: Split, hashes: np.ndarray, k: int) -> Split:
    """`_with_min_key` from the documents' hashes: the k-th smallest (hash, row index)."""
    if k == 0:
        return split
    j = int(np.lexsort((np.arange(hashes.size), hashes))[k - 1])
    return Split(split.hash_threshold, (int(hashes[j]), j))


def _val_mask(split: Split, hashes: np.ndarray) -> np.ndarray:
    """`split.is_val` of every document at once."""
    if split.hash_threshold >= 2**64:
        mask = np.ones(hashes.size, dtype=bool)
    else:
        mask = hashes < np.uint64(split.hash_threshold)
    if split.min_key is not None:
        h, i = np.uint64(split.min_key[0]), split.min_key[1]
        mask |= (hashes < h) | ((hashes == h) & (np.arange(hashes.size) <= i))
    return mask


def _with_min_key(split: Split, path, starts, k, pool, workers) -> Split:
    if k == 0:
        return split
    args = [(path, rg, starts[rg], k) for rg in range(len(starts) - 1)]
    smallest = heapq.nsmallest(k, (key for keys in token_ids.map_ordered(_smallest_keys, args, pool,
                                                                2 * workers) for key in keys))
    return Split(split.hash_threshold, smallest[-1])


def _write_bins(path, starts, split: Split, temps: dict[str, Path], pool, workers,
                prog: Progress) -> dict:
    """Both splits into their temp files (truncated first); returns the counts."""
    counts = dict(train_tokens=0, val_tokens=0, train_docs=0, val_docs=0)
    with open(temps["train.bin"], "wb") as ftrain, open(temps["val.bin"], "wb") as fval:
        args = [(path, rg, starts[rg], split) for rg in range(len(starts) - 1)]
        for train, val, n_train, n_val in token_ids.map_ordered(_encode_row_group, args, pool,
                                                       2 * workers):
            ftrain.write(memoryview(train))
            fval.write(memoryview(val))
            counts["train_tokens"] += len(train)
            counts["val_tokens"] += len(val)
            counts["train_docs"] += n_train
            counts["val_docs"] += n_val
            prog.advance(1, n_train + n_val, len(train) + len(val))
        for fh in (ftrain, fval):
            fh.flush()
            os.fsync(fh.fileno())
    return counts


# ---------------------------------------------------------------- CLI

def _cmd_tokenize(args: argparse.Namespace) -> int:
    info = shard_from_args(args)
    meta = None if args.force else finished_bins(args.out, info.sha256, args.val_fraction,
                                                 args.min_val_docs)
    if meta is not None:  # same inputs, same outputs: nothing to do
        to_stderr(f"tokenize: {args.out} already holds this shard's bins with these settings; "
                  "reusing them (--force tokenizes again)")
    else:
        replacing = (Path(args.out) / META_NAME).exists()
        meta = tokenize_shard(info.path, args.out, val_fraction=args.val_fraction,
                              min_val_docs=args.min_val_docs, num_workers=args.workers,
                              expected_sha256=info.sha256, progress=to_stderr)
        if replacing:  # said once it is done: a refusal stays one line
            to_stderr(f"tokenize: replaced the bins that were in {args.out}")
    print(json.dumps({k: meta[k] for k in ("train_tokens", "val_tokens", "train_docs",
                                           "val_docs")} | {"out": str(Path(args.out))}))
    return 0


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("tokenize", help="shard -> nanoGPT train.bin/val.bin + meta.json")
    add_shard_arguments(p)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION,
                   help=f"share of documents in val (default {DEFAULT_VAL_FRACTION})")
    p.add_argument("--min-val-docs", type=int, default=None,
                   help=f"never fewer val documents than this (default {DEFAULT_MIN_VAL_DOCS}, "
                        "or a tenth of a smaller shard)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--force", action="store_true",
                   help="tokenize again even when --out holds this shard's bins with these settings")
    p.set_defaults(func=_cmd_tokenize)
