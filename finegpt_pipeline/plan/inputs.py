"""What the bins allow a plan: their token counts (meta.json), the largest block the trainer
accepts on them, and how many evaluation batches are worth reading from the val split."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def tokens_from_bins(bins_dir: str | Path) -> int:
    """Training tokens available, from `tokenized_bins`' meta.json (`train_tokens`; a bins
    set: its members' summed)."""
    from finegpt_pipeline.layout import meta_source, read_meta

    return tokens_from_meta(read_meta(bins_dir), source=meta_source(bins_dir))


def tokens_from_meta(meta: dict[str, Any], source: str = "meta.json", key: str = "train_tokens") -> int:
    """A split's token count from meta.json: `train_tokens` (the default) or `val_tokens`."""
    tokens = meta.get(key) if isinstance(meta, dict) else None
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens <= 0:
        raise ValueError(f"{source}: needs a positive integer {key!r} (got {tokens!r})")
    return tokens


def block_size_limit(train_tokens: int, val_tokens: int | None) -> int:
    """The largest block_size the trainer accepts on these bins: a window of block_size + 1
    tokens must fit in each split."""
    return min(train_tokens, val_tokens if val_tokens is not None else train_tokens) - 1


def eval_iters_for(val_tokens: int | None, tokens_per_micro_step: int, kind: str) -> int:
    """Evaluation batches: the device default (GPU 20, CPU 4), but no more than it takes to
    read the val split about once (more windows only re-read the same tokens, at full cost)."""
    default = 20 if kind == "gpu" else 4
    if val_tokens is None:
        return default
    return max(1, min(default, math.ceil(val_tokens / tokens_per_micro_step)))


def block_size_for(default: int, fixed: dict[str, Any], train_tokens: int, val_tokens: int | None) -> int:
    """The fixed block_size if the bins can take it, else the device default capped by the data."""
    limit = block_size_limit(train_tokens, val_tokens)
    splits = f"{train_tokens:,} train" + (f" / {val_tokens:,} val" if val_tokens is not None else "")
    if limit < 1:
        raise ValueError(f"the bins hold {splits} tokens: too few for one training window; "
                         "tokenize more documents (or a larger --val-fraction)")
    if fixed.get("block_size", 0) > limit:
        raise ValueError(f"block_size {fixed['block_size']} needs {fixed['block_size'] + 1:,} tokens in "
                         f"each split but the bins hold {splits}: set block_size <= {limit}")
    return fixed.get("block_size", min(default, 1 << (limit.bit_length() - 1)))  # a power of two
