"""A shard's GPT-2 ids, tokenized once: whichever of `token_stats` and `tokenized_bins` comes
first tokenizes the shard and keeps its ids here (the other waits for a build in progress), and
the other reuses them: token_stats their counts, tokenized_bins the ids, split into
train.bin/val.bin instead of tokenizing the shard again.

They live in the FINEGPT_HOME that holds the stage's output (`Home.token_ids`): beside the
warehouse file token_stats writes, and found from the bins directory tokenized_bins writes
(`root_for_warehouse`, `root_for_bins`); a stage writing elsewhere (a test's database, `finegpt
tokenize --out DIR` outside a home) neither keeps nor reads them. One directory per shard,
named by the shard's sha256:

    <sha256[:16]>/ids.bin    uint16: every document in source order, each preceded by EOT
                             (nanoGPT's layout of the whole shard); a NULL text adds nothing
    <sha256[:16]>/docs.bin   int32 token count per document (EOT not counted; -1 for a NULL
                             text), then uint64 blake2b-64 of each text (the split's hash)
    <sha256[:16]>/meta.json  written last, the marker of a complete cache: the shard's sha256,
                             documents, tokens, both files' sizes and sha256, the tokenizer
    <sha256[:16]>/.lock      flock: exclusive while it is built or removed, shared while read

Before reuse a cache is checked against its shard (sha256, documents) and tokenizer, the files'
sizes, docs.bin's sha256 and its counts adding up to ids.bin; ids.bin's own sha256 is checked as
it is streamed (`stream_split`), which raises `CacheInvalid` before its reader publishes
anything. Building one shard's cache removes the others (`KEEP_SHARDS`), except while they are
read, so the directory holds about one shard's tokens (2 bytes each). An interrupted build
leaves no meta.json, so nothing that reads as complete; the next build clears it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np

from finegpt_pipeline.data import tokenizer
from finegpt_pipeline.atomic import temp_beside, write_json
from finegpt_pipeline.config import EOT_TOKEN, GPT2_VOCAB_SIZE, TOKEN_BYTES
from finegpt_pipeline.layout import Home
from finegpt_pipeline.locks import describe_holders
from finegpt_pipeline.data.progress import Progress, Report

FORMAT = 1
KEEP_SHARDS = 1  # caches kept: the one just built (the next stage's input)
WAIT_S = 3600.0  # how long a reader waits for a build in progress before tokenizing itself
IDS, DOCS, META, LOCK = "ids.bin", "docs.bin", "meta.json", ".lock"
_COUNT, _HASH = np.dtype("<i4"), np.dtype("<u8")


class CacheInvalid(ValueError):
    """The cached ids do not match their meta.json (damaged since written); the message says how."""


def doc_hash(text: str) -> int:
    """The split rule's hash of a document: blake2b-64 of its UTF-8 text, big-endian."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def root_for_warehouse(db_path: str | Path) -> Path | None:
    """`token_ids/` of the FINEGPT_HOME whose warehouse `db_path` is, else None."""
    db = Path(db_path).resolve()
    home = Home(db.parent)
    return home.token_ids if home.warehouse == db else None


def root_for_bins(bins_dir: str | Path) -> Path | None:
    """`token_ids/` of the FINEGPT_HOME whose `bins/` holds `bins_dir`, else None."""
    out = Path(bins_dir).resolve()
    home = Home(out.parent.parent)
    return home.token_ids if home.bins == out.parent else None


def shard_dir(sha256: str, root: str | Path) -> Path:
    return Path(root) / sha256[:16]


def tokenizer_identity() -> str:
    import tiktoken

    return f"tiktoken {tiktoken.__version__} {tokenizer.ENCODING_NAME} encode_ordinary"


@dataclass(frozen=True)
class TokenIds:
    """A verified cache: per-document counts (-1: NULL text) and hashes, ids.bin on disk."""

    dir: Path | None  # None: counted without keeping the ids
    meta: dict
    counts: np.ndarray
    hashes: np.ndarray

    @property
    def ids_path(self) -> Path:
        return self.dir / IDS

    @property
    def doc_tokens(self) -> np.ndarray:
        """Tokens each document takes in ids.bin (its EOT included; 0 for a NULL text)."""
        return np.where(self.counts >= 0, self.counts.astype(np.int64) + 1, 0)


# ---------------------------------------------------------------- locks

class _Lock:
    """An flock on `<dir>/.lock` that is still the file at that path (a removed cache's lock
    file, unlinked under its exclusive lock, is not mistaken for the new one)."""

    def __init__(self, path: Path, shared: bool):
        self.path, self._fh = path, open(path, "rb" if shared else "a+b")  # readers create nothing
        try:
            fcntl.flock(self._fh, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            if os.fstat(self._fh.fileno()).st_ino != os.stat(path).st_ino:
                raise FileNotFoundError(path)
        except BaseException:
            self._fh.close()
            raise

    def close(self) -> None:
        self._fh.close()


def _acquire(kdir: Path, shared: bool, wait_s: float, report: Report | None) -> _Lock | None:
    """The lock, waiting up to `wait_s` while another process holds a conflicting one; None
    when it is not had in time, or (for a reader) when the cache directory is gone."""
    deadline, told = time.monotonic() + wait_s, False
    while True:
        if not shared:
            kdir.mkdir(parents=True, exist_ok=True)
        try:
            return _Lock(kdir / LOCK, shared)
        except BlockingIOError:
            pass
        except FileNotFoundError:
            if shared:
                return None
            continue
        if time.monotonic() >= deadline:
            return None
        if report and not told:
            report(f"{kdir}: {describe_holders(kdir / LOCK)} is writing this shard's token ids; "
                   f"waiting for them (up to {wait_s:.0f} s)")
            told = True
        time.sleep(0.5)


# ---------------------------------------------------------------- reading

def _load(kdir: Path, sha256: str, n_docs: int) -> TokenIds | None:
    """The cache in `kdir` if complete and consistent with this shard; None otherwise."""
    try:
        meta = json.loads((kdir / META).read_text())
        ok = (meta.get("format") == FORMAT and meta.get("shard_sha256") == sha256
              and meta.get("documents") == n_docs and meta.get("tokenizer") == tokenizer_identity()
              and (kdir / IDS).stat().st_size == TOKEN_BYTES * meta["tokens"] == meta["ids_bytes"]
              and (kdir / DOCS).stat().st_size == n_docs * (_COUNT.itemsize + _HASH.itemsize))
        if not ok:
            return None
        raw = (kdir / DOCS).read_bytes()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if hashlib.sha256(raw).hexdigest() != meta.get("docs_sha256"):
        return None
    counts = np.frombuffer(raw, _COUNT, n_docs)
    hashes = np.frombuffer(raw, _HASH, n_docs, offset=n_docs * _COUNT.itemsize)
    ids = TokenIds(kdir, meta, counts, hashes)
    if (counts.size and int(counts.min()) < -1) or int(ids.doc_tokens.sum()) != meta["tokens"]:
        return None
    return ids


@contextlib.contextmanager
def reading(sha256: str, n_docs: int, root: str | Path | None, wait_s: float = WAIT_S,
            report: Report | None = None) -> Iterator[TokenIds | None]:
    """The shard's verified cache under `root` (None: no cache) under a shared lock (no build
    replaces it meanwhile), after waiting for a build in progress; None when there is none.
    Creates nothing."""
    kdir = None if root is None else shard_dir(sha256, root)
    lock = None if kdir is None else _acquire(kdir, True, wait_s, report)
    try:
        yield None if lock is None else _load(kdir, sha256, n_docs)
    finally:
        if lock is not None:
            lock.close()


def stream_split(ids: TokenIds, is_val: np.ndarray, train: BinaryIO, val: BinaryIO,
                 advance: Callable[[int, int], None] | None = None,
                 chunk_tokens: int = 1 << 23) -> None:
    """Copy each document's ids (EOT first) to `train` or `val` by `is_val`, in source order,
    a bounded chunk at a time; `advance(docs, tokens)` after each chunk. Raises CacheInvalid
    when ids.bin is not what meta.json recorded (checked to the last byte)."""
    lens = ids.doc_tokens
    ends = np.cumsum(lens)
    n, pos, d0 = len(lens), 0, 0
    digest = hashlib.sha256()
    with open(ids.ids_path, "rb") as fh:
        while d0 < n:
            d1 = min(n, max(d0 + 1, int(np.searchsorted(ends, pos + chunk_tokens, "right"))))
            span = int(ends[d1 - 1]) - pos
            data = np.fromfile(fh, dtype=np.uint16, count=span)
            if data.size != span:
                raise CacheInvalid(f"{ids.ids_path}: ends at token {pos + data.size:,}, "
                                   f"meta.json records {ids.meta['tokens']:,}")
            digest.update(data)
            firsts = (ends[d0:d1] - lens[d0:d1] - pos)[lens[d0:d1] > 0]
            if span and (not (data[firsts] == EOT_TOKEN).all() or int(data.max()) >= GPT2_VOCAB_SIZE):
                raise CacheInvalid(f"{ids.ids_path}: documents {d0}-{d1 - 1} are not EOT-led "
                                   "GPT-2 ids")
            mask = np.repeat(is_val[d0:d1], lens[d0:d1])
            train.write(memoryview(data[~mask]))
            val.write(memoryview(data[mask]))
            if advance:
                advance(d1 - d0, span)
            pos, d0 = pos + span, d1
    if digest.hexdigest() != ids.meta["ids_sha256"]:
        raise CacheInvalid(f"{ids.ids_path}: sha256 {digest.hexdigest()[:16]}..., meta.json "
                           f"records {ids.meta['ids_sha256'][:16]}...")


def discard(sha256: str, root: str | Path) -> bool:
    """Remove the shard's cache (found damaged) unless someone holds it; True if removed."""
    kdir = shard_dir(sha256, root)
    return kdir.is_dir() and _remove(kdir)


def _remove(kdir: Path) -> bool:
    try:
        lock = _Lock(kdir / LOCK, shared=False)
    except (BlockingIOError, FileNotFoundError):
        return False
    try:
        shutil.rmtree(kdir, ignore_errors=True)
    finally:
        lock.close()
    return True


# ---------------------------------------------------------------- building

_OPEN_FILES: dict[str, object] = {}


def worker_shard(path: str):
    """The shard opened once per (worker) process."""
    from finegpt_pipeline.data.shard import open_shard

    pf = _OPEN_FILES.get(path)
    if pf is None:
        pf = _OPEN_FILES[path] = open_shard(path)
    return pf


def _encode_row_group(path: str, rg: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row group -> (its ids in nanoGPT layout, per-document counts, per-document hashes)."""
    texts = worker_shard(path).read_row_group(rg, columns=["text"]).column("text").to_pylist()
    try:
        ids, counts = tokenizer.encode_docs_counted(texts)
    except ValueError as exc:
        raise ValueError(f"{path}: row group {rg}: {exc}") from None
    hashes = np.fromiter((0 if t is None else doc_hash(t) for t in texts), np.uint64, len(texts))
    return ids, counts, hashes


def map_ordered(fn, arg_lists, pool, window: int):
    """`map` over the pool with at most `window` tasks in flight (bounds memory), in order."""
    if pool is None:
        for args in arg_lists:
            yield fn(*args)
        return
    pending = []
    for args in arg_lists:
        pending.append(pool.submit(fn, *args))
        if len(pending) >= window:
            yield pending.pop(0).result()
    for fut in pending:
        yield fut.result()


def counts_for(shard_path: str | Path, sha256: str, root: str | Path | None,
               num_workers: int | None = None, report: Report | None = None,
               label: str = "stats", verb: str = "recounting") -> np.ndarray:
    """Per-document GPT-2 token counts of the shard (-1 for a NULL text): from its cache under
    `root` when valid (after waiting for a build in progress), else by tokenizing it once and
    keeping the ids there (not with root None). `label` and `verb` word the progress lines."""
    from finegpt_pipeline.data.shard import open_shard

    path = str(Path(shard_path).resolve())
    n_docs = open_shard(path).metadata.num_rows
    with reading(sha256, n_docs, root, report=report) as ids:
        if ids is not None:
            if report:
                report(f"{label}: {path}: token counts of {n_docs:,} docs from {ids.dir} "
                       "(tokenized before; verified)")
            return ids.counts.copy()
    if root is None:
        return _build(path, sha256, n_docs, None, num_workers, Progress(report, label, 0),
                      verb).counts
    kdir = shard_dir(sha256, root)
    lock = _acquire(kdir, False, WAIT_S, report)
    if lock is None:
        raise TimeoutError(f"{kdir}: held by {describe_holders(kdir / LOCK)} for {WAIT_S:.0f} s")
    try:
        ids = _load(kdir, sha256, n_docs)  # built while this process waited
        if ids is None:
            ids = _build(path, sha256, n_docs, kdir, num_workers, Progress(report, label, 0), verb)
            _prune(kdir)
        return ids.counts.copy()
    finally:
        lock.close()


def _prune(kept: Path) -> None:
    """Remove all but the KEEP_SHARDS newest caches beside `kept` (kept itself is the newest),
    skipping any that is being read or built."""
    others = [d for d in kept.parent.iterdir() if d.is_dir() and d != kept]
    others.sort(key=lambda d: d.stat().st_mtime, reverse=True)
    for old in others[KEEP_SHARDS - 1:]:
        _remove(old)


def _build(path: str, sha256: str, n_docs: int, kdir: Path | None, num_workers: int | None,
           prog: Progress, verb: str) -> TokenIds:
    """Tokenize the shard in worker processes; its ids kept in `kdir` (nothing kept with None)."""
    from finegpt_pipeline.data.shard import open_shard

    n_rg = open_shard(path).metadata.num_row_groups
    workers = max(1, min(num_workers or tokenizer.default_threads(), n_rg))
    prog.total = n_rg
    prog.begin(f"{path}: {verb} {n_docs:,} docs in {n_rg} row groups")
    if kdir is not None:
        for old in kdir.iterdir():  # a damaged cache or an interrupted build's temp files
            if old.name != LOCK:
                shutil.rmtree(old) if old.is_dir() else old.unlink()
    temps = {} if kdir is None else {name: temp_beside(kdir / name) for name in (IDS, DOCS)}
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) if workers > 1 else None
    try:
        digest, counts, hashes, tokens = hashlib.sha256(), [], [], 0
        with contextlib.ExitStack() as stack:
            fh = stack.enter_context(open(temps[IDS], "wb")) if temps else None
            for ids, c, h in map_ordered(_encode_row_group, [(path, rg) for rg in range(n_rg)],
                                         pool, 2 * workers):
                if fh is not None:
                    fh.write(memoryview(ids))
                    digest.update(memoryview(ids))
                counts.append(c)
                hashes.append(h)
                tokens += len(ids)
                prog.advance(1, len(c), int(c[c > 0].sum()))
            if fh is not None:
                fh.flush()
                os.fsync(fh.fileno())
        counts_a = np.concatenate(counts or [np.empty(0, np.int32)]).astype(_COUNT)
        hashes_a = np.concatenate(hashes or [np.empty(0, np.uint64)]).astype(_HASH)
        if counts_a.size != n_docs:
            raise ValueError(f"{path}: read {counts_a.size} documents, metadata says {n_docs}")
        raw = counts_a.tobytes() + hashes_a.tobytes()
        meta = {"format": FORMAT, "shard_sha256": sha256, "shard_path": path,
                "documents": n_docs, "tokens": tokens, "ids_bytes": TOKEN_BYTES * tokens,
                "ids_sha256": digest.hexdigest(), "docs_sha256": hashlib.sha256(raw).hexdigest(),
                "tokenizer": tokenizer_identity()}
        if kdir is not None:
            with open(temps[DOCS], "wb") as fh:
                fh.write(raw)
                fh.flush()
                os.fsync(fh.fileno())
            for name, tmp in temps.items():
                os.replace(tmp, kdir / name)
            write_json(kdir / META, meta)  # last: the marker of a complete cache
            prog.note(f"the ids of {n_docs:,} docs ({tokens:,} tokens) kept in {kdir}")
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return TokenIds(kdir, meta, counts_a, hashes_a)
