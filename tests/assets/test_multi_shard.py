"""Two shards through Dagster: each its own partition and data run; the plan, the training and
the eval read both (a bins set: windows drawn across both, val the union of their val splits);
a shard that fails a blocking check is left out of the next plan."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from assets.bins import tokenized_bins
from assets.data import raw_shard, token_stats
from assets.evaluation import eval_report
from assets.launchers import TrainingLauncher
from assets.planning import training_config
from assets.resources import ChampionPolicy, FineGPTHome
from assets.partitions import SHARDS, partition_key
from assets.training import trained_checkpoint
from finegpt_pipeline.data import bins_set
from tests._shards import materialize_shard
from tests.assets.test_lineage import TINY

ASSETS = [raw_shard, token_stats, tokenized_bins, training_config, trained_checkpoint, eval_report]
DOWNSTREAM = ["training_config", "trained_checkpoint", "eval_report"]


def _halves(sample: Path, folder: Path) -> tuple[Path, Path]:
    """The sample's first 100 documents and the last 210 as two shards (sizes 1:2), sharing 10
    (documents 90-99, as two crawls' shards can)."""
    table = pq.read_table(sample)
    first, second = folder / "000_00000.parquet", folder / "001_00000.parquet"
    pq.write_table(table.slice(0, 100), first)
    pq.write_table(table.slice(90), second)
    return first, second


def test_two_shards_are_two_partitions_and_one_training(finegpt_home, sample_shard, tmp_path):
    first, second = _halves(sample_shard, tmp_path)
    resources = {"champion_policy": ChampionPolicy(), "finegpt_home": FineGPTHome(root=str(finegpt_home)),
                 "training_launcher": TrainingLauncher()}
    data = ["raw_shard", "token_stats", "tokenized_bins"]
    with dg.instance_for_test() as instance:
        one = materialize_shard(ASSETS, first, instance=instance, resources=resources, selection=data)
        two = materialize_shard(ASSETS, second, instance=instance, resources=resources, selection=data)
        assert one.success and two.success
        # adding the second shard ran its partition only
        for key, count in ((first, 1), (second, 1)):
            records = instance.fetch_materializations(dg.AssetRecordsFilter(
                asset_key=dg.AssetKey("tokenized_bins"), asset_partitions=[partition_key(key)]),
                limit=10).records
            assert len(records) == count
        # each shard's partition is its short name, the file's stem
        assert sorted(instance.get_dynamic_partitions(SHARDS.name)) == [first.stem, second.stem]
        bins = [r.output_for_node("tokenized_bins") for r in (one, two)]

        result = dg.materialize(ASSETS, instance=instance, resources=resources, selection=DOWNSTREAM,
                                run_config={"ops": {
                                    "training_config": {"config": {"gpu": "cpu", "calibrate": False,
                                                                   "overrides": TINY}},
                                    "eval_report": {"config": {"device": "cpu", "max_new_tokens": 2}}}})
        assert result.success
        shared = {e.user_message for e in instance.all_logs(result.run_id)
                  if "more than one shard" in e.user_message}
        assert {m.split(",")[0].split(": ", 1)[1] for m in shared} == {
            "10 documents appear in more than one shard"}
        assert all("deduplicate the shards" in m for m in shared)

        # the second shard fails a blocking check (re-checked after, say, a corrupted copy):
        # the next plan reads the first shard alone
        instance.report_runless_asset_event(dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey("tokenized_bins"), check_name="tokenized_bins_roundtrip",
            passed=False, partition=partition_key(second)))
        alone = dg.materialize(ASSETS, instance=instance, resources=resources,
                               selection=["training_config"], run_config={"ops": {
                                   "training_config": {"config": {"gpu": "cpu", "calibrate": False,
                                                                  "overrides": TINY}}}})
        warnings = [e.user_message for e in instance.all_logs(alone.run_id) if "left out" in e.user_message]
    assert alone.output_for_node("training_config")["report"]["tokens_available"] == bins[0]["train_tokens"]
    assert warnings == [f"{second.stem}: left out, its blocking check(s) tokenized_bins_roundtrip failed; "
                        "fix the shard and re-materialize its partition"]

    plan = result.output_for_node("training_config")
    assert plan["report"]["tokens_available"] == sum(b["train_tokens"] for b in bins)
    meta = result.asset_materializations_for_node("training_config")[0].metadata
    assert meta["shards"].value == 2

    trained = result.output_for_node("trained_checkpoint")
    location = Path(trained["bins_dir"])
    assert bins_set.is_set(location) and location.parent == finegpt_home / "bins" / "sets"
    assert [str(p) for p in bins_set.members(location)] == sorted(str(Path(b["dir"]).resolve())
                                                                  for b in bins)
    assert plan["report"]["bins_dir"] == str(location)
    # the trainer read the set: its run's plan names it, and it trained its steps
    assert json.loads((Path(trained["run_dir"]) / "summary.json").read_text())["steps"] == 3

    report = result.output_for_node("eval_report")
    assert Path(report["bins_dir"]) == location.resolve()
    # every val token of both shards, scored as one stream (each document starts with EOT)
    assert report["tokens"] == sum(b["val_tokens"] for b in bins) - 1
