"""GPT-2 tokenization, exactly tiktoken's, on every core.

tiktoken's Rust core releases the GIL, so a thread pool encodes batches in parallel without
pickling texts and token lists across processes (the cost that makes the usual
multiprocessing-Pool pattern slower).
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Sequence

from finegpt_pipeline.config import EOT_TOKEN

ENCODING_NAME = "gpt2"


@lru_cache(maxsize=None)
def get_encoding():
    import tiktoken

    enc = tiktoken.get_encoding(ENCODING_NAME)
    assert enc.eot_token == EOT_TOKEN
    return enc


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def encode_batch(texts: Sequence[str], num_threads: int | None = None) -> list[list[int]]:
    """GPT-2 ids of each text, special tokens treated as plain text (`encode_ordinary`)."""
    return get_encoding().encode_ordinary_batch(list(texts), num_threads=num_threads or default_threads())


def count_tokens(texts: Sequence[str], num_threads: int | None = None) -> list[int]:
    """Per-text GPT-2 token counts (the recount compared with FineWeb's `token_count`)."""
    return [len(ids) for ids in encode_batch(texts, num_threads)]


def decode(ids: Sequence[int]) -> str:
    return get_encoding().decode(list(ids))
