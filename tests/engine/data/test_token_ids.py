"""A shard is tokenized once: token_stats keeps its ids under FINEGPT_HOME (`token_ids`) and
tokenized_bins splits them. The bins are byte for byte those of tokenizing afresh; a damaged,
truncated or unfinished cache is never used; the directory keeps one shard's ids."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from finegpt_pipeline import layout
from finegpt_pipeline.data import stats, token_ids, tokenized_bins
from finegpt_pipeline.layout import Home
from finegpt_pipeline.data.shard import ShardError, sha256_file

REPO = Path(__file__).resolve().parents[3]
CACHED = "from the ids kept in"  # tokenize's first line when it splits the ids token_stats kept
BUILT = "from the ids built in"  # ... when it found none and kept them itself first


def _tokenize(shard: Path, home: Home, out: str = "b", **kw) -> tuple[dict, list[str]]:
    lines: list[str] = []
    kw.setdefault("num_workers", 1)
    meta = tokenized_bins.tokenize_shard(shard, home.bins / out, progress=lines.append, **kw)
    return meta, lines


def _bins(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in (*layout.BIN_NAMES, layout.META_NAME)}


def _fresh(shard: Path, root: Path, **kw) -> dict[str, bytes]:
    """Bins tokenized from the texts, as before token_ids: into a directory outside any
    FINEGPT_HOME, where no ids are looked for or kept."""
    lines: list[str] = []
    tokenized_bins.tokenize_shard(shard, root / "plain", num_workers=1, progress=lines.append, **kw)
    assert "1 worker(s)" in lines[0] and not (root / "token_ids").exists()
    return _bins(root / "plain")


def _key_dir(home: Home, shard: Path) -> Path:
    return token_ids.shard_dir(sha256_file(shard), home.token_ids)


def _high_hash_text() -> str:
    """A text whose split hash is in the top tenth: above a 0.5 val fraction's threshold."""
    return next(t for t in (f"document {i}" for i in range(1000))
                if token_ids.doc_hash(t) > 0.9 * 2**64)


@pytest.fixture(scope="module")
def relaid(sample_shard, tmp_path_factory) -> Path:
    """The sample in 43 row groups of 7: ids cross many row-group boundaries."""
    path = tmp_path_factory.mktemp("relaid") / "relaid.parquet"
    pq.write_table(pq.read_table(sample_shard), path, row_group_size=7)
    return path


@pytest.mark.parametrize("case", ["default", "no_min_key", "second_pass", "relaid"])
def test_bins_from_cached_ids_are_byte_identical_to_tokenizing(case, sample_shard, relaid,
                                                                tmp_path):
    shard, kw = sample_shard, {}
    if case == "no_min_key":  # 300 * 0.5 >= 100 * 1: no pre-pass, the hash fraction alone
        kw = {"val_fraction": 0.5, "min_val_docs": 0}
    elif case == "second_pass":  # identical documents, all above the threshold: none in val
        shard = tmp_path / "same.parquet"
        pq.write_table(pa.table({"text": [_high_hash_text()] * 300}), shard)
        kw = {"val_fraction": 0.5, "min_val_docs": 1}
    elif case == "relaid":
        shard = relaid
    expected = _fresh(shard, tmp_path / "fresh", **kw)
    home = Home(tmp_path / "home")
    stats.compute_stats(shard, home.warehouse, num_workers=1)
    meta, lines = _tokenize(shard, home, **kw)
    assert CACHED in lines[0]
    assert _bins(home.bins / "b") == expected
    if case == "second_pass":
        h = token_ids.doc_hash(_high_hash_text())
        assert meta["split"]["min_key"] == [str(h), 0] and meta["val_docs"] == 1
    if case == "no_min_key":
        assert meta["split"]["min_key"] is None


def _documents(db: Path) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT * FROM documents ORDER BY shard, doc_index").fetchall()


def test_warehouse_rows_are_the_same_tokenized_reused_or_not_kept(sample_shard, tmp_path):
    """token_stats gives the same rows and summary whether it tokenizes and keeps the ids,
    reuses them, or writes a database outside a FINEGPT_HOME (nothing kept)."""
    home = Home(tmp_path / "home")
    lines: list[str] = []
    built = stats.compute_stats(sample_shard, home.warehouse, progress=lines.append)
    assert (_key_dir(home, sample_shard) / token_ids.META).exists()
    rows = _documents(home.warehouse)
    # force: past the warehouse's stored summary, to the kept ids
    reused = stats.compute_stats(sample_shard, home.warehouse, progress=lines.append, force=True)
    assert "tokenized before; verified" in lines[-2]
    assert _documents(home.warehouse) == rows
    elsewhere = tmp_path / "elsewhere" / "stats.duckdb"
    alone = stats.compute_stats(sample_shard, elsewhere)
    assert _documents(elsewhere) == rows
    assert sorted(p.name for p in elsewhere.parent.iterdir()) == ["stats.duckdb", "stats.duckdb.lock"]
    for other in (reused, alone):
        assert {k: v for k, v in other.items() if k not in ("db_path",)} == \
            {k: v for k, v in built.items() if k not in ("db_path",)}


def test_null_text_fails_as_tokenizing_does(tmp_path):
    texts = [f"document {i}" for i in range(30)] + [None] + ["after"] * 4
    shard = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"text": texts}), shard, row_group_size=10)
    with pytest.raises(ShardError) as fresh:
        tokenized_bins.tokenize_shard(shard, tmp_path / "fresh" / "bins" / "b", num_workers=1)
    home = Home(tmp_path / "home")
    assert stats.compute_stats(shard, home.warehouse, num_workers=1)["null_texts"] == 1
    with pytest.raises(ShardError) as cached:
        _tokenize(shard, home)
    assert str(cached.value) == str(fresh.value)
    assert "null at row 30 (1 null rows in row group 3)" in str(cached.value)
    assert not (home.bins / "b").exists()


def _damage(kdir: Path, how: str) -> None:
    if how == "truncated_ids":
        with open(kdir / token_ids.IDS, "rb+") as fh:
            fh.truncate((kdir / token_ids.IDS).stat().st_size - 2)
    elif how == "changed_id":  # same size, one id other: only the content hash can tell
        ids = np.fromfile(kdir / token_ids.IDS, dtype=np.uint16)
        ids[12345] = (int(ids[12345]) + 1) % 50000
        ids.tofile(kdir / token_ids.IDS)
    elif how == "changed_count":
        raw = bytearray((kdir / token_ids.DOCS).read_bytes())
        raw[8] ^= 1
        (kdir / token_ids.DOCS).write_bytes(bytes(raw))
    elif how == "meta_garbage":
        (kdir / token_ids.META).write_text("{not json")
    elif how == "other_tokenizer":
        meta = json.loads((kdir / token_ids.META).read_text())
        (kdir / token_ids.META).write_text(json.dumps({**meta, "tokenizer": "tiktoken 0.1 gpt2"}))


@pytest.fixture(scope="module")
def sample_expected(sample_shard, tmp_path_factory) -> dict[str, bytes]:
    return _fresh(sample_shard, tmp_path_factory.mktemp("fresh"))


@pytest.mark.parametrize("how", ["truncated_ids", "changed_id", "changed_count", "meta_garbage",
                                 "other_tokenizer"])
def test_damaged_cache_is_detected_and_the_shard_tokenized(how, sample_shard, sample_expected,
                                                           tmp_path):
    expected = sample_expected
    home = Home(tmp_path / "home")
    summary = stats.compute_stats(sample_shard, home.warehouse, num_workers=1)
    kdir = _key_dir(home, sample_shard)
    _damage(kdir, how)
    meta, lines = _tokenize(sample_shard, home)
    assert _bins(home.bins / "b") == expected
    if how == "changed_id":  # found while streaming: nothing published, the cache removed
        assert CACHED in lines[0] and "sha256" in lines[1] and "tokenizing the shard instead" in lines[1]
        assert not kdir.exists()
    else:  # refused before use: tokenize builds them again, then splits them
        assert not any(CACHED in line for line in lines) and any(BUILT in line for line in lines)
    # token_stats rebuilds what it cannot verify, and the next tokenize splits it
    again = stats.compute_stats(sample_shard, home.warehouse, num_workers=1, force=True)
    assert again["tokens_tiktoken"] == summary["tokens_tiktoken"]
    _, lines = _tokenize(sample_shard, home, out="c")
    assert CACHED in lines[0] and _bins(home.bins / "c") == expected


def test_interrupted_before_the_marker_leaves_nothing_that_reads_as_complete(sample_shard, tmp_path,
                                                                             monkeypatch):
    """Stopped after ids.bin and docs.bin were renamed into place, before meta.json: the last
    moment a build can stop half done."""
    home = Home(tmp_path / "home")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt("interrupted before meta.json")

    monkeypatch.setattr(token_ids, "write_json", interrupted)
    with pytest.raises(KeyboardInterrupt):
        stats.compute_stats(sample_shard, home.warehouse, num_workers=1)
    monkeypatch.undo()
    kdir = _key_dir(home, sample_shard)
    assert (kdir / token_ids.IDS).exists() and not (kdir / token_ids.META).exists()
    with token_ids.reading(sha256_file(sample_shard), 300, home.token_ids) as ids:
        assert ids is None
    _, lines = _tokenize(sample_shard, home)
    assert not any(CACHED in line for line in lines) and any(BUILT in line for line in lines)
    assert sorted(p.name for p in kdir.iterdir()) == [".lock", "docs.bin", "ids.bin", "meta.json"]


def test_tokenize_first_keeps_the_ids_and_token_stats_reuses_them(sample_shard, sample_expected,
                                                                  tmp_path):
    """The other order (the assets run side by side): still one tokenization, same outputs."""
    home = Home(tmp_path / "home")
    _, lines = _tokenize(sample_shard, home)
    assert any(BUILT in line for line in lines) and _bins(home.bins / "b") == sample_expected
    reused: list[str] = []
    summary = stats.compute_stats(sample_shard, home.warehouse, progress=reused.append)
    assert "tokenized before; verified" in reused[0]
    elsewhere = tmp_path / "elsewhere" / "stats.duckdb"
    assert stats.compute_stats(sample_shard, elsewhere)["tokens_tiktoken"] == summary["tokens_tiktoken"]
    assert _documents(home.warehouse) == _documents(elsewhere)


_BUILD = """
import sys
from finegpt_pipeline.data import token_ids
token_ids.counts_for(sys.argv[1], sys.argv[2], sys.argv[3], num_workers=1)
"""


def test_killed_build_leaves_no_cache_and_the_next_build_clears_it(sample_shard, tmp_path):
    """A real build, SIGKILLed while it writes ids.bin: no cache; the next one starts clean."""
    shard = tmp_path / "big.parquet"
    table = pq.read_table(sample_shard, columns=["text"])
    pq.write_table(pa.concat_tables([table] * 20), shard, row_group_size=10)
    sha, root = sha256_file(shard), tmp_path / "home" / "token_ids"
    kdir = token_ids.shard_dir(sha, root)
    proc = subprocess.Popen([sys.executable, "-c", _BUILD, str(shard), sha, str(root)],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.startswith(".ids.bin.tmp-") and p.stat().st_size
                      for p in (kdir.iterdir() if kdir.exists() else [])):
            assert proc.poll() is None and time.monotonic() < deadline, "the build ended first"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (kdir / token_ids.META).exists()
    with token_ids.reading(sha, 6000, root) as ids:
        assert ids is None
    counts = token_ids.counts_for(shard, sha, root, num_workers=1)
    assert counts.size == 6000 and int(counts.sum()) == 20 * 215_790
    assert sorted(p.name for p in kdir.iterdir()) == [".lock", "docs.bin", "ids.bin", "meta.json"]


def test_tokenize_waits_for_a_build_in_progress_and_splits_its_ids(sample_shard, tmp_path):
    """token_stats and tokenized_bins side by side: tokenize waits for the ids, not tokenizing."""
    shard = tmp_path / "big.parquet"
    pq.write_table(pa.concat_tables([pq.read_table(sample_shard, columns=["text"])] * 10), shard,
                   row_group_size=10)
    expected = _fresh(shard, tmp_path / "fresh")
    home = Home(tmp_path / "home")
    kdir = _key_dir(home, shard)
    builder = threading.Thread(target=token_ids.counts_for,
                               args=(shard, sha256_file(shard), home.token_ids, 1))
    builder.start()
    while not any(p.name.startswith(".ids.bin.tmp-") for p in (kdir.iterdir() if kdir.exists() else [])):
        assert builder.is_alive(), "the build ended first"
        time.sleep(0.01)
    _, lines = _tokenize(shard, home)
    builder.join()
    assert "is writing this shard's token ids; waiting" in lines[0] and CACHED in lines[1]
    assert _bins(home.bins / "b") == expected


def test_one_shards_ids_are_kept_except_those_in_use(sample_shard, relaid, tmp_path):
    home = Home(tmp_path / "home")
    stats.compute_stats(sample_shard, home.warehouse, num_workers=1)
    first = _key_dir(home, sample_shard)
    with token_ids.reading(sha256_file(sample_shard), 300, home.token_ids) as ids:
        assert ids is not None
        stats.compute_stats(relaid, home.warehouse, num_workers=1)  # built while the first is read: kept
        assert (first / token_ids.META).exists()
    head = tmp_path / "head.parquet"
    pq.write_table(pq.read_table(sample_shard).slice(0, 50), head)
    stats.compute_stats(head, home.warehouse, num_workers=1)
    assert sorted(p.name for p in home.token_ids.iterdir()) == [_key_dir(home, head).name]


def test_the_ids_live_in_the_home_of_the_warehouse_and_the_bins(tmp_path):
    home = Home(tmp_path / "h")
    assert token_ids.root_for_warehouse(home.warehouse) == home.token_ids
    assert token_ids.root_for_bins(home.bins / "abc-val0.005-minauto") == home.token_ids
    assert token_ids.root_for_warehouse(tmp_path / "h" / "other.duckdb") is None
    assert token_ids.root_for_bins(tmp_path / "somewhere" / "out") is None
