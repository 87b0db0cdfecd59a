"""`tokenized_bins`: the raw shard as nanoGPT train.bin/val.bin, plus its checks.
Thin wrapper: the work and the verification logic live in `finegpt_pipeline.bins`."""


from pathlib import Path
from typing import Optional

import dagster as dg

from assets.resources import FineGPTPaths
from finegpt_pipeline import bins, bins_checks
from finegpt_pipeline.locks import Busy
from finegpt_pipeline.shard import ShardError
from finegpt_pipeline.tokenizer import TokenizerUnavailable

ROUNDTRIP_SAMPLE_DOCS = 5000  # evenly spaced; shards with fewer documents are checked in full


class TokenizeConfig(dg.Config):
    val_fraction: float = bins.DEFAULT_VAL_FRACTION
    # None: bins.DEFAULT_MIN_VAL_DOCS, or a tenth of a smaller shard
    min_val_docs: Optional[int] = None
    force: bool = False  # re-tokenize even when finished bins for this shard and split exist


def bins_key(sha256: str, config: TokenizeConfig) -> str:
    """The bins directory's name: the shard's content and the split settings, so bins of
    another split never land in (or replace) the directory a training reads."""
    min_docs = "auto" if config.min_val_docs is None else config.min_val_docs
    return f"{sha256[:12]}-val{config.val_fraction:g}-min{min_docs}"


def _reusable(out_dir: Path, sha256: str, config: TokenizeConfig) -> dict | None:
    """Finished bins of the same shard and split settings, or None."""
    try:
        meta = bins.verify_files(out_dir)
    except (FileNotFoundError, ValueError):
        return None
    split = meta.get("split", {})
    same = (meta.get("source_sha256") == sha256 and split.get("val_fraction") == config.val_fraction
            and split.get("min_val_docs_requested") == config.min_val_docs)
    return meta if same else None


@dg.asset(
    group_name="data",
    description="nanoGPT-format train.bin/val.bin (uint16 GPT-2 ids, EOT before every document) "
                "and meta.json, split deterministically by document hash.",
    kinds={"python", "numpy"},
)
def tokenized_bins(context: dg.AssetExecutionContext, config: TokenizeConfig,
                   finegpt_paths: FineGPTPaths, raw_shard: dict) -> dg.MaterializeResult:
    out_dir = finegpt_paths.bins_dir() / bins_key(raw_shard["sha256"], config)
    meta = None if config.force else _reusable(out_dir, raw_shard["sha256"], config)
    reused = meta is not None
    if reused:
        context.log.info(f"{out_dir}: finished bins for this shard and split exist; reusing them")
    else:
        try:
            meta = bins.tokenize_shard(raw_shard["path"], out_dir,
                                       val_fraction=config.val_fraction,
                                       min_val_docs=config.min_val_docs,
                                       source_sha256=raw_shard["sha256"],
                                       progress=context.log.info)
        except (ShardError, TokenizerUnavailable, Busy) as exc:  # one line, not a traceback
            raise dg.Failure(description=str(exc)) from None
    value = {"dir": str(out_dir), **meta}
    return dg.MaterializeResult(
        value=value,
        metadata={
            # not "path": the IO manager's own metadata key would overwrite it
            "bins_dir": dg.MetadataValue.path(str(out_dir)),
            "train_tokens": meta["train_tokens"],
            "val_tokens": meta["val_tokens"],
            "train_docs": meta["train_docs"],
            "val_docs": meta["val_docs"],
            "bytes": 2 * (meta["train_tokens"] + meta["val_tokens"]),
            "val_fraction": meta["split"]["val_fraction"],
            "source_sha256": meta["source_sha256"],
            "reused": reused,
        },
    )


@dg.asset_check(asset=tokenized_bins, blocking=True,
                description="Decoding the bins and splitting at EOT gives exactly the source documents "
                            f"(all of them, or {ROUNDTRIP_SAMPLE_DOCS} evenly spaced on big shards).")
def tokenized_bins_roundtrip(tokenized_bins: dict) -> dg.AssetCheckResult:
    result = bins_checks.verify_roundtrip(tokenized_bins["dir"], tokenized_bins["source"],
                                   max_docs=ROUNDTRIP_SAMPLE_DOCS)
    return dg.AssetCheckResult(
        passed=result["ok"],
        metadata={"documents": result["documents"], "checked_docs": result["checked"],
                  "mismatches": "\n".join(result["mismatches"]) or "none"},
    )


@dg.asset_check(asset=tokenized_bins, blocking=True, description="Every token id is below vocab_size (50257).")
def tokenized_bins_ids_in_vocab(tokenized_bins: dict) -> dg.AssetCheckResult:
    result = bins_checks.verify_ids_in_vocab(tokenized_bins["dir"])
    return dg.AssetCheckResult(passed=result["ok"], metadata=result)


@dg.asset_check(asset=tokenized_bins, additional_ins={"token_stats": dg.AssetIn("token_stats")},
                description="Tokens in the bins = the stats' tiktoken recount + one EOT per document.")
def tokenized_bins_totals_match_stats(tokenized_bins: dict, token_stats: dict) -> dg.AssetCheckResult:
    result = bins_checks.verify_totals(tokenized_bins, token_stats["tokens_tiktoken"], token_stats["documents"])
    return dg.AssetCheckResult(passed=result["ok"], metadata=result)

