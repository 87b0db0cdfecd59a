"""GPT-2 tokenization, exactly tiktoken's `encode_ordinary`, on every core.

tiktoken's Rust core releases the GIL while it encodes, so a thread pool encodes in parallel
without pickling texts and token lists across processes (the cost that makes the usual
multiprocessing-Pool pattern slower). Token ids come back as numpy buffers
(`encode_to_numpy`), not Python lists: building a list of Python ints per document is done
with the GIL held and would serialise the threads.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Sequence

import numpy as np

from finegpt_pipeline.config import EOT_TOKEN, GPT2_VOCAB_SIZE

ENCODING_NAME = "gpt2"  # ids 0..GPT2_VOCAB_SIZE-1; EOT_TOKEN (50256) is <|endoftext|>

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


class TokenizerUnavailable(FileNotFoundError):
    """tiktoken's GPT-2 files are neither cached nor downloadable; the message says the fix."""


@lru_cache(maxsize=None)
def get_encoding():
    import tiktoken

    try:
        enc = tiktoken.get_encoding(ENCODING_NAME)
    except Exception as exc:  # tiktoken only reads its cache or downloads: either failed
        raise TokenizerUnavailable(_missing_files_message(exc)) from None
    assert enc.eot_token == EOT_TOKEN and enc.n_vocab == GPT2_VOCAB_SIZE
    return enc


def _missing_files_message(exc: Exception) -> str:
    cache = os.environ.get("TIKTOKEN_CACHE_DIR")
    where = (f"TIKTOKEN_CACHE_DIR={cache}" if cache is not None
             else "tiktoken's default cache (TIKTOKEN_CACHE_DIR is unset)")
    return (f"tiktoken's {ENCODING_NAME} files (vocab.bpe, encoder.json) are not in {where} and "
            f"could not be downloaded ({type(exc).__name__}); offline, set TIKTOKEN_CACHE_DIR "
            "to a directory holding them (CI uses ../shared/tiktoken-cache)")


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def thread_pool(num_threads: int | None = None) -> ThreadPoolExecutor:
    """A process-wide pool per size: creating threads per call costs more than small batches."""
    n = num_threads or default_threads()
    with _pools_lock:
        if n not in _pools:
            _pools[n] = ThreadPoolExecutor(n, thread_name_prefix=f"finegpt-tok{n}")
        return _pools[n]


def encode_ids(text: str) -> np.ndarray:
    """GPT-2 ids of one text as uint32, special-token strings treated as plain text.

    `encode_to_numpy` with no special tokens allowed or disallowed is `encode_ordinary`
    (tiktoken documents `encode_ordinary_batch` as `encode_batch(..., disallowed_special=())`)."""
    return get_encoding().encode_to_numpy(text, disallowed_special=())


def _chunks(n: int, parts: int) -> list[range]:
    size = -(-n // max(1, parts)) if n else 1
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def encode_batch(texts: Sequence[str], num_threads: int | None = None) -> list[list[int]]:
    """GPT-2 ids of each text (`encode_ordinary`), in order."""
    texts, n = list(texts), num_threads or default_threads()
    parts = thread_pool(n).map(lambda r: [encode_ids(texts[i]).tolist() for i in r],
                               _chunks(len(texts), 4 * n))
    return [ids for part in parts for ids in part]


def count_tokens(texts: Sequence[str], num_threads: int | None = None) -> list[int]:
    """Per-text GPT-2 token counts (the recount compared with FineWeb's `token_count`)."""
    texts, n = list(texts), num_threads or default_threads()
    parts = thread_pool(n).map(lambda r: [int(encode_ids(texts[i]).size) for i in r],
                               _chunks(len(texts), 4 * n))
    return [n for part in parts for n in part]


def encode_docs_uint16(texts: Sequence[str]) -> np.ndarray:
    """nanoGPT layout for a run of documents: each one's ids preceded by EOT, as uint16.

    Runs in the calling thread (callers spread chunks over `thread_pool`)."""
    return encode_docs_counted(texts)[0]


def encode_docs_counted(texts: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """`encode_docs_uint16`'s ids, and each text's token count (EOT not counted) as int32.
    A None text (a NULL in the shard) adds no ids and counts -1."""
    pieces: list[np.ndarray] = []
    counts = np.full(len(texts), -1, dtype=np.int32)
    eot = np.array([EOT_TOKEN], dtype=np.uint32)
    for i, text in enumerate(texts):
        if text is None:
            continue
        ids = encode_ids(text)
        counts[i] = ids.size
        pieces.append(eot)
        pieces.append(ids)
    if not pieces:
        return np.empty(0, dtype=np.uint16), counts
    ids = np.concatenate(pieces)
    top = int(ids.max())
    if top >= GPT2_VOCAB_SIZE:  # cannot happen with GPT-2; checked so a cast never wraps silently
        raise ValueError(f"token id {top} is outside the GPT-2 vocabulary ({GPT2_VOCAB_SIZE})")
    return ids.astype(np.uint16), counts


def decode(ids: Sequence[int]) -> str:
    return get_encoding().decode(list(ids) if not isinstance(ids, np.ndarray) else ids.tolist())
