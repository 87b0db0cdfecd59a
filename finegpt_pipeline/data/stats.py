"""Token statistics of a shard in a persistent DuckDB warehouse.

DuckDB scans the parquet and does every aggregate; Python only recounts GPT-2 tokens, one row
group at a time in worker processes so memory stays flat with shard size, and keeps the ids
(`token_ids`, in the FINEGPT_HOME of the warehouse) so tokenized_bins need not tokenize again.
Tables, keyed by `shard` (the file's sha256 unless given), queryable afterwards:

  documents      one row per document: doc_index, chars, utf8_bytes, tokens_tiktoken,
                 token_count (FineWeb's, NULL if absent), language, language_score, dump,
                 domain (host of `url`), text_hash (md5), text_is_null
  shard_summary  one row per shard: headline numbers plus the full summary as JSON

A re-run replaces the shard's rows, so it is idempotent. It writes a copy of the warehouse
that replaces it only when complete (`warehouse.writing`): an interrupted run leaves the
warehouse as it was, and connections open on it (a notebook's) neither block nor break it.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

import numpy as np

from finegpt_pipeline import paths
from finegpt_pipeline.data import token_ids, warehouse
from finegpt_pipeline.data.progress import Report, duration, to_stderr
from finegpt_pipeline.data.shard import add_shard_arguments, describe_shard, shard_from_args
from finegpt_pipeline.data.tokenizer import get_encoding
from finegpt_pipeline.locks import Busy

SHORT_DOC_TOKENS = 50  # "very short": fewer GPT-2 tokens than this (empty documents included)
QUANTILES = {"p1": 0.01, "p5": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95, "p99": 0.99}
TOP_DOMAINS = 20
# Asset-check thresholds (the checks live in assets/data.py, the arithmetic here).
MAX_EMPTY_FRACTION = 0.01
MIN_EQUAL_FRACTION = 0.95
MAX_TOTAL_REL_DIFF = 0.005

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    shard VARCHAR NOT NULL, doc_index BIGINT NOT NULL, chars BIGINT, utf8_bytes BIGINT,
    tokens_tiktoken BIGINT, token_count BIGINT, language VARCHAR, language_score DOUBLE,
    dump VARCHAR, domain VARCHAR, text_hash VARCHAR, text_is_null BOOLEAN NOT NULL);
CREATE TABLE IF NOT EXISTS shard_summary (
    shard VARCHAR PRIMARY KEY, path VARCHAR, documents BIGINT, characters BIGINT,
    utf8_bytes BIGINT, tokens_tiktoken BIGINT, tokens_listed BIGINT,
    computed_at TIMESTAMP, summary_json VARCHAR);
"""

# Host of a URL: after the scheme and any user-info, up to a port, path, query or fragment.
_DOMAIN_RE = r"^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@]*@)?([^/:?#]+)"


def _column(present: set[str], name: str, sql_type: str, expr: str | None = None) -> str:
    if name not in present:
        return f"CAST(NULL AS {sql_type})"
    return expr or f"TRY_CAST(p.{name} AS {sql_type})"


def recount_tokens(shard_path: str | Path, sha256: str, ids_root: str | Path | None,
                   progress: Report | None = None, num_workers: int | None = None) -> pa.Table:
    """(doc_index, tokens_tiktoken) for every document, NULL where the text is NULL, from the
    shard's ids (`token_ids.counts_for`: kept under `ids_root`, tokenized now or verified)."""
    counts = token_ids.counts_for(shard_path, sha256, ids_root, num_workers, report=progress)
    return pa.table({"doc_index": pa.array(np.arange(counts.size, dtype=np.int64)),
                     "tokens_tiktoken": pa.array(counts.astype(np.int64), mask=counts < 0)})


# Bump when the summary's content changes: a stored summary of another version is recomputed.
STATS_VERSION = 1


def stored_summary(db_path: str | Path, key: str, sha256: str) -> dict[str, Any] | None:
    """The warehouse's summary of shard `key` when it was computed, by this STATS_VERSION, from
    these bytes (`sha256`); else None, also while a writer holds the warehouse (the write
    that follows waits for it, saying so)."""
    import duckdb

    if not Path(db_path).exists():
        return None
    try:
        with warehouse.reading(db_path, timeout=0) as con:
            row = con.execute("SELECT summary_json FROM shard_summary WHERE shard = ?",
                              [key]).fetchone()
    except (Busy, duckdb.CatalogException):  # held read-write; a warehouse before its tables
        return None
    summary = json.loads(row[0]) if row else None
    if summary and summary.get("sha256") == sha256 and summary.get("stats_version") == STATS_VERSION:
        return summary
    return None


def compute_stats(shard_path: str | Path, db_path: str | Path, shard_key: str | None = None,
                  expected_sha256: str | None = None, progress: Report | None = None,
                  ids_root: str | Path | None = None,
                  num_workers: int | None = None, force: bool = False) -> dict[str, Any]:
    """Load a shard's per-document statistics into the warehouse and return its summary; the
    stored summary (`reused`: True) when the warehouse holds one of the same bytes and
    STATS_VERSION, unless `force`.
    `expected_sha256` (what raw_shard recorded) refuses a file whose bytes changed since
    (`shard.verified_sha256`, the policy tokenized_bins follows too); `progress` gets progress
    lines (`finegpt_pipeline.data.progress`); the shard's ids are kept under `ids_root` for
    tokenized_bins (default: `token_ids.root_for_warehouse(db_path)`); `num_workers` tokenizer
    processes (default: one per core; 1 tokenizes in this process)."""
    start = time.monotonic()
    # validates (and hashes, once) before the warehouse is touched
    info = describe_shard(shard_path, expected_sha256=expected_sha256)
    get_encoding()  # tokenizer files present, or one clear error before any work
    key = shard_key or info.sha256
    stored = None if force else stored_summary(db_path, key, info.sha256)
    if stored is not None:
        if progress:
            progress(f"stats: {stored['documents']:,} docs, {stored['tokens_tiktoken']:,} tokens "
                     f"in {db_path}, computed earlier from these bytes (reused)")
        return {**stored, "path": info.path, "db_path": str(db_path), "reused": True}
    if ids_root is None:
        ids_root = token_ids.root_for_warehouse(db_path)
    recount = recount_tokens(info.path, info.sha256, ids_root, progress, num_workers)
    present = set(info.columns)
    url = _column(present, "url", "VARCHAR")
    select = f"""
        SELECT ? AS shard, p.file_row_number AS doc_index,
               length(p.text) AS chars, strlen(p.text) AS utf8_bytes,
               r.tokens_tiktoken,
               {_column(present, "token_count", "BIGINT")} AS token_count,
               {_column(present, "language", "VARCHAR")} AS language,
               {_column(present, "language_score", "DOUBLE")} AS language_score,
               {_column(present, "dump", "VARCHAR")} AS dump,
               nullif(lower(regexp_extract({url}, '{_DOMAIN_RE}', 1)), '') AS domain,
               md5(p.text) AS text_hash, p.text IS NULL AS text_is_null
        FROM read_parquet(?, file_row_number = true) AS p
        JOIN recount AS r ON r.doc_index = p.file_row_number
    """
    db_path = Path(db_path)
    with warehouse.writing(db_path, progress=progress) as con:  # a copy, swapped in on success
        con.execute(_SCHEMA)
        con.register("recount", recount)
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM documents WHERE shard = ?", [key])
        con.execute("DELETE FROM shard_summary WHERE shard = ?", [key])
        con.execute(f"INSERT INTO documents {select}", [key, info.path])
        summary = _summarize(con, key, has_token_count="token_count" in present)
        summary.update(shard=key, path=info.path, sha256=info.sha256, db_path=str(db_path),
                       missing_columns=info.missing_columns, stats_version=STATS_VERSION,
                       reused=False)
        con.execute(
            "INSERT INTO shard_summary VALUES (?, ?, ?, ?, ?, ?, ?, now(), ?)",
            [key, info.path, summary["documents"], summary["characters"], summary["utf8_bytes"],
             summary["tokens_tiktoken"], summary["tokens_listed"], json.dumps(summary)])
        con.execute("COMMIT")
    if progress:
        progress(f"stats: {summary['documents']:,} docs, {summary['tokens_tiktoken']:,} tokens "
                 f"in {db_path} ({duration(time.monotonic() - start)})")
    return summary


def _summarize(con, key: str, has_token_count: bool) -> dict[str, Any]:
    one = lambda sql: con.execute(sql, [key]).fetchone()  # noqa: E731
    rows = lambda sql, *args: con.execute(sql, [key, *args]).fetchall()  # noqa: E731
    docs, null_texts, chars, nbytes, tokens, listed, empty, short = one(f"""
        SELECT count(*), count(*) FILTER (text_is_null), coalesce(sum(chars), 0),
               coalesce(sum(utf8_bytes), 0), coalesce(sum(tokens_tiktoken), 0), sum(token_count),
               count(*) FILTER (utf8_bytes = 0),
               count(*) FILTER (tokens_tiktoken < {SHORT_DOC_TOKENS})
        FROM documents WHERE shard = ?""")
    compared, equal, recount_sum, listed_sum = one("""
        SELECT count(*), count(*) FILTER (tokens_tiktoken = token_count),
               sum(tokens_tiktoken), sum(token_count)
        FROM documents WHERE shard = ? AND token_count IS NOT NULL AND tokens_tiktoken IS NOT NULL""")
    probs = list(QUANTILES.values())
    tq, tmax, lq, lmean = one(f"""
        SELECT quantile_cont(tokens_tiktoken, {probs}), max(tokens_tiktoken),
               quantile_cont(language_score, {probs}), avg(language_score)
        FROM documents WHERE shard = ?""")
    token_quantiles = dict(zip(QUANTILES, tq)) if tq else {k: None for k in QUANTILES}
    token_quantiles["max"] = tmax
    distinct_texts, dup_groups = one("""
        SELECT count(*), count(*) FILTER (n > 1) FROM (
            SELECT count(*) AS n FROM documents WHERE shard = ? AND NOT text_is_null
            GROUP BY text_hash)""")
    groupby = lambda col, limit: [  # noqa: E731
        {col: v, "documents": n, "share": n / docs} for v, n in rows(f"""
            SELECT {col}, count(*) AS n FROM documents WHERE shard = ? AND {col} IS NOT NULL
            GROUP BY {col} ORDER BY n DESC, {col} LIMIT ?""", limit)]
    return {
        "documents": docs,
        "null_texts": null_texts,
        "characters": int(chars),
        "utf8_bytes": int(nbytes),
        "tokens_tiktoken": int(tokens),
        "tokens_listed": int(listed) if has_token_count and listed is not None else None,
        "docs_count_compared": compared,
        "docs_count_equal": equal,
        "docs_equal_fraction": equal / compared if compared else None,
        "tokens_tiktoken_compared": int(recount_sum) if compared else None,
        "tokens_listed_compared": int(listed_sum) if compared else None,
        "total_relative_difference": (recount_sum - listed_sum) / listed_sum if compared and listed_sum else None,
        "token_quantiles": token_quantiles,
        "bytes_per_token": nbytes / tokens if tokens else None,
        "chars_per_token": chars / tokens if tokens else None,
        "languages": groupby("language", 1_000_000),
        "language_score": ({**dict(zip(QUANTILES, lq)), "mean": lmean} if lq else None),
        "dumps": groupby("dump", 1_000_000),
        "top_domains": groupby("domain", TOP_DOMAINS),
        "empty_docs": empty,
        "short_docs": short,
        "short_doc_tokens": SHORT_DOC_TOKENS,
        "duplicate_docs": (docs - null_texts) - distinct_texts,
        "duplicate_groups": dup_groups,
    }


def token_lengths(db_path: str | Path, shard_key: str) -> list[int]:
    """Per-document GPT-2 token counts of a shard, read back from the warehouse."""
    with warehouse.reading(db_path) as con:
        return [r[0] for r in con.execute(
            "SELECT tokens_tiktoken FROM documents WHERE shard = ? AND tokens_tiktoken IS NOT NULL "
            "ORDER BY doc_index", [shard_key]).fetchall()]


def token_histogram_png(lengths: list[int], title: str = "tokens per document") -> bytes:
    """A log-x histogram of document lengths in GPT-2 tokens, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    positive = np.asarray([n for n in lengths if n > 0])
    if positive.size:
        bins = np.logspace(0, np.log10(max(positive.max(), 2)), 50)
        ax.hist(positive, bins=bins, color="#3b7dd8")
        ax.set_xscale("log")
    ax.set_xlabel("GPT-2 tokens per document (log scale)")
    ax.set_ylabel("documents")
    ax.set_title(f"{title} (n={len(lengths)})")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def check_text_not_empty(summary: dict, max_fraction: float = MAX_EMPTY_FRACTION) -> tuple[bool, dict]:
    """Null or empty texts must stay under `max_fraction` of documents."""
    bad = summary["null_texts"] + summary["empty_docs"]
    fraction = bad / summary["documents"] if summary["documents"] else 1.0
    return fraction <= max_fraction, {"null_or_empty_docs": bad, "fraction": fraction,
                                      "max_fraction": max_fraction}


def check_recount_agrees(summary: dict, min_equal: float = MIN_EQUAL_FRACTION,
                         max_rel_diff: float = MAX_TOTAL_REL_DIFF) -> tuple[bool, dict]:
    """tiktoken recount vs FineWeb's `token_count`: most documents equal, totals close.
    A shard without `token_count` has nothing to compare and passes, saying so."""
    meta = {"docs_count_compared": summary["docs_count_compared"],
            "docs_count_equal": summary["docs_count_equal"], "min_equal_fraction": min_equal,
            "max_total_relative_difference": max_rel_diff}
    if not summary["docs_count_compared"]:
        return True, {**meta, "note": "no token_count values to compare"}
    equal_fraction = summary["docs_equal_fraction"]
    rel = summary["total_relative_difference"]
    meta.update(docs_equal_fraction=equal_fraction, total_relative_difference=rel)
    return equal_fraction >= min_equal and rel is not None and abs(rel) <= max_rel_diff, meta


def format_summary(s: dict) -> str:
    """A plain-text report for the terminal."""
    lines = [f"shard            {s['shard']}", f"path             {s['path']}",
             f"warehouse        {s['db_path']}"]
    for key in ("documents", "null_texts", "empty_docs", "short_docs", "duplicate_docs",
                "characters", "utf8_bytes", "tokens_tiktoken", "tokens_listed"):
        value = s[key]
        lines.append(f"{key:<16} {value:,}" if isinstance(value, int) else f"{key:<16} {value}")
    if s["docs_count_compared"]:
        lines.append(f"recount agrees   {s['docs_count_equal']}/{s['docs_count_compared']} docs, "
                     f"total relative difference {s['total_relative_difference']:+.4%}")
    if s["bytes_per_token"]:
        lines.append(f"bytes per token  {s['bytes_per_token']:.3f}")
    q = s["token_quantiles"]
    lines.append("tokens/doc       " + "  ".join(f"{k}={v:g}" for k, v in q.items() if v is not None))
    for name, col in (("languages", "language"), ("dumps", "dump"), ("top_domains", "domain")):
        if s[name]:
            lines.append(f"{name:<16} " + ", ".join(f"{r[col]} {r['documents']}" for r in s[name][:10]))
    return "\n".join(lines)


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("stats", help="token statistics of a shard into the DuckDB warehouse",
                              description="Recount GPT-2 tokens and summarize a parquet shard; "
                                          "per-document rows go to the DuckDB warehouse.")
    add_shard_arguments(p)
    p.add_argument("--db", default=None, help=f"DuckDB warehouse (default: {paths.home().warehouse})")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--force", action="store_true",
                   help="recompute even when the warehouse holds this shard's summary")
    p.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    info = shard_from_args(args)
    summary = compute_stats(info.path, args.db or paths.home().warehouse, shard_key=info.sha256,
                            expected_sha256=info.sha256, progress=to_stderr, force=args.force)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary), file=sys.stdout)
    return 0
