"""The `shards` partitions: keys, registration (CLI included) and the two sensors over them."""

from __future__ import annotations

import json
import re
import os
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest

from assets.data import raw_shard
from assets.resources import FineGPTHome
from assets.sensors import SETTLE_S, incoming_shards_sensor, shard_changed_sensor
from assets.partitions import SHARDS, partition_key, register, source_of
from assets.shard_inputs import by_shard
from assets.shards import main
from finegpt_pipeline.data.shard import ShardError
from tests._shards import materialize_shard

REPO = Path(__file__).resolve().parents[2]


def _settled(path: Path) -> Path:
    """Back-date a file past the sensor's settle time (a copy finished a while ago)."""
    past = time.time() - SETTLE_S - 5
    os.utime(path, (past, past))
    return path


def test_partition_keys_are_short_names_that_give_the_source_back(tmp_path):
    hub = "hf://HuggingFaceFW/fineweb/data/CC-MAIN-2013-20/000_00000.parquet"
    key = partition_key(hub)
    assert key == "CC-MAIN-2013-20-000_00000" and source_of(key) == hub
    assert partition_key(hub + "/") == key  # the same source, the same key, registered once
    with pytest.raises(ShardError, match=rf"partition {hub}: a hub shard needs a short key .*"
                                         rf"`python -m assets.shards add {hub}`"):
        source_of(hub)  # typed into the UI's "Add partition"
    local = tmp_path / "a" / ".." / "shard.parquet"
    assert partition_key(local) == "shard" and source_of("shard") == str(tmp_path.resolve() / "shard.parquet")
    # another file of the same name gets the name and a short hash of its path
    other = tmp_path / "b" / "shard.parquet"
    assert re.fullmatch(r"shard-[0-9a-f]{6}", partition_key(other)) and source_of(partition_key(other)) == str(other)
    # keys of older versions, and a path typed into "Add partition", still name their source
    assert source_of("hf:o/n/x.parquet") == "hf://o/n/x.parquet"
    assert source_of(str(other)) == str(other)
    with pytest.raises(ShardError, match=r"partition nothing-here: no shard is registered under "
                                         r"this name .*`python -m assets.shards add PATH`"):
        source_of("nothing-here")


def test_register_adds_good_shards_once_and_nothing_when_one_is_bad(sample_shard, tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with dg.instance_for_test() as instance:
        with pytest.raises(ShardError, match="bad.parquet: not a readable parquet file"):
            register(instance, [str(sample_shard), str(bad)])
        assert instance.get_dynamic_partitions(SHARDS.name) == []
        key = "fineweb-cc-main-2013-20-head300"
        assert register(instance, [str(sample_shard)]) == [key]
        assert register(instance, [str(sample_shard)]) == [key]
        assert instance.get_dynamic_partitions(SHARDS.name) == [key]


def test_cli_registers_and_prints_the_run_tags(sample_shard, tmp_path, monkeypatch, capsys):
    """`python -m assets.shards` on $DAGSTER_HOME's instance (main() in this process: a
    subprocess per call costs seconds of imports; `make run` and CI run it as a command)."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    (tmp_path / "dh").mkdir()
    shutil.copy(REPO / "docker" / "dagster.yaml", tmp_path / "dh" / "dagster.yaml")
    # two sources in one call: the bad one keeps the good one out too
    assert main(["add", str(sample_shard), str(tmp_path / "missing.parquet")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == f"error: {tmp_path / 'missing.parquet'}: shard file not found"
    assert main(["add", "--tags", str(sample_shard)]) == 0
    assert json.loads(capsys.readouterr().out) == {"dagster/partition": "fineweb-cc-main-2013-20-head300"}
    # no source: FINEGPT_SHARD's, the hub default; offline it is one line naming the fix, and
    # nothing is registered (plain `make run` offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("FINEGPT_SHARD", raising=False)
    assert main(["add"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("error: hf://HuggingFaceFW/fineweb/data/CC-MAIN-2013-20/000_00000.parquet: "
                          "not in the local Hugging Face cache")
    assert "FINEGPT_SHARD=../shared/data/fineweb-cc-main-2013-20-head300.parquet" in err
    assert main(["list"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"fineweb-cc-main-2013-20-head300\t{sample_shard.resolve()}"]


def test_incoming_sensor_registers_new_files_reports_bad_ones_once(sample_shard, tmp_path):
    incoming = tmp_path / "incoming"
    resources = {"finegpt_home": FineGPTHome(root=str(tmp_path / "h"), incoming=str(incoming))}
    with dg.instance_for_test() as instance:
        missing = incoming_shards_sensor(dg.build_sensor_context(instance=instance,
                                                                 resources=resources))
        assert "no such directory" in missing.skip_message
        incoming.mkdir()
        _settled(Path(shutil.copy(sample_shard, incoming / "000_00000.parquet")))
        bad = incoming / "001_00000.parquet"
        bad.write_bytes(b"PAR1 half a copy")
        _settled(bad)
        fresh = incoming / "002_00000.parquet"  # still being copied in
        shutil.copy(sample_shard, fresh)
        (incoming / "notes.txt").write_text("not a shard")

        ctx = dg.build_sensor_context(instance=instance, resources=resources)
        result = incoming_shards_sensor(ctx)
        assert isinstance(result, dg.SensorResult)
        assert [(r.partition_key, r.run_key) for r in result.run_requests] == [
            ("000_00000", "incoming:000_00000")]
        [add] = result.dynamic_partitions_requests
        assert add.partitions_def_name == "shards" and list(add.partition_keys) == ["000_00000"]
        assert json.loads(ctx.cursor) == {str(bad): f"{bad.stat().st_size}-{bad.stat().st_mtime_ns}"}
        instance.add_dynamic_partitions(SHARDS.name, list(add.partition_keys))  # as the daemon does

        # next tick: the good file is registered, the bad one was reported already, the fresh
        # one still settles: nothing new, and the bad file is not reported again
        again = incoming_shards_sensor(dg.build_sensor_context(
            instance=instance, resources=resources, cursor=ctx.cursor))
        assert isinstance(again, dg.SkipReason)
        assert "bad" not in again.skip_message and "002_00000.parquet to settle" in again.skip_message
        assert instance.get_dynamic_partitions(SHARDS.name) == ["000_00000"]

        # the bad file replaced by a whole shard, the fresh one settled: both registered
        shutil.copy(sample_shard, bad)
        _settled(bad), _settled(fresh)
        last = incoming_shards_sensor(dg.build_sensor_context(
            instance=instance, resources=resources, cursor=ctx.cursor))
        assert sorted(r.partition_key for r in last.run_requests) == ["001_00000", "002_00000"]


def test_incoming_sensor_switched_on_requests_nothing_for_registered_shards(sample_shard, tmp_path):
    incoming = tmp_path / "h" / "incoming"  # the default: FINEGPT_HOME/incoming
    incoming.mkdir(parents=True)
    good = _settled(Path(shutil.copy(sample_shard, incoming / "000_00000.parquet")))
    resources = {"finegpt_home": FineGPTHome(root=str(tmp_path / "h"))}
    with dg.instance_for_test() as instance:
        register(instance, [str(good)])
        result = incoming_shards_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert isinstance(result, dg.SkipReason) and "no new shard" in result.skip_message


def test_shard_changed_sensor_requests_only_a_changed_materialized_shard(sample_shard, tmp_path):
    """Switched on, its first tick finds every shard as raw_shard read it and requests nothing;
    a file changed afterwards gets a pipeline run for its partition."""
    local = tmp_path / "shard.parquet"
    shutil.copyfile(sample_shard, local)
    other = tmp_path / "registered-not-run.parquet"
    shutil.copyfile(sample_shard, other)
    resources = {"finegpt_home": FineGPTHome(root=str(tmp_path / "h"))}
    with dg.instance_for_test() as instance:
        assert materialize_shard([raw_shard], local, instance=instance, resources=resources).success
        register(instance, [str(other)])
        instance.add_dynamic_partitions(SHARDS.name, ["hf:o/n/x.parquet"])  # a hub shard's key
        ctx = dg.build_sensor_context(instance=instance)
        first = shard_changed_sensor(ctx)
        assert isinstance(first, dg.SkipReason)
        with open(local, "ab") as fh:  # a changed file (size and mtime move)
            fh.write(b"\0")
        [request] = shard_changed_sensor(dg.build_sensor_context(instance=instance, cursor=ctx.cursor))
        assert request.partition_key == "shard" and request.run_key.startswith("shard:")


def test_by_shard_reads_every_shape_dagster_hands_over():
    one = {"dir": "/bins/a", "train_tokens": 5}
    assert by_shard(one) == {"": one}
    assert list(by_shard({"/b.parquet": {"dir": "/bins/b"}, "/a.parquet": one})) == ["/a.parquet", "/b.parquet"]
    for empty in (None, {}):
        with pytest.raises(ValueError, match="no shard has been tokenized yet"):
            by_shard(empty)
    with pytest.raises(ValueError, match=r"tokenized_bins\[/a.parquet\]: expected a dict with 'dir'"):
        by_shard({"/a.parquet": {"train_tokens": 5}})
