"""Every private Dagster API the code location uses (assets/dagster_internals.py), exercised on
a real instance: a Dagster upgrade that moves one fails here, loudly, not mid-run."""

import dagster as dg
import pytest

from assets import dagster_internals
from assets.jobs import LOCATION, pipeline_job


def test_failed_checks_reads_the_latest_result_per_partition():
    with dg.instance_for_test() as instance:
        key = dg.AssetCheckKey(dg.AssetKey("tokenized_bins"), "tokenized_bins_roundtrip")
        for partition, passed in (("a", True), ("b", False)):
            instance.report_runless_asset_event(dg.AssetCheckEvaluation(
                asset_key=key.asset_key, check_name=key.name, passed=passed,
                partition=partition))
        assert dagster_internals.failed_checks(instance, [key], "a") == []
        assert dagster_internals.failed_checks(instance, [key], "b") == ["tokenized_bins_roundtrip"]
        assert dagster_internals.failed_checks(instance, [key], "never-run") == []


def test_logical_data_version_is_the_one_dagster_records():
    seen = {}

    @dg.asset(code_version="7")
    def upstream() -> int:
        return 1

    @dg.asset(code_version="3")
    def downstream(context: dg.AssetExecutionContext, upstream: int) -> int:
        seen["computed"] = dagster_internals.logical_data_version(context)
        return upstream

    with dg.instance_for_test() as instance:
        assert dg.materialize([upstream, downstream], instance=instance).success
        record = instance.get_latest_materialization_event(dg.AssetKey("downstream"))
        recorded = record.asset_materialization.tags[dagster_internals.DATA_VERSION_TAG]
    assert seen["computed"] == recorded


def test_a_given_data_version_is_recorded_under_the_tag_the_sensor_reads():
    @dg.asset
    def shard() -> dg.Output[int]:
        return dg.Output(1, data_version=dg.DataVersion("ab" * 32))

    with dg.instance_for_test() as instance:
        assert dg.materialize([shard], instance=instance).success
        record = instance.get_latest_materialization_event(dg.AssetKey("shard"))
    assert record.asset_materialization.tags[dagster_internals.DATA_VERSION_TAG] == "ab" * 32


def test_every_job_carries_the_repository_tag():
    tags = dagster_internals.repository_tags(LOCATION)
    assert tags == {".dagster/repository": f"__repository__@{LOCATION}",
                    "dagster/code_location": LOCATION}
    assert pipeline_job.tags[dagster_internals.REPOSITORY_TAG] == f"__repository__@{LOCATION}"


def test_the_pickling_io_manager_is_the_upath_one_that_writes_a_path_row():
    """assets/io_manager.py drops the `path` row UPathIOManager.handle_output adds: if Dagster
    moves or renames the class, or stops adding the row, this says so first."""
    import inspect

    cls = dagster_internals.pickled_io_manager()
    assert issubclass(cls, dg.UPathIOManager)
    assert '"path"' in inspect.getsource(dg.UPathIOManager.handle_output)


def test_the_workspace_origin_is_the_one_the_webserver_loads():
    """assets/launch.py files runs under it (executing them is covered by
    tests/assets/test_code_location.py)."""
    from pathlib import Path

    workspace = str(Path(__file__).resolve().parents[2] / "workspace.yaml")
    origin = dagster_internals.workspace_job_origin(workspace, LOCATION, "__repository__",
                                                    "pipeline_job")
    assert (origin.location_name, origin.job_name) == (LOCATION, "pipeline_job")
    assert origin.repository_origin.repository_name == "__repository__"
    with pytest.raises(ValueError, match="no code location named 'elsewhere'"):
        dagster_internals.workspace_job_origin(workspace, "elsewhere", "__repository__", "x")
    job = dagster_internals.module_job("assets.definitions", "defs", "pipeline_job")
    assert job.get_definition().name == "pipeline_job"
