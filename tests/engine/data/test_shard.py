"""raw_shard engine: source resolution, head-N subsets, metadata, and every bad input."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from finegpt_pipeline.data.shard import (FINEWEB_COLUMNS, ShardError, head_row_groups, parse_hf_source,
                                    resolve_shard, write_head)

INFO_KEYS = {"path", "source", "sha256", "bytes", "rows", "row_groups", "columns", "missing_columns"}


def make_bad_inputs(tmp_path, sample_shard) -> dict:
    """Each bad input the issue names, written to its own file."""
    bad = tmp_path / "bad"
    bad.mkdir()
    data = sample_shard.read_bytes()
    truncated = bad / "truncated.parquet"
    truncated.write_bytes(data[: len(data) // 2])
    not_parquet = bad / "notes.parquet"
    not_parquet.write_text("id,text\n1,hello\n")
    no_text = bad / "no_text.parquet"
    pq.write_table(pa.table({"body": ["a", "b"]}), no_text)
    int_text = bad / "int_text.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), int_text)
    empty = bad / "empty.parquet"  # the sample's schema, no rows
    pq.write_table(pq.read_schema(sample_shard).empty_table(), empty)
    return {
        "missing": (bad / "absent.parquet", "not found"),
        "truncated": (truncated, "not a readable parquet"),
        "not_parquet": (not_parquet, "not a readable parquet"),
        "no_text": (no_text, "no `text` column"),
        "int_text": (int_text, "expected a string"),
        "empty": (empty, "no documents"),
    }


def test_local_shard_metadata_matches_independent_reads(sample_shard, tmp_path):
    dest = tmp_path / "shards"
    info = resolve_shard(sample_shard, dest)
    d = info.to_dict()
    assert set(d) == INFO_KEYS
    meta = pq.read_metadata(sample_shard)
    assert d["path"] == str(sample_shard.resolve())
    assert d["sha256"] == hashlib.sha256(sample_shard.read_bytes()).hexdigest()
    assert d["bytes"] == len(sample_shard.read_bytes())
    assert (d["rows"], d["row_groups"]) == (300, 3) == (meta.num_rows, meta.num_row_groups)
    assert d["columns"] == list(FINEWEB_COLUMNS)
    assert d["missing_columns"] == []
    assert not dest.exists(), "a full local shard is used in place, not copied"


def test_head_docs_is_the_first_n_documents_and_deterministic(sample_shard, tmp_path):
    dest = tmp_path / "shards"
    info = resolve_shard(sample_shard, dest, max_docs=150)
    assert info.path.startswith(str(dest)) and info.rows == 150
    expected = pq.read_table(sample_shard).slice(0, 150)
    got = pq.read_table(info.path)
    assert got.column("text").to_pylist() == expected.column("text").to_pylist()
    assert got.schema == expected.schema
    assert info.sha256 == hashlib.sha256(open(info.path, "rb").read()).hexdigest()
    # same request, same bytes: the data version (sha256) is stable across re-runs
    assert resolve_shard(sample_shard, dest, max_docs=150).sha256 == info.sha256
    assert [p.name for p in dest.iterdir()] == [info.path.rsplit("/", 1)[1]], "no temp files left"


def test_head_row_groups_and_whole_file_limits(sample_shard, tmp_path):
    info = resolve_shard(sample_shard, tmp_path, max_row_groups=1)
    assert info.rows == 100
    assert pq.read_table(info.path).column("text").to_pylist() == \
        pq.ParquetFile(sample_shard).read_row_group(0).column("text").to_pylist()
    both = resolve_shard(sample_shard, tmp_path, max_docs=250, max_row_groups=2)
    assert both.rows == 200
    whole = resolve_shard(sample_shard, tmp_path / "none", max_docs=10_000)
    assert whole.path == str(sample_shard.resolve()) and whole.rows == 300


def test_head_row_group_selection():
    pf = pq.ParquetFile(io.BytesIO(_three_group_parquet()))
    assert head_row_groups(pf, 1, None) == [0]
    assert head_row_groups(pf, 100, None) == [0]
    assert head_row_groups(pf, 101, None) == [0, 1]
    assert head_row_groups(pf, None, 2) == [0, 1]
    assert head_row_groups(pf, None, None) == [0, 1, 2]


def _three_group_parquet() -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"text": [f"doc {i}" for i in range(300)]}), buf, row_group_size=100)
    return buf.getvalue()


class RecordingFile(io.FileIO):
    """A file that records which byte ranges were read."""

    def __init__(self, path):
        super().__init__(path, "rb")
        self.ranges: list[tuple[int, int]] = []

    def read(self, size=-1):
        start = self.tell()
        data = super().read(size)
        self.ranges.append((start, start + len(data)))
        return data

    def readinto(self, b):
        start = self.tell()
        n = super().readinto(b)
        self.ranges.append((start, start + (n or 0)))
        return n


def test_head_reads_only_the_needed_row_groups(sample_shard, tmp_path):
    """The head of a file object (how hub files are read) touches only its row groups' bytes."""
    meta = pq.read_metadata(sample_shard)
    fh = RecordingFile(sample_shard)
    with fh:
        out = write_head(pq.ParquetFile(fh), tmp_path / "head.parquet", 50, None, str(sample_shard))
    assert pq.read_metadata(out).num_rows == 50
    skipped = []
    for g in (1, 2):
        for c in range(meta.num_columns):
            col = meta.row_group(g).column(c)
            start = col.dictionary_page_offset or col.data_page_offset
            skipped.append((start, start + col.total_compressed_size))
    size = sample_shard.stat().st_size
    # pyarrow fetches the footer with one speculative read of the file's last 64 KiB
    body_reads = [r for r in fh.ranges if not (r[1] == size and r[1] - r[0] <= 64 * 1024)]
    overlaps = [(r, s) for r in body_reads for s in skipped if r[0] < s[1] and s[0] < r[1]]
    assert not overlaps, f"read bytes of row groups 1-2: {overlaps[:3]}"
    assert sum(b - a for a, b in fh.ranges) < 0.6 * size


def test_missing_fineweb_columns_are_listed(tmp_path):
    only_text = tmp_path / "only_text.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "extra": [1, 2]}), only_text)
    info = resolve_shard(only_text, tmp_path / "shards")
    assert info.missing_columns == [c for c in FINEWEB_COLUMNS if c != "text"]
    assert info.columns == ["text", "extra"]


@pytest.mark.parametrize("case", ["missing", "truncated", "not_parquet", "no_text", "int_text",
                                  "empty"])
@pytest.mark.parametrize("max_docs", [None, 10])
def test_bad_input_clear_error_and_no_artifact(case, max_docs, sample_shard, tmp_path):
    path, problem = make_bad_inputs(tmp_path, sample_shard)[case]
    dest = tmp_path / "shards"
    with pytest.raises(ShardError) as err:
        resolve_shard(path, dest, max_docs=max_docs)
    assert str(path) in str(err.value) and problem in str(err.value)
    assert not dest.exists()


@pytest.mark.parametrize("bad", [0, -3, 1.5, True])
def test_limits_must_be_positive_integers(bad, sample_shard, tmp_path):
    with pytest.raises(ShardError, match="max_docs"):
        resolve_shard(sample_shard, tmp_path, max_docs=bad)
    with pytest.raises(ShardError, match="max_row_groups"):
        resolve_shard(sample_shard, tmp_path, max_row_groups=bad)


def test_parse_hf_source():
    default = "hf://HuggingFaceFW/fineweb/data/CC-MAIN-2013-20/000_00000.parquet"
    assert parse_hf_source(default) == ("HuggingFaceFW/fineweb", "data/CC-MAIN-2013-20/000_00000.parquet")
    assert parse_hf_source("hf://datasets/o/n/x.parquet") == ("o/n", "x.parquet")
    for bad in ("hf://only/repo", "hf://o//x.parquet", "/local/path.parquet"):
        with pytest.raises(ShardError):
            parse_hf_source(bad)


@pytest.mark.parametrize("max_docs", [None, 10])
def test_hf_source_offline_fails_clearly(max_docs, tmp_path):
    """Tests run offline (HF_HUB_OFFLINE=1 from conftest): the real hub client refuses and the
    error names the source; nothing is written."""
    source = "hf://finegpt-tests/never-cached/data/shard.parquet"  # not in any local cache
    with pytest.raises(ShardError, match="cannot fetch from the Hugging Face hub") as err:
        resolve_shard(source, tmp_path / "shards", max_docs=max_docs)
    assert source in str(err.value)
    assert not (tmp_path / "shards").exists()


def test_a_rewritten_shard_is_hashed_again_and_refused(sample_shard, tmp_path):
    """The sha256 is read once per file version: new bytes under the same name are noticed."""
    from finegpt_pipeline.data.shard import verified_sha256

    local = tmp_path / "s.parquet"
    shutil.copyfile(sample_shard, local)
    first = verified_sha256(local)
    assert verified_sha256(local, first) == first
    data = bytearray(local.read_bytes())
    data[100] ^= 0xFF  # same size, other bytes
    local.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="content changed since it was resolved"):
        verified_sha256(local, first)


def test_the_sha256_is_read_once_per_file_version_across_processes(sample_shard, tmp_path,
                                                                    monkeypatch, finegpt_home):
    """Each Dagster step is a process of its own: the first reads the shard for its sha256 and
    records it under the home's hashes/; the next finds it there. A rewritten file (same
    name, same size, new bytes and mtime) is read again."""
    from finegpt_pipeline import paths
    from finegpt_pipeline.data import shard

    local = tmp_path / "s.parquet"
    shutil.copyfile(sample_shard, local)
    os.utime(local, (time.time() - 60, time.time() - 60))  # older than the racy window
    reads, real = [], shard.sha256_file
    monkeypatch.setattr(shard, "sha256_file", lambda path: reads.append(path) or real(path))
    monkeypatch.setattr(shard, "_HASHED", {})
    first = shard.verified_sha256(local)
    assert len(reads) == 1 and len(list(paths.home().shard_hashes.glob("*.json"))) == 1
    monkeypatch.setattr(shard, "_HASHED", {})  # a new process
    assert shard.verified_sha256(local, first) == first and len(reads) == 1

    data = bytearray(local.read_bytes())
    data[100] ^= 0xFF  # same size, other bytes, a later mtime
    local.write_bytes(bytes(data))
    os.utime(local, (time.time() - 30, time.time() - 30))
    monkeypatch.setattr(shard, "_HASHED", {})
    with pytest.raises(ShardError, match="content changed since it was resolved"):
        shard.verified_sha256(local, first)
    assert len(reads) == 2
