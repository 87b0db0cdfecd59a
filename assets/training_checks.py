"""Checks on `trained_checkpoint`: its losses are finite, and its val loss is below the unigram
baseline of the same bins.

- `trained_checkpoint_loss_is_finite` (ERROR, blocking): a NaN or infinite final/best val
  loss or last train loss is a diverged model; blocking keeps it from being evaluated and
  promoted (eval_report and what follows it do not run).
- `trained_checkpoint_beats_unigram` (WARN, not blocking): the trainer's final val loss (its
  estimate over eval_iters val batches) against the add-alpha unigram of train.bin scored on
  val.bin (`finegpt_pipeline.evaluate.unigram`, the eval report's baseline). Short CPU runs on the
  sample do not beat it (the CI demo: val 9.2 against unigram 8.0), and eval_report must still
  run in pipeline_job to say so over every val token (its own check, `eval_report_beats_unigram`).
"""

from __future__ import annotations

import math
from pathlib import Path

import dagster as dg

from assets.shard_inputs import ALL_SHARDS_IN, by_shard
from finegpt_pipeline.evaluate import render
from finegpt_pipeline.train.run_dir import read_summary

VAL_KEYS = ("final_val_loss", "best_val_loss")


def last_train_loss(run_dir: str | Path | None) -> float | None:
    """The last train loss the run logged (its summary.json `history`); None without one."""
    if not run_dir:
        return None
    history = (read_summary(run_dir) or {}).get("history") or []
    rows = [r for r in history if isinstance(r, dict) and "train_loss" in r]
    return float(rows[-1]["train_loss"]) if rows else None


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@dg.asset_check(asset="trained_checkpoint", blocking=True,
                description="Final and best val loss and the last train loss are finite; a "
                            "diverged (NaN) model blocks eval_report and promotion.")
def trained_checkpoint_loss_is_finite(trained_checkpoint: dict) -> dg.AssetCheckResult:
    losses = {k: trained_checkpoint.get(k) for k in VAL_KEYS}
    losses["last_train_loss"] = last_train_loss(trained_checkpoint.get("run_dir"))
    bad = [k for k, v in losses.items() if not _finite(v)]
    return dg.AssetCheckResult(
        passed=not bad,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"not_finite": ", ".join(bad) or "none",
                  **{k: dg.MetadataValue.text(f"{v:.4f}" if _finite(v) else str(v))
                     for k, v in losses.items()}},
    )


@dg.asset_check(asset="trained_checkpoint",
                additional_ins={"tokenized_bins": ALL_SHARDS_IN},
                description="The trainer's final val loss is below the add-alpha unigram "
                            "baseline of train.bin on val.bin (WARN: short CPU runs are not).")
def trained_checkpoint_beats_unigram(trained_checkpoint: dict,
                                     tokenized_bins: dict) -> dg.AssetCheckResult:
    from finegpt_pipeline.evaluate.unigram import UNIGRAM_ALPHA, unigram_val_loss

    # the bins it trained on: one shard's, or the bins set of all of them
    bins_dir = trained_checkpoint.get("bins_dir")
    if not bins_dir:  # a value from before bins sets: one shard
        [bins_dir] = [item["dir"] for item in by_shard(tokenized_bins).values()]
    unigram = unigram_val_loss(bins_dir)
    val = trained_checkpoint.get("final_val_loss")
    passed = _finite(val) and val < unigram
    return dg.AssetCheckResult(
        passed=bool(passed),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"final_val_loss": dg.MetadataValue.text(f"{val:.4f}" if _finite(val) else str(val)),
                  "unigram_loss": round(unigram, 4),
                  "vs_unigram": render.versus(unigram - val, "unigram") if _finite(val) else "no val loss",
                  "unigram": f"train.bin frequencies, add-{UNIGRAM_ALPHA:g}, on val.bin",
                  "val_loss_source": "trainer's estimate over eval_iters val batches; "
                                     "eval_report scores every val token"},
    )
