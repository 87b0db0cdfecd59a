"""The unigram baseline: train.bin's token frequencies, add-`UNIGRAM_ALPHA` smoothed over
GPT-2's 50257 ids, scored on val.bin (a bins set: train counts summed over its members, scored
on the union of their val.bins). One place for it: the eval report (`evaluate`) and the
`trained_checkpoint` checks both use it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from finegpt_pipeline.train.batches import Bins
from finegpt_pipeline.config import GPT2_VOCAB_SIZE

# add-alpha pseudo-count per vocabulary id in the unigram baseline: 0.1 x 50257 ids = 5,026
# pseudo-tokens, 2.7% of the mass on the 187k-token sample (more on tiny train.bins)
UNIGRAM_ALPHA = 0.1


def token_counts(tokens: np.ndarray, vocab_size: int = GPT2_VOCAB_SIZE,
                 chunk: int = 1 << 24) -> np.ndarray:
    """How often each id occurs, read in chunks (a memmapped train.bin is never held whole)."""
    counts = np.zeros(max(vocab_size, 1 << 16), dtype=np.int64)
    for start in range(0, len(tokens), chunk):
        counts += np.bincount(np.asarray(tokens[start:start + chunk]), minlength=counts.size)
    return counts[:vocab_size]


def split_counts(bins: Bins, split: str = "train") -> np.ndarray:
    """`token_counts` of a split of the bins, summed over a set's members."""
    return sum(token_counts(data) for data in bins.memmaps(split))


def unigram_log_probs(counts: np.ndarray, alpha: float = UNIGRAM_ALPHA) -> np.ndarray:
    """log p(id) of train.bin's id counts, add-alpha smoothed over the vocabulary."""
    counts = counts.astype(np.float64)
    return np.log((counts + alpha) / (counts.sum() + alpha * counts.size))


def unigram_val_loss(bins_dir: str | Path, alpha: float = UNIGRAM_ALPHA) -> float:
    """Mean loss (nats/token) of the add-alpha unigram of train.bin on val.bin's targets (every
    token after the first, as the eval report scores the model)."""
    with Bins(bins_dir) as bins:
        log_p = unigram_log_probs(split_counts(bins), alpha)
        val, val_file = bins.read_all("val"), bins.describe("val")
    if val.size < 2:
        raise ValueError(f"{val_file}: {val.size} tokens; the unigram baseline needs at least 2")
    return float(-log_p[val[1:]].mean())
