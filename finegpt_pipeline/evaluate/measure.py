"""The measurements every evaluation shares: a model's loss on every token of a val.bin, its
standard error, bits per byte and the uniform and unigram baselines on the same targets
(`measure_on_bins`, what eval_report and the champion comparison both use)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from finegpt_pipeline.config import EOT_TOKEN, GPT2_VOCAB_SIZE
from finegpt_pipeline.evaluate.unigram import UNIGRAM_ALPHA, split_counts, unigram_log_probs
from finegpt_pipeline.train.batches import Bins

TOKENS_PER_FORWARD = 4096  # windows per forward pass = this // block_size (bounds logits memory)


@torch.no_grad()
def token_losses(model: torch.nn.Module, tokens: np.ndarray, block_size: int,
                 device: str | torch.device = "cpu") -> np.ndarray:
    """Loss (nats, float64) of every token of `tokens` after the first: target j+1 is predicted
    from the window starting at block_size * (j // block_size), windows not overlapping."""
    model.eval()
    n_targets = len(tokens) - 1
    out = np.empty(max(n_targets, 0), dtype=np.float64)
    full = n_targets // block_size
    per_pass = max(1, TOKENS_PER_FORWARD // block_size)

    def run(starts: range, length: int) -> None:
        x = np.stack([tokens[s:s + length] for s in starts]).astype(np.int64)
        y = np.stack([tokens[s + 1:s + 1 + length] for s in starts]).astype(np.int64)
        xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        logits, _ = model(xt, targets=yt)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), yt.reshape(-1),
                               reduction="none")
        out[starts[0]:starts[-1] + length] = loss.double().cpu().numpy()

    for first in range(0, full, per_pass):
        run(range(first * block_size, min(full, first + per_pass) * block_size, block_size),
            block_size)
    tail = n_targets - full * block_size
    if tail:
        run(range(full * block_size, full * block_size + 1), tail)
    return out


def token_byte_lengths(vocab_size: int = GPT2_VOCAB_SIZE) -> np.ndarray:
    """UTF-8 bytes each GPT-2 id decodes to (concatenated, they are the text's bytes)."""
    from finegpt_pipeline.data.tokenizer import get_encoding

    enc = get_encoding()
    return np.array([len(enc.decode_single_token_bytes(i)) for i in range(vocab_size)],
                    dtype=np.int64)


def bits_per_byte(losses: np.ndarray, targets: np.ndarray, byte_lengths: np.ndarray) -> float:
    """Summed nats / (ln 2 x bytes), EOT targets excluded from both sums."""
    keep = targets != EOT_TOKEN
    n_bytes = int(byte_lengths[targets[keep]].sum())
    if n_bytes == 0:
        return float("nan")
    return float(losses[keep].sum() / (math.log(2) * n_bytes))


def document_se(losses: np.ndarray, targets: np.ndarray) -> tuple[float, int]:
    """The standard error of the mean loss with val.bin's documents as the independent units
    (a new document starts after each EOT target): tokens within a document are correlated, so
    the per-token std / sqrt(n) overstates the certainty. Cluster-robust: sqrt(D / (D - 1) *
    sum_d (S_d - n_d * mean)^2) / n over the D documents' loss sums S_d and token counts n_d.
    Returns (se, D); se is nan with fewer than two documents."""
    doc = np.concatenate([[0], np.cumsum(targets[:-1] == EOT_TOKEN)]).astype(np.int64)
    sums, counts = np.bincount(doc, weights=losses), np.bincount(doc)
    docs = int(counts.size)
    if docs < 2:
        return float("nan"), docs
    resid = sums - counts * float(losses.mean())
    return float(math.sqrt(docs / (docs - 1) * float((resid ** 2).sum())) / losses.size), docs


def summarize(losses: np.ndarray, targets: np.ndarray, byte_lengths: np.ndarray,
              unigram_lp: np.ndarray) -> dict[str, Any]:
    """The numbers of the report for per-token `losses` of `targets`."""
    n = int(losses.size)
    val_loss = float(losses.mean())
    per_token_se = float(losses.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    se, docs = document_se(losses, targets)
    if not math.isfinite(se):  # one document: the per-token se is all there is
        se = per_token_se
    uni = -unigram_lp[targets]
    uniform = math.log(GPT2_VOCAB_SIZE)
    keep = targets != EOT_TOKEN
    n_bytes = int(byte_lengths[targets[keep]].sum())
    unigram_loss = float(uni.mean())
    return {
        "tokens": n, "val_loss": val_loss, "val_loss_se": se,
        "val_loss_se_method": (f"per document: the {docs} val documents as independent units "
                               f"(cluster-robust); the per-token std/sqrt(n), "
                               f"{per_token_se:.4f}, ignores correlation within a document"
                               if docs > 1 else "per-token std / sqrt(n) (one document)"),
        "val_loss_se_per_token": per_token_se, "val_documents": docs,
        "perplexity": float(math.exp(val_loss)),
        "val_bpb": bits_per_byte(losses, targets, byte_lengths),
        "bpb_tokens": int(keep.sum()), "bpb_bytes": n_bytes,
        "uniform_loss": uniform, "uniform_bpb": bits_per_byte(np.full(n, uniform), targets,
                                                              byte_lengths),
        "unigram_loss": unigram_loss, "unigram_bpb": bits_per_byte(uni, targets, byte_lengths),
        "unigram_alpha": UNIGRAM_ALPHA,
        "below_uniform": uniform - val_loss, "below_unigram": unigram_loss - val_loss,
        "beats_unigram": bool(val_loss < unigram_loss),
    }


def resolve_device(name: str) -> str:
    """auto: CUDA when visible, else the CPU; any other name as it is."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def measure_on_bins(model: torch.nn.Module, bins_dir: str | Path, device: str = "cpu",
                    whose: str = "model's") -> tuple[dict[str, Any], int, int]:
    """`model` on every token of `bins_dir`'s val.bin (a set's: the union): (`summarize`'s
    numbers, val.bin's tokens, train.bin's tokens). The one measurement eval_report and the champion check use."""
    with Bins(bins_dir) as bins:  # a bins set: its members' val.bins concatenated
        val, val_path = bins.read_all("val"), bins.describe("val")
        train_counts, train_tokens = split_counts(bins), int(bins.tokens["train"])
    if val.size < 2:
        raise ValueError(f"{val_path}: {val.size} tokens; evaluation needs at least 2")
    if val.max() >= model.config.vocab_size:
        raise ValueError(f"{val_path}: token id {int(val.max())} is outside the {whose} "
                         f"vocabulary ({model.config.vocab_size}); bins and model do not match")
    losses = token_losses(model.to(device), val, model.config.block_size, device)
    numbers = summarize(losses, val[1:], token_byte_lengths(), unigram_log_probs(train_counts))
    return numbers, int(val.size), train_tokens
