"""The six assets as the Dagster UI lists them: kinds, owner, description, code version, group."""

from __future__ import annotations

import dagster as dg

from assets.bins import tokenized_bins
from assets.data import raw_shard, token_stats
from assets.evaluation import eval_report
from assets.metadata_format import float_value, human_bytes, significant, size_entries
from assets.planning import training_config, training_config_fits_budget
from assets.training import trained_checkpoint

EXPECTED = {  # asset: (group, kinds)
    raw_shard: ("data", {"parquet"}),
    token_stats: ("data", {"duckdb"}),
    tokenized_bins: ("data", {"python", "numpy"}),
    training_config: ("training", {"python", "mlflow"}),
    trained_checkpoint: ("training", {"pytorch", "mlflow"}),
    eval_report: ("evaluation", {"pytorch", "mlflow"}),
}


def test_each_asset_has_kinds_owner_description_and_code_version():
    for asset, (group, kinds) in EXPECTED.items():
        [spec] = asset.specs
        name = spec.key.to_user_string()
        assert spec.group_name == group, name  # jobs select by group
        assert set(spec.kinds) == kinds, name
        assert spec.owners == ["team:finegpt"], name
        assert spec.description and len(spec.description) > 20, name
        # a code version Dagster compares (bump it when the asset's logic changes: the asset
        # and what depends on it then read as stale)
        assert isinstance(spec.code_version, str) and spec.code_version.isdigit(), name


def test_the_memory_budget_check_blocks():
    [spec] = training_config_fits_budget.check_specs
    assert spec.blocking


def test_sizes_read_in_human_units_with_the_exact_count_beside():
    assert human_bytes(999) == "999 B" and human_bytes(431_580) == "432 kB"
    assert human_bytes(2_150_000_000) == "2.15 GB"
    entries = size_entries("size", 2_150_123_456)
    assert entries["size"] == dg.MetadataValue.text("2.15 GB")
    assert entries["size_bytes"] == dg.MetadataValue.int(2_150_123_456)


def test_floats_are_rounded_to_significant_digits():
    assert significant(3.14159265358979) == 3.142 and significant(0.000123456) == 0.0001235
    assert significant(0.0) == 0.0 and significant(float("inf")) == float("inf")
    assert float_value(10.823456789, 4) == dg.MetadataValue.float(10.82)
