"""Training batches: random windows from the memmapped nanoGPT bins (`Bins` reads a bins
directory as `layout` describes it; the tokenize stage that writes one is `tokenized_bins`).

Each micro-batch's window offsets come from a generator seeded by (seed, step, micro-batch
index across all ranks), never from running generator state, so a run resumed at step k draws
exactly the batches the uninterrupted run drew from step k on, and a plan run on N ranks
(each taking G/N of its grad_accum G) sees the same data as on one process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .layout import LOCK_NAME, META_NAME, SPLITS, bin_path, verify_files
from .locks import Busy, describe_holders, try_lock

VAL_STREAM = 2**31 - 1  # seed component that keeps validation batches apart from training ones


class Bins:
    """`train.bin` / `val.bin` (uint16 GPT-2 ids) and their `meta.json` in one directory.

    Holds a shared lock on the directory's `.lock` from construction until `close()` (or the
    end of the process; also a context manager): `finegpt tokenize` refuses to replace bins a
    training reads, since every batch opens the files afresh."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        if not self.dir.is_dir():
            raise FileNotFoundError(f"{self.dir}: bins directory not found")
        try:
            self._lock = try_lock(self.dir / LOCK_NAME, shared=True)
        except OSError:  # a read-only dir without a lock file: nothing can replace the bins
            self._lock = None
        else:
            if self._lock is None:
                raise Busy(f"{self.dir}: being tokenized by "
                           f"{describe_holders(self.dir / LOCK_NAME)}; train when it has finished")
        try:
            self.meta = verify_files(self.dir)  # under the lock: the files cannot change now
        except BaseException:
            self.close()
            raise
        self.tokens = {split: int(self.meta[f"{split}_tokens"]) for split in SPLITS}

    def close(self) -> None:
        """Release the directory's lock; the bins may be re-tokenized from then on."""
        if self._lock is not None:
            self._lock.close()

    def __enter__(self) -> "Bins":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def check(self, block_size: int, vocab_size: int) -> None:
        """Fail before training if a window cannot fit or the ids cannot be embedded."""
        for split, n in self.tokens.items():
            if n < block_size + 1:
                raise ValueError(f"{bin_path(self.dir, split)}: {n} tokens, fewer than "
                                 f"block_size + 1 = {block_size + 1}; lower block_size")
        meta_vocab = self.meta.get("vocab_size")
        if meta_vocab is not None and int(meta_vocab) > vocab_size:
            raise ValueError(f"{self.dir / META_NAME}: vocab_size {meta_vocab} exceeds the "
                             f"model's vocab_size {vocab_size}")

    def memmap(self, split: str) -> np.memmap:
        # a fresh memmap per batch, as nanoGPT does: long-lived memmaps grow resident memory
        return np.memmap(bin_path(self.dir, split), dtype=np.uint16, mode="r")


class BatchSource:
    def __init__(self, bins: Bins, block_size: int, micro_batch: int, seed: int,
                 device: torch.device):
        self.bins = bins
        self.block_size = block_size
        self.micro_batch = micro_batch
        self.seed = seed
        self.device = device
        self.pin = device.type == "cuda"

    def offsets(self, split: str, *stream: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, *stream])
        high = self.bins.tokens[split] - self.block_size
        return rng.integers(0, high, size=self.micro_batch)

    def _load(self, split: str, offsets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        data = self.bins.memmap(split)
        T = self.block_size
        windows = np.stack([np.asarray(data[i:i + T + 1], dtype=np.int64) for i in offsets])
        x = torch.from_numpy(np.ascontiguousarray(windows[:, :-1]))
        y = torch.from_numpy(np.ascontiguousarray(windows[:, 1:]))
        if self.pin:
            # pinned host memory lets the copy run asynchronously with the GPU's work
            return (x.pin_memory().to(self.device, non_blocking=True),
                    y.pin_memory().to(self.device, non_blocking=True))
        return x.to(self.device), y.to(self.device)

    def train_batch(self, step: int, global_micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._load("train", self.offsets("train", step, global_micro))

    def val_batch(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k-th of a fixed set of validation batches: every evaluation sees the same ones."""
        return self._load("val", self.offsets("val", VAL_STREAM, k))
