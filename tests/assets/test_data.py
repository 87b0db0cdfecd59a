"""raw_shard and token_stats as Dagster assets, materialized in temp dirs."""

from __future__ import annotations

import hashlib

import dagster as dg
import duckdb
import mlflow
import pyarrow as pa
import pyarrow.parquet as pq

from assets.data import (data_asset_checks, data_assets, raw_shard, token_stats,
                         token_stats_recount_agrees, token_stats_text_not_empty)
from assets.metadata_format import INLINE_MARKDOWN_CHARS, significant
from assets.definitions import defs
from assets.io_manager import AssetValues
from assets.resources import FineGPTHome
from tests._shards import materialize_shard
from tests.engine.data.test_shard import INFO_KEYS, make_bad_inputs


@dg.asset(deps=[token_stats])
def after_token_stats() -> int:
    """Stands for the next stage: must not run when a blocking check on token_stats fails."""
    return 1


def materialize(home, shard, run_config=None, extra=()):
    return materialize_shard(
        [*data_assets, *data_asset_checks, *extra], shard,
        resources={"finegpt_home": FineGPTHome(root=str(home)), "io_manager": AssetValues()},
        run_config=run_config, raise_on_error=False)


def test_sample_materializes_with_metadata_and_checks(finegpt_home, sample_shard):
    result = materialize(finegpt_home, sample_shard)
    assert result.success
    info = result.output_for_node("raw_shard")
    sha = hashlib.sha256(sample_shard.read_bytes()).hexdigest()
    assert set(info) == INFO_KEYS and info["sha256"] == sha and info["rows"] == 300
    shard_event = result.asset_materializations_for_node("raw_shard")[0]
    # the code location's IO manager adds no `path` row (to its pickle) beside the shard's own
    assert "path" not in shard_event.metadata and "shard_path" in shard_event.metadata
    assert "path" not in result.asset_materializations_for_node("token_stats")[0].metadata
    assert isinstance(defs.resources["io_manager"], AssetValues)
    assert shard_event.tags["dagster/data_version"] == sha  # content hash as data version
    assert shard_event.metadata["rows"].value == 300
    assert shard_event.metadata["shard_path"].value == str(sample_shard.resolve())

    summary = result.output_for_node("token_stats")
    assert (summary["docs_count_equal"], summary["tokens_tiktoken"], summary["tokens_listed"]) == \
        (291, 215_790, 215_818)
    meta = result.asset_materializations_for_node("token_stats")[0].metadata
    assert meta["documents"].value == 300 and meta["docs_count_equal"].value == 291
    # shown inline: the UI folds Markdown of 1000+ characters (any data-URI image) behind
    # "[Show Markdown]", so the histogram is a short table with text bars
    histogram = meta["token_histogram"].value
    assert histogram.startswith("| tokens | documents |") and "█" in histogram
    rows = [row.split("|")[1].strip() for row in histogram.splitlines()[2:]]
    assert rows == ["30-99", "100-299", "300-999", "1,000-2,999", "3,000-9,999"]  # p1 73, max 9,709
    assert len(histogram) < INLINE_MARKDOWN_CHARS
    assert sum(int(row.split("|")[2]) for row in histogram.splitlines()[2:]) == 300
    assert (finegpt_home / meta["token_histogram_png"].value).read_bytes()[:4] == b"\x89PNG"
    # floats rounded, sizes in human units with the exact count beside
    assert meta["bytes_per_token"] == dg.MetadataValue.float(significant(summary["bytes_per_token"], 4))
    assert len(str(meta["bytes_per_token"].value)) <= 6
    assert meta["text_size"].value == "961 kB" and meta["text_size_bytes"].value == summary["utf8_bytes"]
    assert all(len(str(v)) <= 5 for v in meta["language_score"].value.values())
    assert shard_event.metadata["size"].value.endswith(" kB")
    assert shard_event.metadata["size_bytes"].value == sample_shard.stat().st_size
    assert "| p50 |" in meta["token_quantiles"].value and "CC-MAIN-2013-20" in meta["dumps"].value
    # the sample's url column is null: the empty table says why
    assert meta["top_domains"].value == ("_no `domain` values: the shard's `url` column is null in "
                                         "every row or absent_")
    assert meta["warehouse"].value == "warehouse.duckdb"  # relative to FINEGPT_HOME
    with duckdb.connect(str(finegpt_home / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM documents WHERE shard = ?", [sha]).fetchone()[0] == 300
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"token_stats_text_not_empty": True, "token_stats_recount_agrees": True}


def test_head_config_materializes_a_subset(finegpt_home, sample_shard):
    result = materialize(finegpt_home, sample_shard,
                            run_config={"ops": {"raw_shard": {"config": {"max_docs": 40}}}})
    assert result.success
    info = result.output_for_node("raw_shard")
    assert info["rows"] == 40 and info["path"].startswith(str(finegpt_home / "shards"))
    assert result.output_for_node("token_stats")["documents"] == 40


def test_bad_shard_fails_clearly_and_nothing_downstream_runs(finegpt_home, sample_shard, tmp_path):
    for case, (path, problem) in make_bad_inputs(tmp_path, sample_shard).items():
        result = materialize(finegpt_home, path)
        assert not result.success, case
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert failure.step_key == "raw_shard"
        message = str(failure.event_specific_data.error)
        assert str(path) in message and problem in message, case
        assert result.asset_materializations_for_node("token_stats") == []
        assert not (finegpt_home / "warehouse.duckdb").exists() and not (finegpt_home / "shards").exists()
        assert not (finegpt_home / "reports").exists(), case  # no histogram either
        # in MLflow: raw_shard's run failed, and so did the Dagster run's parent run
        runs = mlflow.search_runs(experiment_names=["finegpt"], output_format="list",
                                  filter_string=f"tags.`dagster.run_id` = '{result.run_id}'")
        status = {r.data.tags.get("dagster.asset_key", "parent"): r.info.status for r in runs}
        assert status == {"raw_shard": "FAILED", "parent": "FAILED"}, case


def test_blocking_empty_text_check_stops_downstream(finegpt_home, tmp_path):
    path = tmp_path / "mostly_empty.parquet"
    pq.write_table(pa.table({"text": pa.array(["", None, "", "a real document"], pa.string())}), path)
    result = materialize(finegpt_home, path, extra=[after_token_stats])
    assert not result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["token_stats_text_not_empty"] is False
    assert checks["token_stats_recount_agrees"] is True  # no token_count column: nothing to compare
    assert result.asset_materializations_for_node("token_stats")  # stats still recorded for inspection
    assert result.asset_materializations_for_node("after_token_stats") == []


def test_definitions_load():
    defs = dg.Definitions(assets=[raw_shard, token_stats],
                          asset_checks=[token_stats_text_not_empty, token_stats_recount_agrees],
                          resources={"finegpt_home": FineGPTHome()})
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {"raw_shard", "token_stats"}
    assert graph.get(dg.AssetKey("token_stats")).parent_keys == {dg.AssetKey("raw_shard")}
