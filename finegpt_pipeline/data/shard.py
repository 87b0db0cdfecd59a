"""The raw shard: find, fetch and validate a FineWeb-schema parquet file.

One front door for every stage: a source is a local path or `hf://OWNER/NAME/PATH`
(`resolve_shard`; on the command line `add_shard_arguments` / `shard_from_args`), resolved to
a validated local file whose sha256 is read once (`describe_shard`). A stage handed a
described shard (token_stats, tokenized_bins) checks the file against the recorded sha256 and
refuses bytes that changed since (`verified_sha256`: read once per process and file version,
so a Dagster step in its own process re-reads it, a CLI that resolves and then tokenizes does not).

Names, one per concept, everywhere:
- `source`: what the user named, a local path or an `hf://` URL (`ShardInfo.source`);
- `shard_path`: the local parquet file a source resolves to (`local_shard_path`,
  `ShardInfo.path`, raw_shard's `path`); the bins' meta.json, whose subject is the bins,
  records it as their `source_path` and the shard's hash as their `source_sha256`;
- `sha256`: the shard's content hash (`shard_sha256` where other hashes are near);
- `key`: only a partition key (assets/partitions.py) or the warehouse's row key (`shard_key`
  in `stats`, the sha256 unless a caller names another).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from finegpt_pipeline import paths
from finegpt_pipeline.atomic import atomic_path, write_json
from finegpt_pipeline.layout import sha256_file  # noqa: F401 (the stages' one content hash)

FINEWEB_COLUMNS = ("text", "id", "dump", "url", "date", "file_path", "language",
                   "language_score", "token_count")


class ShardError(ValueError):
    """A shard that cannot be used; the message names the file and the problem."""


def open_shard(path: str | Path) -> pq.ParquetFile:
    """Open a parquet shard, checking it is readable and has a string `text` column."""
    path = Path(path)
    if not path.exists():
        raise ShardError(f"{path}: shard file not found")
    if not path.is_file():
        raise ShardError(f"{path}: not a file")
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ShardError(f"{path}: not a readable parquet file ({exc})") from None
    validate_parquet(pf, str(path))
    return pf


def missing_fineweb_columns(pf: pq.ParquetFile) -> list[str]:
    return [c for c in FINEWEB_COLUMNS if c not in pf.schema_arrow.names]


# ---------------------------------------------------------------------------------------------
# Resolving a shard source (local path or `hf://REPO/PATH`) to a validated local parquet file.

HF_PREFIX = "hf://"
@dataclass
class ShardInfo:
    """A validated local shard. `to_dict()` is the `raw_shard` asset's value; downstream stages
    rely on exactly these keys."""

    path: str
    source: str
    sha256: str
    bytes: int
    rows: int
    row_groups: int
    columns: list[str]
    missing_columns: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_hf_source(source: str) -> tuple[str, str]:
    """`hf://OWNER/NAME/PATH/IN/REPO` (optionally `hf://datasets/OWNER/NAME/...`) ->
    (dataset repo id, path in repo)."""
    if not source.startswith(HF_PREFIX):
        raise ShardError(f"{source}: not an hf:// source")
    parts = source[len(HF_PREFIX):].strip("/").split("/")
    if parts and parts[0] == "datasets":
        parts = parts[1:]
    if len(parts) < 3 or not all(parts):
        raise ShardError(f"{source}: expected hf://OWNER/NAME/PATH/IN/REPO")
    return "/".join(parts[:2]), "/".join(parts[2:])


OFFLINE_HINT = ("offline? point FINEGPT_SHARD at a local parquet file, e.g. `make run "
                "FINEGPT_SHARD=../shared/data/fineweb-cc-main-2013-20-head300.parquet`")


def hub_problem(source: str) -> str | None:
    """Why hub shard `source` cannot be read from here, in one line naming the fix, or None:
    it is in the local Hugging Face cache, or the hub answers for it (one metadata request;
    none with HF_HUB_OFFLINE=1)."""
    try:
        repo_id, filename = parse_hf_source(source)
    except ShardError as exc:
        return str(exc)
    from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, filename, repo_type="dataset"), str):
        return None
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename, repo_type="dataset"), timeout=10)
    except Exception as exc:  # offline mode, no network, 404, gated repo
        reason = (str(exc).splitlines() or [""])[0][:120]
        return (f"{source}: not in the local Hugging Face cache and the hub cannot serve it "
                f"({type(exc).__name__}: {reason}); {OFFLINE_HINT}")
    return None


def is_hub_source(source: str) -> bool:
    return str(source).startswith(HF_PREFIX)


def local_shard_path(source: str | Path) -> Path:
    """A local source as `resolve_shard` reads it (user and relative parts resolved)."""
    return Path(source).expanduser().resolve()


def file_version(path: str | Path) -> str:
    """Size + mtime: what tells versions of a file apart without reading it."""
    st = os.stat(path)
    return f"{st.st_size}-{st.st_mtime_ns}"


_HASHED: dict[tuple, str] = {}  # (path, device, inode, size, mtime_ns) -> sha256, this process
_RACY_S = 2.0


def _hash_record(version: tuple, home: Path | None) -> Path:
    key = hashlib.sha256(repr(version).encode()).hexdigest()[:32]
    return paths.home(home).shard_hashes / f"{key}.json"


def verified_sha256(path: str | Path, expected: str | None = None,
                    home: str | Path | None = None) -> str:
    """The file's sha256, read once per file version: remembered in this process and under
    the FineGPT home's `hashes/` (`home`, default FINEGPT_HOME), so each Dagster step, a
    process of its own, finds what the first one read instead of reading a 2 GB file again.
    A version is the resolved path, device, inode, size and mtime in ns: a rewritten file is
    read afresh. With `expected`, what an upstream stage recorded, a file whose bytes changed
    since is refused in one line."""
    st = os.stat(path)
    version = (str(Path(path).resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    actual = _HASHED.get(version)
    record = _hash_record(version, Path(home) if home else None)
    if actual is None:
        try:
            stored = json.loads(record.read_text())
            actual = stored["sha256"] if stored.get("version") == list(version) else None
        except (OSError, ValueError, KeyError, TypeError):
            actual = None
    if actual is None:
        actual = sha256_file(path)
        # as git does with its index: a file modified within the clock's granularity of now
        # could change again under the same mtime, so only an older one is remembered
        if time.time() - st.st_mtime > _RACY_S:
            _HASHED[version] = actual
            try:
                write_json(record, {"version": list(version), "sha256": actual})
            except OSError:
                pass  # an unwritable home only costs a re-read in the next process
    else:
        _HASHED[version] = actual
    if expected and actual != expected:
        raise ShardError(f"{path}: content changed since it was resolved (sha256 "
                         f"{actual[:12]}..., expected {expected[:12]}...); "
                         "re-materialize raw_shard")
    return actual


def validate_parquet(pf: pq.ParquetFile, name: str) -> None:
    """The checks `open_shard` makes (a string `text` column, at least one row), for a
    parquet file opened from any file object."""
    schema = pf.schema_arrow
    if "text" not in schema.names:
        raise ShardError(f"{name}: no `text` column (columns: {', '.join(schema.names)})")
    text_type = schema.field("text").type
    if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
        raise ShardError(f"{name}: `text` column is {text_type}, expected a string")
    if pf.metadata.num_rows == 0:
        raise ShardError(f"{name}: shard has no documents (0 rows); point the stage at a "
                         "non-empty parquet file")


def head_row_groups(pf: pq.ParquetFile, max_docs: int | None, max_row_groups: int | None) -> list[int]:
    """The leading row groups that hold the first `max_docs` rows, at most `max_row_groups`."""
    groups, rows = [], 0
    for i in range(pf.metadata.num_row_groups):
        if max_row_groups is not None and len(groups) >= max_row_groups:
            break
        if max_docs is not None and rows >= max_docs:
            break
        groups.append(i)
        rows += pf.metadata.row_group(i).num_rows
    return groups


def write_head(pf: pq.ParquetFile, target: Path, max_docs: int | None,
               max_row_groups: int | None, name: str) -> Path:
    """Write the head of `pf` to `target` atomically, reading only the row groups it needs
    (on a remote file object, only those byte ranges plus the footer are fetched)."""
    validate_parquet(pf, name)
    groups = head_row_groups(pf, max_docs, max_row_groups)
    try:
        table = pf.read_row_groups(groups) if groups else pf.schema_arrow.empty_table()
    except (pa.ArrowException, OSError) as exc:
        raise ShardError(f"{name}: cannot read row groups {groups} ({exc})") from None
    if max_docs is not None:
        table = table.slice(0, max_docs)
    with atomic_path(target) as tmp:
        # One output row group per source row group keeps downstream streaming granular.
        pq.write_table(table, tmp, row_group_size=max(1, max(
            (pf.metadata.row_group(i).num_rows for i in groups), default=1)))
    return target


def _head_name(source: str, max_docs: int | None, max_row_groups: int | None) -> str:
    stem = Path(source.rstrip("/")).stem
    tag = hashlib.sha256(source.encode()).hexdigest()[:8]  # same file name, different repo/dump
    limits = "".join([f"-head{max_docs}" if max_docs is not None else "",
                      f"-rg{max_row_groups}" if max_row_groups is not None else ""])
    return f"{stem}-{tag}{limits}.parquet"


def _check_limit(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ShardError(f"{name} must be a positive integer or None (got {value!r})")


def resolve_shard(source: str | Path, dest_dir: str | Path, max_docs: int | None = None,
                  max_row_groups: int | None = None) -> ShardInfo:
    """Turn a shard source into a validated local parquet file and describe it.

    `source` is a local path or `hf://OWNER/NAME/PATH` (a dataset repo). A full hub file is
    fetched with `hf_hub_download` (cached, resumable). With `max_docs` / `max_row_groups` only
    the head is kept: written under `dest_dir`, reading just the footer and the needed row
    groups (over HTTP range requests for hub files)."""
    _check_limit("max_docs", max_docs)
    _check_limit("max_row_groups", max_row_groups)
    source = str(source)
    head = max_docs is not None or max_row_groups is not None
    if is_hub_source(source):
        local = _resolve_hf(source, Path(dest_dir), max_docs, max_row_groups, head)
    else:
        local = local_shard_path(source)
        pf = open_shard(local)
        rows_wanted = sum(pf.metadata.row_group(i).num_rows
                          for i in head_row_groups(pf, max_docs, max_row_groups))
        if max_docs is not None:
            rows_wanted = min(rows_wanted, max_docs)
        if head and rows_wanted < pf.metadata.num_rows:
            target = Path(dest_dir) / _head_name(str(local), max_docs, max_row_groups)
            local = write_head(pf, target, max_docs, max_row_groups, str(local))
    return describe_shard(local, source)


def _resolve_hf(source: str, dest_dir: Path, max_docs, max_row_groups, head: bool) -> Path:
    repo_id, filename = parse_hf_source(source)
    try:
        if not head:
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(repo_id, filename, repo_type="dataset"))
        from huggingface_hub import HfFileSystem

        target = dest_dir / _head_name(source, max_docs, max_row_groups)
        with HfFileSystem().open(f"datasets/{repo_id}/{filename}", "rb") as fh:
            try:
                pf = pq.ParquetFile(fh)
            except (pa.ArrowInvalid, OSError) as exc:
                raise ShardError(f"{source}: not a readable parquet file ({exc})") from None
            return write_head(pf, target, max_docs, max_row_groups, source)
    except ShardError:
        raise
    except Exception as exc:  # hub errors: offline, 404, gated repo, network
        raise ShardError(f"{source}: cannot fetch from the Hugging Face hub "
                         f"({type(exc).__name__}: {exc})") from None


def describe_shard(path: str | Path, source: str | None = None,
                   expected_sha256: str | None = None) -> ShardInfo:
    """Validate a local parquet shard and collect its metadata (sha256 streamed, not loaded;
    checked against `expected_sha256` when given, see `verified_sha256`)."""
    path = Path(path)
    pf = open_shard(path)
    names = pf.schema_arrow.names
    return ShardInfo(
        path=str(path), source=str(source if source is not None else path),
        sha256=verified_sha256(path, expected_sha256), bytes=path.stat().st_size, rows=pf.metadata.num_rows,
        row_groups=pf.metadata.num_row_groups, columns=list(names),
        missing_columns=missing_fineweb_columns(pf),
    )


# ---------------------------------------------------------------------------------------------
# The command line's front door: every stage that reads a shard takes it the same way.

def add_shard_arguments(parser) -> None:
    parser.add_argument("shard", help="local parquet path or hf://OWNER/NAME/PATH")
    parser.add_argument("--max-docs", type=int, default=None, help="only the first N documents")


def shard_from_args(args) -> ShardInfo:
    """The shard named on the command line, resolved as raw_shard does (heads and hub files
    kept under FINEGPT_HOME/shards)."""
    from finegpt_pipeline import paths

    return resolve_shard(args.shard, paths.home().shards, max_docs=args.max_docs)
