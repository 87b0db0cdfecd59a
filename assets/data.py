"""Data stage assets: `raw_shard` (fetch + validate) and `token_stats` (DuckDB warehouse),
with their asset checks. Thin wrappers: the logic is in `finegpt_pipeline.data.shard` / `.data.stats`."""

import bisect
import json
from typing import Optional

import dagster as dg

from assets import lineage
from assets.automation import AFTER_UPSTREAM
from assets.metadata_format import OWNERS, float_value, home_path, short_sha256, size_entries
from assets.resources import FineGPTHome
from assets.partitions import SHARDS, source_of
from finegpt_pipeline.tracking import datasets as mlflow_datasets
from finegpt_pipeline.data import stats
from finegpt_pipeline.atomic import write_bytes
from finegpt_pipeline.locks import Busy
from finegpt_pipeline.data.shard import ShardError, file_version, is_hub_source, local_shard_path, resolve_shard
from finegpt_pipeline.data.tokenizer import TokenizerUnavailable
from finegpt_pipeline.evaluate.render import md_table  # the one Markdown table helper


class RawShardConfig(dg.Config):
    """Quick runs: keep only the first N documents and/or row groups (reads only those bytes)."""

    max_docs: Optional[int] = None
    max_row_groups: Optional[int] = None


class TokenStatsConfig(dg.Config):
    force: bool = False  # recompute even when the warehouse holds this shard's summary


@dg.asset(group_name="data", kinds={"parquet"}, owners=OWNERS, code_version="1",
          partitions_def=SHARDS,
          description="A validated local FineWeb parquet shard, one per `shards` partition "
          "(local file or Hugging Face hub file, optionally just its head).")
def raw_shard(context: dg.AssetExecutionContext, config: RawShardConfig,
              finegpt_home: FineGPTHome) -> dg.Output[dict]:
    with lineage.asset_run(context, finegpt_home) as run:
        try:
            source = source_of(context.partition_key)
            info = resolve_shard(source, finegpt_home.home().shards,
                                 max_docs=config.max_docs, max_row_groups=config.max_row_groups)
        except ShardError as exc:
            raise dg.Failure(description=str(exc)) from None
        if info.missing_columns:
            context.log.warning(f"{info.path}: FineWeb columns missing: {', '.join(info.missing_columns)}")
        # the hub file's hf:// URL when it is used whole, else the local file read
        cut = config.max_docs is not None or config.max_row_groups is not None
        uri = info.source if is_hub_source(info.source) and not cut else info.path
        run.log_inputs([mlflow_datasets.shard_input(uri, info.sha256, info.rows)], context="source")
        return run.output(
            info.to_dict(),
            # The content hash: downstream assets show stale whenever the shard's bytes change.
            data_version=dg.DataVersion(info.sha256),
            metadata={
                # not "path": the IO manager's own metadata key would overwrite it
                "shard_path": dg.MetadataValue.path(info.path),
                "source": info.source,
                # size + mtime of the local source file: shard_changed_sensor's cheap comparison
                **({} if is_hub_source(info.source)
                   else {"source_version": file_version(local_shard_path(info.source))}),
                **size_entries("size", info.bytes),
                "rows": info.rows,
                "row_groups": info.row_groups,
                "columns": ", ".join(info.columns),
                "missing_columns": ", ".join(info.missing_columns) or "none",
                "sha256": short_sha256(info.sha256),  # the data version holds all of it
                # MLflow's digest column holds 36 characters: the sha256's first 32 hex digits
                "mlflow_dataset_digest": mlflow_datasets.shard_digest(info.sha256),
            },
        )


def _counts_table(entries: list[dict], col: str, source: str | None = None) -> str:
    """Documents per value of `col` (read from the shard's `source` column, default `col`);
    without values, why."""
    if not entries:
        return (f"_no `{col}` values: the shard's `{source or col}` column is null in every row "
                "or absent_")
    return md_table([col, "documents", "share"],
                     [[e[col], e["documents"], f"{e['share']:.1%}"] for e in entries])


# Log-spaced bins of the inline histogram: the UI shows a Markdown table, not a large image.
HISTOGRAM_EDGES = [1, 10, 30, 100, 300, 1_000, 3_000, 10_000, 30_000, 100_000]
HISTOGRAM_BAR = 24  # characters of the longest bar (the UI breaks no bar)


def histogram_table(lengths: list[int]) -> str:
    """Tokens per document as a Markdown table with text bars, short enough to show inline."""
    labels = ["0"] + [f"{lo:,}-{hi - 1:,}" for lo, hi in zip(HISTOGRAM_EDGES, HISTOGRAM_EDGES[1:])]
    labels.append(f">= {HISTOGRAM_EDGES[-1]:,}")
    counts = [0] * len(labels)
    for n in lengths:
        counts[bisect.bisect_right(HISTOGRAM_EDGES, n)] += 1
    top = max(counts) or 1
    used = [i for i, count in enumerate(counts) if count] or [0]  # empty bins at the ends left out
    rows = [[labels[i], counts[i], "█" * round(HISTOGRAM_BAR * counts[i] / top) or ("▏" if counts[i] else "")]
            for i in range(used[0], used[-1] + 1)]
    return md_table(["tokens", "documents", ""], rows)


@dg.asset(group_name="data", kinds={"duckdb"}, owners=OWNERS, code_version="1",
          automation_condition=AFTER_UPSTREAM, partitions_def=SHARDS,
          description="Per-document and per-shard token statistics in the "
          "DuckDB warehouse; the summary is this asset's value.")
def token_stats(context: dg.AssetExecutionContext, config: TokenStatsConfig, raw_shard: dict,
                finegpt_home: FineGPTHome) -> dg.Output[dict]:
    with lineage.asset_run(context, finegpt_home) as run:
        db = finegpt_home.home().warehouse
        try:
            summary = stats.compute_stats(raw_shard["path"], db, shard_key=raw_shard["sha256"],
                                          expected_sha256=raw_shard["sha256"],
                                          progress=context.log.info, force=config.force)
        except (ShardError, TokenizerUnavailable, Busy) as exc:
            raise dg.Failure(description=str(exc)) from None
        try:
            lengths = stats.token_lengths(db, summary["shard"])
        except Busy as exc:
            raise dg.Failure(description=str(exc)) from None
        q = summary["token_quantiles"]
        quantile_md = md_table(list(q), [[f"{v:,.0f}" if v is not None else "-" for v in q.values()]])
        png_path = finegpt_home.home().reports / f"token_histogram-{summary['shard'][:16]}.png"
        if not (summary.get("reused") and png_path.exists()):  # a stored summary: its plot too
            write_bytes(png_path, stats.token_histogram_png(lengths))
        metadata = {
            "warehouse": home_path(db, finegpt_home.home().root),
            "shard_sha256": short_sha256(summary["shard"]),
            "documents": summary["documents"],
            "characters": summary["characters"],
            **size_entries("text_size", summary["utf8_bytes"]),
            "tokens_tiktoken": summary["tokens_tiktoken"],
            "tokens_listed": summary["tokens_listed"] if summary["tokens_listed"] is not None else "n/a",
            "docs_count_equal": summary["docs_count_equal"],
            "docs_count_compared": summary["docs_count_compared"],
            "tokens_rel_diff": float_value(summary["total_relative_difference"], 3)
            if summary["total_relative_difference"] is not None else "n/a",
            "bytes_per_token": float_value(summary["bytes_per_token"] or 0.0, 4),
            "empty_docs": summary["empty_docs"],
            "null_texts": summary["null_texts"],
            f"docs <{summary['short_doc_tokens']} tokens": summary["short_docs"],
            "duplicate_docs": summary["duplicate_docs"],
            "token_quantiles": dg.MetadataValue.md(quantile_md),
            "languages": dg.MetadataValue.md(_counts_table(summary["languages"][:20], "language")),
            "language_score": dg.MetadataValue.json(
                {k: round(v, 3) for k, v in (summary["language_score"] or {}).items()}),
            "dumps": dg.MetadataValue.md(_counts_table(summary["dumps"][:20], "dump")),
            "top_domains": dg.MetadataValue.md(_counts_table(summary["top_domains"], "domain", "url")),
            "token_histogram": dg.MetadataValue.md(histogram_table(lengths)),
            "token_histogram_png": home_path(png_path, finegpt_home.home().root),
            "reused": dg.MetadataValue.bool(bool(summary.get("reused"))),
        }
        context.log.info(json.dumps({k: summary[k] for k in ("documents", "tokens_tiktoken", "tokens_listed")}))
        return run.output(summary, metadata=metadata)


@dg.asset_check(asset=token_stats, blocking=True, partitions_def=SHARDS,
                description=f"Null or empty texts are at most {stats.MAX_EMPTY_FRACTION:.0%} of documents.")
def token_stats_text_not_empty(token_stats: dict) -> dg.AssetCheckResult:
    passed, meta = stats.check_text_not_empty(token_stats)
    return dg.AssetCheckResult(passed=passed, metadata=meta)


@dg.asset_check(asset=token_stats, partitions_def=SHARDS,
                description=f"tiktoken recount vs FineWeb token_count: >= {stats.MIN_EQUAL_FRACTION:.0%} "
                            f"of documents equal, totals within {stats.MAX_TOTAL_REL_DIFF:.1%}.")
def token_stats_recount_agrees(token_stats: dict) -> dg.AssetCheckResult:
    passed, meta = stats.check_recount_agrees(token_stats)
    return dg.AssetCheckResult(passed=passed, metadata=meta)


data_assets = [raw_shard, token_stats]
data_asset_checks = [token_stats_text_not_empty, token_stats_recount_agrees]
