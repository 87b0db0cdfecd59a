"""The tokenizer matches tiktoken's `encode_ordinary` exactly, whatever path or thread count."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from finegpt_pipeline.data import tokenizer
from finegpt_pipeline.config import EOT_TOKEN

TRICKY = [
    "",
    "hello world",
    "a literal <|endoftext|> inside a document is plain text",
    "<|endoftext|>",
    "unicode: naïve café, 日本語, emoji 🙂, combining e\u0301",
    "  leading spaces\n\n\nand blank lines\t\ttabs  ",
]


@pytest.fixture(scope="module")
def sample_texts(sample_shard) -> list[str]:
    return pq.read_table(sample_shard, columns=["text"]).column("text").to_pylist()


def test_encode_batch_equals_encode_ordinary(sample_texts):
    enc = tokenizer.get_encoding()
    texts = sample_texts[:60] + TRICKY
    want = [enc.encode_ordinary(t) for t in texts]
    assert tokenizer.encode_batch(texts, num_threads=1) == want
    assert tokenizer.encode_batch(texts, num_threads=3) == want


def test_count_tokens_matches_recount_of_real_sample(sample_texts):
    counts = tokenizer.count_tokens(sample_texts)
    # Known fact about this sample: the tiktoken recount totals 215,790.
    assert sum(counts) == 215_790
    assert counts == [len(ids) for ids in tokenizer.get_encoding().encode_ordinary_batch(sample_texts)]


def test_special_token_text_is_not_the_eot_id():
    ids = tokenizer.encode_batch(["x <|endoftext|> y"])[0]
    assert EOT_TOKEN not in ids
    assert tokenizer.decode(ids) == "x <|endoftext|> y"


def test_encode_docs_uint16_layout():
    texts = ["first doc", "", "third <|endoftext|>"]
    ids = tokenizer.encode_docs_uint16(texts)
    assert ids.dtype == np.uint16
    enc = tokenizer.get_encoding()
    want = [t for text in texts for t in [EOT_TOKEN, *enc.encode_ordinary(text)]]
    assert ids.tolist() == want
    assert tokenizer.encode_docs_uint16([]).size == 0


def test_empty_inputs():
    assert tokenizer.encode_batch([]) == []
    assert tokenizer.count_tokens([]) == []
    assert tokenizer.decode(np.array([], dtype=np.uint16)) == ""
