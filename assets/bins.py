"""`tokenized_bins`: the raw shard as nanoGPT train.bin/val.bin, plus its checks.
Thin wrapper: the work is `finegpt_pipeline.data.tokenized_bins`, the directory's name and files
`finegpt_pipeline.layout`, the verification `finegpt_pipeline.data.bins_checks`."""


from typing import Optional

import dagster as dg

from assets import lineage
from assets.automation import AFTER_UPSTREAM
from assets.metadata_format import OWNERS, home_path, short_sha256, size_entries
from assets.resources import FineGPTHome
from assets.partitions import SHARDS
from finegpt_pipeline import layout
from finegpt_pipeline.data import bins_checks, tokenized_bins as stage
from finegpt_pipeline.tracking import datasets as mlflow_datasets
from finegpt_pipeline.config import GPT2_VOCAB_SIZE, TOKEN_BYTES
from finegpt_pipeline.locks import Busy
from finegpt_pipeline.data.shard import ShardError
from finegpt_pipeline.data.tokenizer import TokenizerUnavailable

ROUNDTRIP_SAMPLE_DOCS = 5000  # evenly spaced; shards with fewer documents are checked in full


class TokenizeConfig(dg.Config):
    val_fraction: float = stage.DEFAULT_VAL_FRACTION
    # None: tokenized_bins.DEFAULT_MIN_VAL_DOCS, or a tenth of a smaller shard
    min_val_docs: Optional[int] = None
    force: bool = False  # re-tokenize even when finished bins for this shard and split exist


@dg.asset(
    group_name="data",
    partitions_def=SHARDS,
    automation_condition=AFTER_UPSTREAM,
    description="nanoGPT-format train.bin/val.bin (uint16 GPT-2 ids, EOT before every document) "
                "and meta.json, split deterministically by document hash.",
    kinds={"python", "numpy"},
    owners=OWNERS,
    code_version="1",
)
def tokenized_bins(context: dg.AssetExecutionContext, config: TokenizeConfig,
                   finegpt_home: FineGPTHome, raw_shard: dict) -> dg.Output[dict]:
    with lineage.asset_run(context, finegpt_home) as run:
        sha256 = raw_shard["sha256"]
        out_dir = finegpt_home.home().bins / layout.bins_key(sha256, config.val_fraction,
                                                             config.min_val_docs)
        meta = None if config.force else stage.finished_bins(out_dir, sha256, config.val_fraction,
                                                             config.min_val_docs)
        reused = meta is not None
        if reused:
            context.log.info(f"{out_dir}: finished bins for this shard and split exist; reusing them")
        else:
            try:
                meta = stage.tokenize_shard(raw_shard["path"], out_dir,
                                            val_fraction=config.val_fraction,
                                            min_val_docs=config.min_val_docs,
                                            expected_sha256=sha256, progress=context.log.info)
            except (ShardError, TokenizerUnavailable, Busy) as exc:  # one line, not a traceback
                raise dg.Failure(description=str(exc)) from None
        value = {"dir": str(out_dir), **meta}
        # the shard is this run's input (the bins are the training and eval runs')
        run.log_inputs(mlflow_datasets.bins_inputs(out_dir, splits=()), context="tokenize")
        return run.output(
            value,
            metadata={
                # not "path": the IO manager's own metadata key would overwrite it
                "bins_dir": home_path(out_dir, finegpt_home.home().root),
                "train_tokens": meta["train_tokens"],
                "val_tokens": meta["val_tokens"],
                "train_docs": meta["train_docs"],
                "val_docs": meta["val_docs"],
                **size_entries("size", TOKEN_BYTES * (meta["train_tokens"] + meta["val_tokens"])),
                "val_fraction": meta["split"]["val_fraction"],
                "source_sha256": short_sha256(meta["source_sha256"]),
                "reused": reused,
            },
        )


# Both blocking checks in one node: Dagster orders an asset's blocking-check outputs by output
# name, and two separate @asset_checks both name theirs "result", so their order (and the job's
# snapshot id) changed with each process's string hashing; the UI then took every CLI run for
# one of another version of the job (a warning at Re-execute).
@dg.multi_asset_check(specs=[
    dg.AssetCheckSpec("tokenized_bins_roundtrip", asset=tokenized_bins, blocking=True,
                      partitions_def=SHARDS,
                      description="Decoding the bins and splitting at EOT gives exactly the source "
                                  f"documents (all of them, or {ROUNDTRIP_SAMPLE_DOCS} evenly spaced "
                                  "on big shards)."),
    dg.AssetCheckSpec("tokenized_bins_ids_in_vocab", asset=tokenized_bins, blocking=True,
                      partitions_def=SHARDS,
                      description=f"Every token id is below vocab_size ({GPT2_VOCAB_SIZE})."),
], ins={"tokenized_bins": dg.AssetIn("tokenized_bins")})
def tokenized_bins_blocking_checks(tokenized_bins: dict):
    result = bins_checks.verify_roundtrip(tokenized_bins["dir"], layout.shard_path_of(tokenized_bins),
                                          max_docs=ROUNDTRIP_SAMPLE_DOCS)
    yield dg.AssetCheckResult(
        check_name="tokenized_bins_roundtrip", passed=result["ok"],
        metadata={"documents": result["documents"], "checked_docs": result["checked"],
                  "mismatches": "\n".join(result["mismatches"]) or "none"},
    )
    result = bins_checks.verify_ids_in_vocab(tokenized_bins["dir"])
    yield dg.AssetCheckResult(check_name="tokenized_bins_ids_in_vocab", passed=result["ok"],
                              metadata=result)


@dg.asset_check(asset=tokenized_bins, partitions_def=SHARDS,
                additional_ins={"token_stats": dg.AssetIn("token_stats")},
                description="Tokens in the bins = the stats' tiktoken recount + one EOT per document.")
def tokenized_bins_totals_match_stats(tokenized_bins: dict, token_stats: dict) -> dg.AssetCheckResult:
    result = bins_checks.verify_totals(tokenized_bins, token_stats["tokens_tiktoken"], token_stats["documents"])
    return dg.AssetCheckResult(passed=result["ok"], metadata=result)
