"""`tokenized_bins`: exact round trip on the real sample, deterministic split, nanoGPT format,
clean failure on bad input, CLI, and the Dagster asset with its checks."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from finegpt_pipeline import cli, layout
from finegpt_pipeline.data import bins_checks, tokenized_bins, tokenizer
from finegpt_pipeline.config import EOT_TOKEN
from finegpt_pipeline.data.shard import ShardError, sha256_file
from tests._bins_fixture import damaged_copy
from tests._shards import materialize_shard

SAMPLE_TOKENS = 215_790  # tiktoken recount of the 300-document sample
SAMPLE_SPLIT_TOKENS = (199_859, 16_231)  # (train, val) tokens of the sample under the default split


def split_docs(path: Path) -> list[str]:
    """What nanoGPT users see: the bin memmapped as uint16, split at EOT, decoded."""
    data = np.memmap(path, dtype=np.uint16, mode="r")
    assert len(data) == 0 or data[0] == EOT_TOKEN
    cuts = np.flatnonzero(data == EOT_TOKEN).tolist() + [len(data)]
    enc = tokenizer.get_encoding()
    return [enc.decode(data[a + 1:b].tolist()) for a, b in zip(cuts, cuts[1:])]


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


@pytest.fixture(scope="module")
def sample_texts(sample_shard) -> list[str]:
    return pq.read_table(sample_shard, columns=["text"]).column("text").to_pylist()


@pytest.fixture(scope="module")
def sample_bins(sample_shard, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bins")
    return out, tokenized_bins.tokenize_shard(sample_shard, out, num_workers=2)  # the process-pool path


def test_roundtrip_real_sample_in_split_order(sample_bins, sample_texts, sample_shard):
    out, meta = sample_bins
    train, val = split_docs(out / "train.bin"), split_docs(out / "val.bin")
    in_val = [meta_split_is_val(meta, t, i) for i, t in enumerate(sample_texts)]
    assert train == [t for t, v in zip(sample_texts, in_val) if not v]
    assert val == [t for t, v in zip(sample_texts, in_val) if v]
    assert len(train) + len(val) == 300
    report = bins_checks.verify_roundtrip(out, sample_shard)
    assert report["ok"], report["mismatches"]
    assert report["checked"] == 300


def meta_split_is_val(meta: dict, text: str, index: int) -> bool:
    """The split rule exactly as meta.json documents it, recomputed independently."""
    import hashlib
    s = meta["split"]
    h = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")
    min_key = s["min_key"]
    return h < int(s["hash_threshold"]) or (min_key is not None
                                            and (h, index) <= (int(min_key[0]), min_key[1]))


def test_meta_and_nanogpt_format(sample_bins, sample_shard):
    out, meta = sample_bins
    assert json.loads((out / "meta.json").read_text()) == meta
    assert meta["vocab_size"] == 50257 and meta["eot_token"] == EOT_TOKEN
    assert meta["train_docs"] + meta["val_docs"] == 300
    # a tenth of the 300 documents (0.5% alone would leave 2): a val loss worth reporting
    assert (meta["train_docs"], meta["val_docs"]) == (270, 30)
    assert (meta["train_tokens"], meta["val_tokens"]) == SAMPLE_SPLIT_TOKENS
    assert meta["split"]["min_val_docs"] == 30 and meta["split"]["min_val_docs_requested"] is None
    # One EOT per document on top of the tiktoken recount.
    assert meta["train_tokens"] + meta["val_tokens"] == SAMPLE_TOKENS + 300
    assert (out / "train.bin").stat().st_size == 2 * meta["train_tokens"]
    assert (out / "val.bin").stat().st_size == 2 * meta["val_tokens"]
    assert meta["source_sha256"] == sha256_file(sample_shard)
    assert meta["split"]["val_fraction"] == tokenized_bins.DEFAULT_VAL_FRACTION
    assert bins_checks.verify_ids_in_vocab(out) == {"max_id": EOT_TOKEN, "vocab_size": 50257, "ok": True}
    assert leftovers(out) == [".lock", "meta.json", "train.bin", "val.bin"]  # no temp files


def test_split_independent_of_row_groups_and_workers(sample_bins, sample_shard, tmp_path):
    out, meta = sample_bins
    relaid = tmp_path / "relaid.parquet"
    pq.write_table(pq.read_table(sample_shard), relaid, row_group_size=7)
    again = tokenized_bins.tokenize_shard(relaid, tmp_path / "b", num_workers=1)
    for name in layout.BIN_NAMES:
        assert (tmp_path / "b" / name).read_bytes() == (out / name).read_bytes()
    assert again["split"] == meta["split"]


def test_val_fraction_and_min_val_docs(sample_shard, sample_texts, tmp_path):
    meta = tokenized_bins.tokenize_shard(sample_shard, tmp_path / "a", val_fraction=0.2, num_workers=1)
    assert 30 <= meta["val_docs"] <= 90  # ~60 expected from a uniform hash
    expected = sum(meta_split_is_val(meta, t, i) for i, t in enumerate(sample_texts))
    assert meta["val_docs"] == expected
    meta = tokenized_bins.tokenize_shard(sample_shard, tmp_path / "b", val_fraction=0.0, min_val_docs=5,
                               num_workers=1)
    assert meta["val_docs"] == 5
    assert split_docs(tmp_path / "b" / "val.bin") == [
        t for i, t in enumerate(sample_texts) if meta_split_is_val(meta, t, i)]


def test_default_min_val_docs_scales_with_shard_size():
    assert tokenized_bins.min_val_docs_for(300) == 30  # the sample: 10%
    assert tokenized_bins.min_val_docs_for(120) == 12 and tokenized_bins.min_val_docs_for(5) == 1
    # a full shard: 30 is far below its 0.5% (~5,000), so the hash fraction alone decides
    assert tokenized_bins.min_val_docs_for(1_000_000) == 30
    assert tokenized_bins.min_val_docs_for(1_000_000, requested=7) == 7
    assert tokenized_bins.min_val_docs_for(300, requested=0) == 0


def test_tiny_shard_default_split(tmp_path):
    shard = _write(tmp_path / "two.parquet", pa.table({"text": ["first", "second"]}))
    meta = tokenized_bins.tokenize_shard(shard, tmp_path / "o")
    assert (meta["train_docs"], meta["val_docs"]) == (1, 1)


def test_exact_duplicates_split_by_index_tiebreak(tmp_path):
    shard = tmp_path / "dups.parquet"
    pq.write_table(pa.table({"text": ["same text"] * 6 + ["other"]}), shard)
    meta = tokenized_bins.tokenize_shard(shard, tmp_path / "o", val_fraction=0.0, min_val_docs=2)
    assert meta["val_docs"] == 2 and meta["train_docs"] == 5
    assert split_docs(tmp_path / "o" / "train.bin") + split_docs(tmp_path / "o" / "val.bin") \
        in (["same text"] * 4 + ["other"] + ["same text"] * 2,
            ["same text"] * 5 + ["same text", "other"])


def _write(path: Path, table: pa.Table, **kw) -> Path:
    pq.write_table(table, path, **kw)
    return path


@pytest.mark.parametrize("case", ["missing", "not_parquet", "no_text", "int_text", "null_text",
                                  "empty", "too_few_docs", "bad_fraction"])
def test_bad_input_clear_error_and_no_artifacts(case, tmp_path):
    out = tmp_path / "out"
    kwargs = {}
    if case == "missing":
        shard, msg = tmp_path / "nope.parquet", "not found"
    elif case == "not_parquet":
        shard, msg = tmp_path / "junk.parquet", "not a readable parquet"
        shard.write_text("this is not parquet")
    elif case == "no_text":
        shard, msg = _write(tmp_path / "s.parquet", pa.table({"body": ["a"]})), "no `text` column"
    elif case == "int_text":
        shard, msg = _write(tmp_path / "s.parquet", pa.table({"text": [1, 2]})), "expected a string"
    elif case == "null_text":  # the null sits in the last row group: found mid-run, by a worker
        texts = [f"document {i}" for i in range(30)] + [None]
        shard = _write(tmp_path / "s.parquet", pa.table({"text": texts}), row_group_size=10)
        msg, kwargs = "null at row 30", {"num_workers": 2}
    elif case == "empty":
        shard = _write(tmp_path / "s.parquet", pa.table({"text": pa.array([], pa.string())}))
        msg = "no documents"
    elif case == "too_few_docs":
        shard = _write(tmp_path / "s.parquet", pa.table({"text": ["a", "b"]}))
        msg, kwargs = "cannot hold 2 val", {"min_val_docs": 2}
    else:
        shard = _write(tmp_path / "s.parquet", pa.table({"text": ["a", "b", "c"]}))
        msg, kwargs = "val fraction must be in", {"val_fraction": 1.5}
    with pytest.raises((ShardError, ValueError, FileNotFoundError)) as err:
        tokenized_bins.tokenize_shard(shard, out, **kwargs)
    assert msg in str(err.value)
    if case not in ("bad_fraction",):
        assert str(shard) in str(err.value) or shard.name in str(err.value)
    assert leftovers(out) == []


def test_failed_rerun_leaves_the_previous_output_as_it_was(sample_shard, tmp_path):
    out = tmp_path / "out"
    tokenized_bins.tokenize_shard(sample_shard, out, num_workers=1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = _write(tmp_path / "bad.parquet",
                 pa.table({"text": ["fine"] * 20 + [None]}), row_group_size=5)
    with pytest.raises(ShardError, match="null"):
        tokenized_bins.tokenize_shard(bad, out, num_workers=1)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temp files either
    assert layout.verify_files(out)["source_sha256"] == sha256_file(sample_shard)


@pytest.mark.parametrize("existing", [False, True])
def test_interrupted_while_replacing_leaves_nothing_under_final_names(
        existing, sample_shard, tmp_path, monkeypatch):
    """Interrupted after the bins were renamed into place, before meta.json: the last moment
    a run can stop half done. Neither a new nor an old directory keeps mixed bins."""
    out = tmp_path / "out"
    if existing:
        tokenized_bins.tokenize_shard(sample_shard, out, val_fraction=0.2, num_workers=1)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt("interrupted before meta.json")

    monkeypatch.setattr(tokenized_bins, "write_json", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tokenized_bins.tokenize_shard(sample_shard, out, num_workers=1)
    assert [n for n in leftovers(out) if not n.startswith(".lock")] == []


def test_cli(sample_shard, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli.main(["tokenize", str(sample_shard), "--out", str(out), "--val-fraction", "0.1",
                      "--workers", "1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["train_docs"] + printed["val_docs"] == 300
    assert layout.read_meta(out)["split"]["val_fraction"] == 0.1
    # the same shard and settings again: reused, and said; other settings replace, and say so
    mtime = (out / "train.bin").stat().st_mtime_ns
    args = ["tokenize", str(sample_shard), "--out", str(out), "--workers", "1"]
    assert cli.main([*args, "--val-fraction", "0.1"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == printed and "reusing them" in captured.err
    assert (out / "train.bin").stat().st_mtime_ns == mtime
    assert cli.main([*args, "--val-fraction", "0.2"]) == 0
    assert f"tokenize: replaced the bins that were in {out}" in capsys.readouterr().err
    assert cli.main(["tokenize", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "x")]) == 2
    assert "shard file not found" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_takes_shards_through_the_front_door_stats_uses(sample_shard, finegpt_home, tmp_path,
                                                           capsys):
    """hf:// sources and --max-docs, as `finegpt stats` and raw_shard take them."""
    hub = "hf://finegpt-tests/never-cached/data/shard.parquet"  # offline: never fetched
    assert cli.main(["tokenize", hub, "--out", str(tmp_path / "hub")]) == 2
    err = capsys.readouterr().err
    assert hub in err and "cannot fetch from the Hugging Face hub" in err
    assert not (tmp_path / "hub").exists()
    assert cli.main(["tokenize", str(sample_shard), "--max-docs", "40", "--workers", "1",
                                "--out", str(tmp_path / "head")]) == 0
    meta = layout.read_meta(tmp_path / "head")
    assert meta["train_docs"] + meta["val_docs"] == 40
    assert Path(meta["source_path"]).parent == finegpt_home / "shards"


def test_changed_shard_is_refused_as_token_stats_refuses_it(sample_shard, tmp_path):
    """One policy for a described shard: its bytes are hashed once more and must match."""
    out = tmp_path / "o"
    with pytest.raises(ShardError, match="content changed since it was resolved"):
        tokenized_bins.tokenize_shard(sample_shard, out, num_workers=1, expected_sha256="0" * 64)
    assert not out.exists()
    meta = tokenized_bins.tokenize_shard(sample_shard, out, num_workers=1,
                                         expected_sha256=sha256_file(sample_shard))
    assert meta["source_sha256"] == sha256_file(sample_shard)


def test_verifiers_catch_damage(sample_bins, tmp_path, sample_shard):
    out, meta = sample_bins
    broken = damaged_copy(out, tmp_path / "broken", flip_at=5)
    assert not bins_checks.verify_roundtrip(broken, sample_shard)["ok"]
    assert bins_checks.verify_ids_in_vocab(broken)["max_id"] == 50300
    assert not bins_checks.verify_ids_in_vocab(broken)["ok"]
    assert bins_checks.verify_totals(meta, SAMPLE_TOKENS, 300)["ok"]
    assert not bins_checks.verify_totals(meta, SAMPLE_TOKENS + 28, 300)["ok"]


def test_dagster_asset_and_checks(sample_shard, finegpt_home):
    from assets import bins as bins_assets
    from assets.resources import FineGPTHome

    @dg.asset(name="raw_shard")
    def raw_shard_stub() -> dict:
        # The real raw_shard asset lives in another module; this yields the same dict shape.
        pf = pq.ParquetFile(sample_shard)
        return {"path": str(sample_shard), "source": str(sample_shard),
                "sha256": sha256_file(sample_shard), "bytes": sample_shard.stat().st_size,
                "rows": pf.metadata.num_rows, "row_groups": pf.num_row_groups,
                "columns": pf.schema_arrow.names, "missing_columns": []}

    @dg.asset(name="token_stats", deps=["raw_shard"])
    def token_stats_recount() -> dict:
        texts = pq.read_table(sample_shard, columns=["text"]).column("text").to_pylist()
        return {"tokens_tiktoken": sum(tokenizer.count_tokens(texts)), "documents": len(texts)}

    defs = [raw_shard_stub, token_stats_recount, bins_assets.tokenized_bins,
            bins_assets.tokenized_bins_blocking_checks,
            bins_assets.tokenized_bins_totals_match_stats]
    resources = {"finegpt_home": FineGPTHome(root=str(finegpt_home))}
    instance = dg.DagsterInstance.ephemeral()  # one instance: the reruns below read its storage
    result = materialize_shard(defs, sample_shard, instance=instance, resources=resources)
    assert result.success
    value = result.output_for_node("tokenized_bins")
    assert Path(value["dir"]).parent == finegpt_home / "bins"
    assert value["train_tokens"] + value["val_tokens"] == SAMPLE_TOKENS + 300
    checks = result.get_asset_check_evaluations()
    assert sorted(c.check_name for c in checks) == [
        "tokenized_bins_ids_in_vocab", "tokenized_bins_roundtrip",
        "tokenized_bins_totals_match_stats"]
    assert all(c.passed for c in checks)
    mat = result.asset_materializations_for_node("tokenized_bins")[0]
    assert mat.metadata["reused"].value is False

    rerun = dg.AssetSelection.assets("raw_shard", "tokenized_bins").without_checks()
    again = materialize_shard(defs, sample_shard, instance=instance, resources=resources,
                              selection=rerun)
    assert again.asset_materializations_for_node("tokenized_bins")[0].metadata["reused"].value
    # another split is another directory: never the one a training of the first split reads
    assert Path(value["dir"]).name == f"{sha256_file(sample_shard)[:12]}-val0.005-minauto"
    other = materialize_shard(defs, sample_shard, instance=instance, resources=resources,
                              selection=rerun, run_config={
        "ops": {"tokenized_bins": {"config": {"val_fraction": 0.1, "min_val_docs": 3}}}})
    other_dir = Path(other.output_for_node("tokenized_bins")["dir"])
    assert other_dir.name.endswith("-val0.1-min3") and other_dir.parent == Path(value["dir"]).parent
    assert layout.verify_files(value["dir"])["split"]["val_fraction"] == 0.005


def test_dagster_asset_fails_cleanly_on_bad_shard(tmp_path, finegpt_home):
    from assets import bins as bins_assets
    from assets.resources import FineGPTHome

    bad = _write(tmp_path / "bad.parquet", pa.table({"text": ["ok", None, "ok"]}))

    @dg.asset(name="raw_shard")
    def raw_shard_stub() -> dict:
        return {"path": str(bad), "source": str(bad), "sha256": sha256_file(bad)}

    result = materialize_shard([raw_shard_stub, bins_assets.tokenized_bins], bad, raise_on_error=False,
                               resources={"finegpt_home": FineGPTHome(root=str(finegpt_home))})
    assert not result.success
    failure = [e for e in result.all_events if e.is_step_failure][0]
    assert "`text` is null at row 1" in failure.step_failure_data.error.message
    assert not (finegpt_home / "bins").exists() or not any((finegpt_home / "bins").rglob("*.bin"))


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_bins_have_the_usual_mode_and_no_descriptor_leaks(sample_shard, tmp_path):
    tokenized_bins.tokenize_shard(sample_shard, tmp_path / "warm", num_workers=1)  # imports, thread pool
    before = _open_fds()
    tokenized_bins.tokenize_shard(sample_shard, tmp_path / "o", num_workers=1)
    assert _open_fds() == before
    mode = 0o666 & ~_umask()
    for name in (*layout.BIN_NAMES, layout.META_NAME):
        assert stat.S_IMODE((tmp_path / "o" / name).stat().st_mode) == mode, name


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_cli_reads_the_shard_for_its_sha256_once(sample_shard, tmp_path, monkeypatch, finegpt_home):
    """Resolving the shard hashes it; checking that hash before tokenizing does not read it again."""
    from finegpt_pipeline.data import shard

    monkeypatch.setattr(shard, "_HASHED", {})  # as in a fresh process
    reads, real = [], shard.sha256_file
    monkeypatch.setattr(shard, "sha256_file", lambda path: reads.append(path) or real(path))
    assert cli.main(["tokenize", str(sample_shard), "--workers", "1",
                                "--out", str(tmp_path / "o")]) == 0
    assert len(reads) == 1
