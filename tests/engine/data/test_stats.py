"""token_stats engine: every figure checked against an independent pyarrow/Python computation."""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import Counter
from urllib.parse import urlsplit

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tiktoken

from finegpt_pipeline import cli
from finegpt_pipeline.data import stats
from finegpt_pipeline.data.shard import ShardError
from tests.engine.data.test_shard import make_bad_inputs


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory, sample_shard):
    db = tmp_path_factory.mktemp("wh") / "warehouse.duckdb"
    return stats.compute_stats(sample_shard, db), db


@pytest.fixture(scope="module")
def sample_docs(sample_shard):
    return pq.read_table(sample_shard).to_pylist()


def test_sample_recount_figures(sample_run):
    """The shared sample's known facts: 291/300 documents agree, 215,790 vs 215,818 tokens."""
    s, _ = sample_run
    assert s["documents"] == 300
    assert (s["docs_count_equal"], s["docs_count_compared"]) == (291, 300)
    assert (s["tokens_tiktoken"], s["tokens_listed"]) == (215_790, 215_818)
    assert s["total_relative_difference"] == pytest.approx((215_790 - 215_818) / 215_818)
    assert stats.check_recount_agrees(s)[0] and stats.check_text_not_empty(s)[0]


def test_sample_summary_matches_python(sample_run, sample_docs, sample_shard):
    s, _ = sample_run
    enc = tiktoken.get_encoding("gpt2")
    texts = [d["text"] for d in sample_docs]
    tokens = [len(enc.encode_ordinary(t)) for t in texts]  # plain tiktoken, no thread pool
    assert s["characters"] == sum(len(t) for t in texts)
    assert s["utf8_bytes"] == sum(len(t.encode("utf-8")) for t in texts)
    assert s["tokens_tiktoken"] == sum(tokens)
    assert s["tokens_listed"] == sum(d["token_count"] for d in sample_docs)
    assert s["docs_count_equal"] == sum(a == d["token_count"] for a, d in zip(tokens, sample_docs))
    assert s["bytes_per_token"] == pytest.approx(s["utf8_bytes"] / sum(tokens))
    probs = list(stats.QUANTILES.values())
    assert list(s["token_quantiles"].values())[:-1] == pytest.approx(list(np.quantile(tokens, probs)))
    assert s["token_quantiles"]["max"] == max(tokens)
    scores = [d["language_score"] for d in sample_docs]
    assert [s["language_score"][k] for k in stats.QUANTILES] == pytest.approx(list(np.quantile(scores, probs)))
    assert s["language_score"]["mean"] == pytest.approx(np.mean(scores))
    assert {r["language"]: r["documents"] for r in s["languages"]} == Counter(d["language"] for d in sample_docs)
    assert {r["dump"]: r["documents"] for r in s["dumps"]} == Counter(d["dump"] for d in sample_docs)
    assert s["top_domains"] == []  # url is NULL throughout the sample
    assert s["short_docs"] == sum(n < stats.SHORT_DOC_TOKENS for n in tokens)
    assert s["duplicate_docs"] == len(texts) - len(set(texts))
    assert (s["empty_docs"], s["null_texts"]) == (0, 0)
    assert s["sha256"] == s["shard"] == hashlib.sha256(sample_shard.read_bytes()).hexdigest()
    json.dumps(s)  # JSON-able


def test_documents_table_per_row(sample_run, sample_docs):
    s, db = sample_run
    enc = tiktoken.get_encoding("gpt2")
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT doc_index, chars, utf8_bytes, tokens_tiktoken, token_count, "
                           "text_hash, language, dump FROM documents WHERE shard = ? ORDER BY doc_index",
                           [s["shard"]]).fetchall()
        summary_rows = con.execute("SELECT documents, tokens_listed, summary_json FROM shard_summary").fetchall()
    assert [r[0] for r in rows] == list(range(300))
    for row, d in zip(rows, sample_docs):
        t = d["text"]
        assert row[1:] == (len(t), len(t.encode()), len(enc.encode_ordinary(t)), d["token_count"],
                           hashlib.md5(t.encode()).hexdigest(), d["language"], d["dump"])
    assert len(summary_rows) == 1 and summary_rows[0][:2] == (300, 215_818)
    assert json.loads(summary_rows[0][2])["docs_count_equal"] == 291


def test_rerun_is_idempotent_and_shards_are_keyed(sample_shard, tmp_path):
    db = tmp_path / "w.duckdb"
    first = stats.compute_stats(sample_shard, db)
    again = stats.compute_stats(sample_shard, db)
    stats.compute_stats(sample_shard, db, shard_key="other")
    with duckdb.connect(str(db), read_only=True) as con:
        per_shard = dict(con.execute("SELECT shard, count(*) FROM documents GROUP BY shard").fetchall())
        summaries = con.execute("SELECT count(*) FROM shard_summary").fetchone()[0]
    assert per_shard == {first["shard"]: 300, "other": 300} and summaries == 2
    # the same bytes again: the stored summary, not a second pass over the shard
    assert first["reused"] is False and again["reused"] is True
    assert {**again, "reused": False} == first


def test_a_stored_summary_is_reused_only_for_the_same_bytes_and_version(sample_shard, tmp_path,
                                                                         monkeypatch):
    db = tmp_path / "w.duckdb"
    first = stats.compute_stats(sample_shard, db)
    assert stats.compute_stats(sample_shard, db)["reused"] is True
    assert stats.compute_stats(sample_shard, db, force=True)["reused"] is False
    assert stats.stored_summary(db, first["shard"], "0" * 64) is None  # other bytes
    monkeypatch.setattr(stats, "STATS_VERSION", stats.STATS_VERSION + 1)  # the code changed
    assert stats.stored_summary(db, first["shard"], first["sha256"]) is None
    again = stats.compute_stats(sample_shard, db)
    assert again["reused"] is False and again["stats_version"] == stats.STATS_VERSION


def test_interrupted_run_leaves_the_warehouse_as_it_was(sample_shard, tmp_path, monkeypatch):
    db = tmp_path / "w.duckdb"
    key = stats.compute_stats(sample_shard, db)["shard"]

    def crash(*args, **kwargs):  # fails after the old rows were deleted and new ones inserted
        raise KeyboardInterrupt("interrupted mid-write")

    monkeypatch.setattr(stats, "_summarize", crash)
    with pytest.raises(KeyboardInterrupt):
        stats.compute_stats(sample_shard, db, force=True)
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM documents WHERE shard = ?", [key]).fetchone()[0] == 300
        assert con.execute("SELECT documents FROM shard_summary WHERE shard = ?", [key]).fetchone()[0] == 300


def test_text_only_shard_with_nulls_empties_and_duplicates(tmp_path):
    texts = ["hello world", "", None, "hello world", "hello world", "x " * 60, "", "naïve café ☕"]
    path = tmp_path / "text_only.parquet"
    pq.write_table(pa.table({"text": pa.array(texts, pa.string())}), path, row_group_size=3)
    s = stats.compute_stats(path, tmp_path / "w.duckdb")
    enc = tiktoken.get_encoding("gpt2")
    present = [t for t in texts if t is not None]
    tokens = [len(enc.encode_ordinary(t)) for t in present]
    assert s["documents"] == 8 and s["null_texts"] == 1
    assert s["empty_docs"] == sum(t == "" for t in present) == 2
    assert s["short_docs"] == sum(n < stats.SHORT_DOC_TOKENS for n in tokens)
    # extra copies beyond the first: "hello world" x3 -> 2, "" x2 -> 1
    assert s["duplicate_docs"] == len(present) - len(set(present)) == 3
    assert s["duplicate_groups"] == 2
    assert s["characters"] == sum(len(t) for t in present)
    assert s["utf8_bytes"] == sum(len(t.encode()) for t in present)
    assert s["tokens_tiktoken"] == sum(tokens)
    assert s["tokens_listed"] is None and s["docs_count_compared"] == 0
    assert s["total_relative_difference"] is None
    assert s["languages"] == s["dumps"] == s["top_domains"] == [] and s["language_score"] is None
    assert s["missing_columns"] == ["id", "dump", "url", "date", "file_path", "language",
                                    "language_score", "token_count"]
    assert stats.check_recount_agrees(s)[0]  # nothing to compare: passes, saying so
    passed, meta = stats.check_text_not_empty(s)
    assert not passed and meta["null_or_empty_docs"] == 3


def test_top_domains_match_urlsplit(tmp_path):
    urls = ["http://Example.com/a", "https://example.com:8080/b?q=1", "http://user:pw@news.org/x",
            "https://news.org", "http://a.b.c.net/#frag", None, "not a url", "ftp://files.net/f"] * 3
    path = tmp_path / "urls.parquet"
    pq.write_table(pa.table({"text": ["doc"] * len(urls), "url": pa.array(urls, pa.string())}), path)
    s = stats.compute_stats(path, tmp_path / "w.duckdb")
    expected = Counter(urlsplit(u).hostname for u in urls if u and urlsplit(u).hostname)
    assert {r["domain"]: r["documents"] for r in s["top_domains"]} == expected
    assert s["top_domains"][0] == {"domain": "example.com", "documents": 6, "share": 6 / 24}


def test_recount_check_fails_on_disagreement(sample_run):
    s, _ = sample_run
    assert not stats.check_recount_agrees({**s, "docs_equal_fraction": 0.5})[0]
    assert not stats.check_recount_agrees({**s, "total_relative_difference": 0.02})[0]
    assert not stats.check_recount_agrees({**s, "total_relative_difference": -0.02})[0]


@pytest.mark.parametrize("case", ["missing", "truncated", "not_parquet", "no_text", "int_text",
                                  "empty"])
def test_bad_input_clear_error_and_no_warehouse(case, sample_shard, tmp_path):
    path, problem = make_bad_inputs(tmp_path, sample_shard)[case]
    db = tmp_path / "wh" / "w.duckdb"
    with pytest.raises(ShardError) as err:
        stats.compute_stats(path, db)
    assert str(path) in str(err.value) and problem in str(err.value)
    assert not db.parent.exists()


def test_changed_shard_is_refused_before_writing(sample_shard, tmp_path):
    db = tmp_path / "w.duckdb"
    with pytest.raises(ShardError, match="content changed since it was resolved"):
        stats.compute_stats(sample_shard, db, shard_key="k", expected_sha256="0" * 64)
    assert not db.exists()


def test_histogram_png(sample_run):
    s, db = sample_run
    lengths = stats.token_lengths(db, s["shard"])
    assert len(lengths) == 300 and sum(lengths) == 215_790
    assert stats.token_histogram_png(lengths).startswith(b"\x89PNG\r\n\x1a\n")


def test_cli_json_and_text(sample_shard, tmp_path, capsys, finegpt_home):
    db = tmp_path / "cli.duckdb"
    assert cli.main(["stats", str(sample_shard), "--db", str(db), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["docs_count_equal"], out["tokens_tiktoken"], out["tokens_listed"]) == (291, 215_790, 215_818)
    assert cli.main(["stats", str(sample_shard), "--db", str(db)]) == 0
    text = capsys.readouterr().out
    assert "291/300 docs" in text and "215,790" in text and "215,818" in text
    # --max-docs writes the head under FINEGPT_HOME/shards
    assert cli.main(["stats", str(sample_shard), "--db", str(db), "--json", "--max-docs", "20"]) == 0
    assert json.loads(capsys.readouterr().out)["documents"] == 20
    assert len(list((finegpt_home / "shards").glob("*.parquet"))) == 1


def test_cli_subcommand_registration_and_bad_file(tmp_path, capsys, sample_shard):
    parser = argparse.ArgumentParser(prog="finegpt")
    stats.add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["stats", "some.parquet", "--db", "x.duckdb", "--json"])
    assert (args.shard, args.db, args.json, args.func) == ("some.parquet", "x.duckdb", True, stats.run_cli)
    path, _ = make_bad_inputs(tmp_path, sample_shard)["truncated"]
    assert cli.main(["stats", str(path), "--db", str(tmp_path / "w.duckdb")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("finegpt stats: error:") and str(path) in err
    assert not (tmp_path / "w.duckdb").exists()
