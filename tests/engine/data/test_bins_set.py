"""Bins sets: several shards' bins read as one (`bins_set`), on real bins. The plan counts all
their tokens, training windows are drawn across the members in proportion to their size and
never cross one's end, val is the union of their val splits, and a plain bins dir reads
exactly as before."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests._bins_fixture import child_env, write_plan
from finegpt_pipeline import cli, layout
from finegpt_pipeline.data import bins_set
from finegpt_pipeline.evaluate import measure, unigram
from finegpt_pipeline.plan import inputs as plan_data
from finegpt_pipeline.train.batches import BatchSource, Bins
from finegpt_pipeline.config import EOT_TOKEN
from finegpt_pipeline.model import GPT, GPTConfig

CPU = torch.device("cpu")


def _write(out: Path, train: np.ndarray, val: np.ndarray, **meta) -> Path:
    out.mkdir(parents=True)
    train.astype(np.uint16).tofile(out / "train.bin")
    val.astype(np.uint16).tofile(out / "val.bin")
    layout.write_meta(out, **meta)
    return out


def _text_bins(out: Path, texts: list[str], **meta) -> Path:
    """Bins as the tokenize stage lays them out: EOT before each document, every 5th to val."""
    from finegpt_pipeline.data.tokenizer import encode_batch

    docs = encode_batch(texts)
    ids = {split: np.array([t for i, d in enumerate(docs) if (i % 5 == 4) == (split == "val")
                            for t in (EOT_TOKEN, *d)]) for split in ("train", "val")}
    return _write(out, ids["train"], ids["val"], train_docs=sum(i % 5 != 4 for i in range(len(docs))),
                  val_docs=sum(i % 5 == 4 for i in range(len(docs))), **meta)


@pytest.fixture(scope="module")
def shards(sample_shard, tmp_path_factory) -> tuple[Path, Path, Path]:
    """Two members cut from the real sample (documents 0-14 and 15-44), and a plain bins dir
    holding their splits concatenated in manifest order: what the set must read as."""
    root = tmp_path_factory.mktemp("shards")
    texts = pq.read_table(sample_shard, columns=["text"]).column("text").to_pylist()
    a = _text_bins(root / "a", texts[:15], source_sha256="a" * 64, source_path=str(sample_shard))
    b = _text_bins(root / "b", texts[15:45])
    merged = _write(root / "merged",
                    *(np.concatenate([np.fromfile(d / f"{s}.bin", dtype=np.uint16) for d in (a, b)])
                      for s in ("train", "val")))
    return a, b, merged


@pytest.fixture
def counted(tmp_path) -> tuple[Path, Path]:
    """Two members 1:3 in size whose tokens name their place: member a's token i is i, member
    b's is 10000 + i (train; val likewise from 20000 and 30000)."""
    a = _write(tmp_path / "a", np.arange(1000), 20000 + np.arange(100))
    b = _write(tmp_path / "b", 10000 + np.arange(3000), 30000 + np.arange(300))
    return a, b


def test_set_is_written_once_per_members_and_bins(counted, tmp_path):
    a, b = counted
    root = tmp_path / "sets"
    first = bins_set.write_set([b, str(a), tmp_path / "." / "a"], root)  # a twice
    assert first.parent == root.resolve() and sorted(p.name for p in first.iterdir()) == ["manifest.json"]
    manifest = json.loads((first / "manifest.json").read_text())
    assert [m["dir"] for m in manifest["members"]] == [str(a.resolve()), str(b.resolve())]
    assert manifest["members"][0] == {"dir": str(a.resolve()), "train_tokens": 1000,
                                      "val_tokens": 100, "fingerprint": layout.bins_fingerprint(a)}
    stamp = _stamp(first / "manifest.json")
    assert bins_set.write_set([a, b], root) == first  # same members, any order: same set
    assert _stamp(first / "manifest.json") == stamp  # not rewritten
    assert bins_set.is_set(first) and not bins_set.is_set(a)
    assert bins_set.members(first) == [a.resolve(), b.resolve()] and bins_set.members(a) == [a]
    assert bins_set.write_set([first, a], root) == first  # a set's members join, deduped
    # a member re-tokenized: another set; the old one no longer opens
    layout.write_meta(b, note="re-tokenized")
    assert bins_set.write_set([a, b], root) != first
    with pytest.raises(ValueError, match="changed since the set was written"):
        bins_set.members(first)


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def test_one_member_is_that_bins_dir_and_none_is_an_error(counted, tmp_path):
    a, _ = counted
    root = tmp_path / "sets"
    assert bins_set.write_set([a], root) == a.resolve()
    assert bins_set.write_set([a, str(a)], root) == a.resolve()
    with pytest.raises(ValueError) as err:
        bins_set.write_set([], root)
    assert "\n" not in str(err.value) and "at least one" in str(err.value)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "train.bin").write_bytes(b"\0\0")
    with pytest.raises(FileNotFoundError, match="no meta.json"):
        bins_set.write_set([a, unfinished], root)
    assert not root.exists()  # nothing left behind


def test_set_meta_sums_its_members(shards, tmp_path):
    a, b, _ = shards
    s = bins_set.write_set([a, b], layout.Home(tmp_path).bin_sets)
    assert s.parent == tmp_path.resolve() / "bins" / "sets"
    metas = [layout.read_meta(a), layout.read_meta(b)]
    meta = layout.read_meta(s)
    for key in ("train_tokens", "val_tokens", "train_docs", "val_docs"):
        assert meta[key] == metas[0][key] + metas[1][key]
    assert meta["vocab_size"] == 50257 and [m["dir"] for m in meta["members"]] == [
        str(a.resolve()), str(b.resolve())]
    assert meta["members"][0]["source_sha256"] == "a" * 64  # as its meta.json has it
    assert "source_sha256" not in meta["members"][1] and "source_sha256" not in meta
    assert layout.verify_files(s) == meta
    assert plan_data.tokens_from_bins(s) == meta["train_tokens"]
    with Bins(s) as bins:
        assert bins.tokens == {"train": meta["train_tokens"], "val": meta["val_tokens"]}
        assert bins.meta == meta
    assert layout.bins_fingerprint(s) == layout.bins_fingerprint(s) != layout.bins_fingerprint(a)


def test_windows_are_drawn_in_proportion_and_never_cross_a_member(counted, tmp_path):
    a, b = counted
    s = bins_set.write_set([a, b], tmp_path / "sets")
    T = 8
    with Bins(s) as bins:
        bins.check(T, 50304)
        # window starts: a's 992 first, then b's 2992; the edges read each member's own end
        w = bins.windows("train", np.array([0, 991, 992, 3983]), T + 1)
        assert w.tolist() == [list(range(9)), list(range(991, 1000)),
                              list(range(10000, 10009)), list(range(12991, 13000))]
        src = BatchSource(bins, T, micro_batch=64, seed=7, device=CPU)
        xs = torch.cat([torch.cat([x, y[:, -1:]], 1) for x, y in
                        (src.train_batch(step, 0) for step in range(200))]).numpy()
        # the trainer's val estimate: windows of both members' val.bin, none across the seam
        vals = torch.cat([torch.cat([x, y[:, -1:]], 1) for x, y in
                          (src.val_batch(k) for k in range(20))]).numpy()
    assert ((vals - vals[:, :1]) == np.arange(T + 1)).all()
    assert {int(v) // 10000 for v in vals[:, 0]} == {2, 3}
    first = xs[:, :1]
    assert ((xs - first) == np.arange(T + 1)).all()  # consecutive tokens of one member's file
    in_a = first[:, 0] < 1000
    assert (first[in_a] <= 1000 - (T + 1)).all() and (first[~in_a] <= 13000 - (T + 1)).all()
    assert in_a.mean() == pytest.approx(992 / (992 + 2992), abs=0.02)  # 24.9%, 12,800 windows
    assert len(np.unique(first)) > 3000  # spread over both members, not a few offsets


def test_a_plain_dir_draws_exactly_as_before(counted):
    """Offsets and windows of a plain bins dir: today's formula, unchanged (resume and DDP
    determinism rest on it)."""
    a, _ = counted
    T, mb, seed = 16, 4, 1337
    data = np.fromfile(a / "train.bin", dtype=np.uint16).astype(np.int64)
    with Bins(a) as bins:
        src = BatchSource(bins, T, mb, seed, CPU)
        for step, micro in ((0, 0), (5, 3), (1234, 1)):
            expected = np.random.default_rng([seed, step, micro]).integers(0, 1000 - T, size=mb)
            assert (src.offsets("train", step, micro) == expected).all()
            x, y = src.train_batch(step, micro)
            assert x.tolist() == [data[o:o + T].tolist() for o in expected]
            assert y.tolist() == [data[o + 1:o + T + 1].tolist() for o in expected]


def test_a_member_shorter_than_a_window_is_named(counted, tmp_path):
    a, _ = counted
    short = _write(tmp_path / "short", np.arange(50), np.arange(20))
    with Bins(bins_set.write_set([a, short], tmp_path / "sets")) as bins:
        with pytest.raises(ValueError, match="fewer than block_size") as err:
            bins.check(32, 50304)
    assert str(short / "val.bin") in str(err.value)


def test_val_is_the_union_of_the_members(shards, tmp_path):
    """On a set, every measurement of val equals that on one bins dir holding the members'
    splits concatenated: the eval report's, the champion check's and the unigram baseline."""
    from finegpt_pipeline.evaluate import champion

    a, b, merged = shards
    s = bins_set.write_set([a, b], tmp_path / "sets")
    assert layout.val_sha256(s) == layout.sha256_file(merged / "val.bin")
    assert layout.val_sha256(a) == layout.sha256_file(a / "val.bin")
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=50304, n_layer=1, n_head=2, n_embd=32))
    on_set, val_tokens, train_tokens = measure.measure_on_bins(model, s)
    on_merged, *sizes = measure.measure_on_bins(model, merged)
    assert (val_tokens, train_tokens) == tuple(sizes) and on_set["tokens"] == val_tokens - 1
    for key in ("val_loss", "val_loss_se", "val_bpb", "unigram_loss", "unigram_bpb"):
        assert on_set[key] == pytest.approx(on_merged[key], abs=1e-6), key
    assert unigram.unigram_val_loss(s) == pytest.approx(unigram.unigram_val_loss(merged), abs=1e-9)
    measured = champion.measure(model, s)
    assert measured["val_loss"] == pytest.approx(on_merged["val_loss"], abs=1e-6)
    assert measured["bins_fingerprint"] == layout.bins_fingerprint(s)


def test_changed_or_removed_member_refuses_the_set_in_one_line(counted, tmp_path):
    a, b = counted
    s = bins_set.write_set([a, b], tmp_path / "sets")
    with open(b / "val.bin", "ab") as fh:  # re-tokenized: other bins under the same name
        fh.write(np.arange(4, dtype=np.uint16).tobytes())
    layout.write_meta(b)
    for opener in (Bins, layout.read_meta, layout.val_sha256, bins_set.members):
        with pytest.raises(ValueError) as err:
            opener(s)
        message = str(err.value)
        assert "\n" not in message and str(s / "manifest.json") in message, opener
        assert str(b.resolve()) in message and "write the set again" in message
    layout.bins_fingerprint(s)  # never fails
    proc = subprocess.run([sys.executable, "-m", "finegpt_pipeline.train", "--bins", str(s),
                           "--plan", str(write_plan(tmp_path / "plan.json")), "--out",
                           str(tmp_path / "run"), "--no-mlflow"],
                          capture_output=True, text=True, env=child_env(), timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert str(s / "manifest.json") in proc.stderr and not (tmp_path / "run").exists()
    for name in ("train.bin", "val.bin", "meta.json"):
        (a / name).unlink()
    with pytest.raises(FileNotFoundError, match="is gone"):
        Bins(s)


def test_mlflow_inputs_name_each_member(counted, shards, tmp_path):
    from finegpt_pipeline.tracking import datasets as mlflow_datasets

    with_shard = mlflow_datasets.bins_inputs(bins_set.write_set(shards[:2], tmp_path / "sets"))
    assert [d.name for d, _ in with_shard] == [  # the shard member a's meta.json names
        "raw_shard", "tokenized_bins/train", "tokenized_bins/val", "tokenized_bins/train",
        "tokenized_bins/val"]
    a, b = counted
    s = bins_set.write_set([a, b], tmp_path / "sets")
    inputs = mlflow_datasets.bins_inputs(s)
    got = [(d.name, json.loads(d.source.to_json())["uri"], d.digest, tags["bins_set"])
           for d, tags in inputs]
    assert got == [(f"tokenized_bins/{split}", str(m.resolve() / f"{split}.bin"),
                    layout.bins_fingerprint(m), str(s)) for m in (a, b) for split in ("train", "val")]
    plain = [(d.name, d.digest, tags) for d, tags in mlflow_datasets.bins_inputs(a)]
    assert plain == [(d.name, d.digest, {k: v for k, v in tags.items() if k != "bins_set"})
                     for d, tags in inputs[:2]]


def test_train_plan_and_eval_on_a_set(shards, tmp_path, capsys):
    """`finegpt bins-set`, then `finegpt plan`, `finegpt train` (2 steps, a 1-layer model) and
    `finegpt eval` on it: the checkpoint's report is measured on the union of the val splits."""
    a, b, _ = shards
    # the same shard twice is a one-line refusal, nothing written
    assert cli.main(["bins-set", str(a), str(a), "--home", str(tmp_path / "home")]) == 2
    assert "given more than once" in capsys.readouterr().err
    assert not (tmp_path / "home").exists()
    assert cli.main(["bins-set", str(a), str(b), "--home", str(tmp_path / "home")]) == 0
    s = Path(capsys.readouterr().out.strip())
    assert s.parent == (tmp_path / "home" / "bins" / "sets").resolve() and bins_set.is_set(s)
    meta = layout.read_meta(s)
    assert cli.main(["plan", "--gpu", "cpu", "--bins", str(s), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["report"]["tokens_available"] == meta["train_tokens"]
    plan = write_plan(tmp_path / "plan.json", n_layer=1, n_embd=32, block_size=32, micro_batch=2,
                      max_iters=2, lr_decay_iters=2, warmup_iters=1, eval_interval=2, eval_iters=2,
                      checkpoint_interval=2)
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "finegpt_pipeline.train", "--bins", str(s),
                           "--plan", str(plan), "--out", str(run), "--no-mlflow", "--json"],
                          capture_output=True, text=True, env=child_env(2), timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary["steps"] == 2 and np.isfinite(summary["final_val_loss"])
    assert cli.main(["eval", "--ckpt", str(run / "ckpt.pt"), "--bins", str(s), "--out",
                     str(tmp_path / "report"), "--max-new-tokens", "4", "--no-mlflow"]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["tokens"] == meta["val_tokens"] - 1
    assert report["val_sha256"] == layout.val_sha256(s)
    assert report["train_file_tokens"] == meta["train_tokens"]
    assert hashlib.sha256(b"".join((m / "val.bin").read_bytes() for m in (a, b))).hexdigest() \
        == report["val_sha256"]


def test_an_open_set_keeps_every_member_from_being_re_tokenized(counted, tmp_path):
    """Bins(set) holds each member's shared lock (the one `finegpt tokenize` needs exclusive)
    until close."""
    from finegpt_pipeline.locks import try_lock

    s = bins_set.write_set(counted, tmp_path / "sets")
    with Bins(s):
        assert all(try_lock(m / layout.LOCK_NAME, shared=False) is None for m in counted)
    for m in counted:
        lock = try_lock(m / layout.LOCK_NAME, shared=False)
        assert lock is not None
        lock.close()


def test_shards_sharing_documents_are_counted_and_the_user_warned(sample_shard, tmp_path, capsys):
    """Two shards holding the same documents (3 here, one of them in a's val and c's train):
    the set's manifest counts them, `bins-set` warns in one line, disjoint shards say nothing."""
    texts = pq.read_table(sample_shard, columns=["text"]).column("text").to_pylist()
    a = _text_bins(tmp_path / "a", texts[:15])  # documents 12, 13 train; 14 val (every 5th)
    c = _text_bins(tmp_path / "c", texts[12:30])  # documents 12, 13, 14 all train here
    d = _text_bins(tmp_path / "d", texts[30:45])
    home = tmp_path / "home"
    assert cli.main(["bins-set", str(a), str(c), "--home", str(home)]) == 0
    out, err = capsys.readouterr()
    assert bins_set.read_overlap(Path(out.strip())) == {"shared": 3, "val_in_other_train": 1}
    assert err == ("finegpt bins-set: warning: 3 documents appear in more than one shard, 1 of "
                   "them in one shard's val and another's train, so the val loss is optimistic; "
                   "deduplicate the shards to measure on unseen text\n")
    assert cli.main(["bins-set", str(a), str(d), "--home", str(home)]) == 0
    out, err = capsys.readouterr()
    assert bins_set.read_overlap(Path(out.strip())) == {"shared": 0, "val_in_other_train": 0}
    assert err == "" and bins_set.read_overlap(a) is None
