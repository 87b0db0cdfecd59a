"""Training batches: random windows from the memmapped nanoGPT bins (`Bins` reads a bins
directory as `layout` describes it, or a bins set of several; the tokenize stage that writes
one is `tokenized_bins`).

Each micro-batch's window offsets come from a generator seeded by (seed, step, micro-batch
index across all ranks), never from running generator state, so a run resumed at step k draws
exactly the batches the uninterrupted run drew from step k on, and a plan run on N ranks
(each taking G/N of its grad_accum G) sees the same data as on one process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from finegpt_pipeline.layout import (
    LOCK_NAME, MANIFEST_NAME, META_NAME, SPLITS, bin_path, is_set, member_metas, members,
    summed_meta,
)
from finegpt_pipeline.locks import read_bins_lock

VAL_STREAM = 2**31 - 1  # seed component that keeps validation batches apart from training ones


class Bins:
    """`train.bin` / `val.bin` (uint16 GPT-2 ids) and their `meta.json` in one directory, or
    the members of a bins set (`bins_set`) read as one: `tokens` and `meta` summed.

    Holds a shared lock on each directory's `.lock` from construction until `close()` (or the
    end of the process; also a context manager): `finegpt tokenize` refuses to replace bins a
    training reads, since every batch opens the files afresh."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        if not self.dir.is_dir():
            raise FileNotFoundError(f"{self.dir}: bins directory not found")
        self._locks = []
        try:
            self.members = members(self.dir)
            for member in self.members:
                self._locks.append(read_bins_lock(member, LOCK_NAME, "train when it has finished"))
            # under the locks: the files cannot change now
            self.parts = member_metas(self.dir, verify=True)
        except BaseException:
            self.close()
            raise
        self.meta = summed_meta(self.parts) if is_set(self.dir) else self.parts[0][1]
        self.member_tokens = {split: [int(meta[f"{split}_tokens"]) for _, meta in self.parts]
                              for split in SPLITS}
        self.tokens = {split: sum(n) for split, n in self.member_tokens.items()}

    def close(self) -> None:
        """Release the directories' locks; the bins may be re-tokenized from then on."""
        for lock in self._locks:
            if lock is not None:
                lock.close()

    def __enter__(self) -> "Bins":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def check(self, block_size: int, vocab_size: int) -> None:
        """Fail before training if a window cannot fit (in every member) or the ids cannot be
        embedded."""
        for member, meta in self.parts:
            for split in SPLITS:
                n = int(meta[f"{split}_tokens"])
                if n < block_size + 1:
                    raise ValueError(f"{bin_path(member, split)}: {n} tokens, fewer than "
                                     f"block_size + 1 = {block_size + 1}; lower block_size")
            meta_vocab = meta.get("vocab_size")
            if meta_vocab is not None and int(meta_vocab) > vocab_size:
                raise ValueError(f"{member / META_NAME}: vocab_size {meta_vocab} exceeds the "
                                 f"model's vocab_size {vocab_size}")

    def memmap(self, split: str) -> np.memmap:
        """A plain bins dir's split (a set has one per member: `memmaps`, `read_all`)."""
        if len(self.members) != 1:
            raise ValueError(f"{self.dir}: a bins set has one {split}.bin per member; "
                             "read it with memmaps() or read_all()")
        return self.memmaps(split)[0]

    def memmaps(self, split: str) -> list[np.memmap]:
        # a fresh memmap per batch, as nanoGPT does: long-lived memmaps grow resident memory
        return [np.memmap(bin_path(m, split), dtype=np.uint16, mode="r") for m in self.members]

    def read_all(self, split: str) -> np.ndarray:
        """The whole split as one int64 array: the members' concatenated in order (each
        document starts with EOT, so the concatenation is valid text)."""
        return np.concatenate([np.asarray(m, dtype=np.int64) for m in self.memmaps(split)])

    def describe(self, split: str) -> str:
        """The split's file, for messages: its .bin, or a set's manifest and member count."""
        if not is_set(self.dir):
            return str(bin_path(self.dir, split))
        return f"{self.dir / MANIFEST_NAME} ({split}.bin of {len(self.members)} members)"

    def windows(self, split: str, offsets: np.ndarray, length: int) -> np.ndarray:
        """Windows of `length` tokens (int64, one row per offset). An offset indexes the split's
        window starts, Σ(n_i - length + 1) of them: member i's come after those of members
        before it, so a window never crosses a member's end."""
        spans = np.array(self.member_tokens[split], dtype=np.int64) - (length - 1)
        ends = np.cumsum(spans)
        which = np.searchsorted(ends, offsets, side="right")
        local = offsets - (ends - spans)[which]
        data = self.memmaps(split)
        return np.stack([np.asarray(data[m][i:i + length], dtype=np.int64)
                         for m, i in zip(which, local)])


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
        """Window starts drawn uniformly from all members' (a plain dir: 0..n - block_size),
        so a member is sampled in proportion to its size."""
        rng = np.random.default_rng([self.seed, *stream])
        high = sum(n - self.block_size for n in self.bins.member_tokens[split])
        return rng.integers(0, high, size=self.micro_batch)

    def _load(self, split: str, offsets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        windows = self.bins.windows(split, offsets, self.block_size + 1)
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
