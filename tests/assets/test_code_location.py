"""One code location whichever way a run starts: `dagster job execute -m assets.definitions`
(make run, CI) and the UI (`dagster dev`, workspace.yaml or pyproject) file runs under the same
location, so CLI runs show in the UI's job pages (which list runs by the tag
`.dagster/repository` = repository@location)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

from assets import jobs

REPO = Path(__file__).resolve().parents[2]
DAGSTER = Path(sys.executable).with_name("dagster")


def workspace_location() -> str:
    (entry,) = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"]
    return entry["python_module"]["location_name"]


def test_workspace_pyproject_and_jobs_name_one_location():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dagster"]
    assert workspace_location() == pyproject["code_location_name"] == jobs.LOCATION
    (entry,) = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"]
    assert entry["python_module"]["module_name"] == pyproject["module_name"] == "assets.definitions"


def test_cli_run_is_filed_under_the_workspace_location(tmp_path, finegpt_home, sample_shard):
    from assets.definitions import defs

    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text((REPO / "docker" / "dagster.yaml").read_text())
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "FINEGPT_SHARD": str(sample_shard),
           "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    import dagster as dg

    from assets.partitions import register

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        [key] = register(instance, [str(sample_shard)])  # as `python -m assets.shards add` does
    done = subprocess.run([str(DAGSTER), "job", "execute", "-m", "assets.definitions",
                           "-j", "data_job", "-o", "raw_shard", "--tags",
                           json.dumps({"dagster/partition": key})],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        (run,) = instance.get_runs()
    # What the UI computes for the location it loads from workspace.yaml: repository@location
    label = f"{defs.get_repository_def().name}@{workspace_location()}"
    assert run.tags.get(".dagster/repository") == label
    assert run.tags.get("dagster/code_location") == workspace_location()


def test_dg_launch_runs_a_partition_of_the_dg_project(tmp_path, finegpt_home, sample_shard):
    """The README's `dg launch ... --partition KEY` works on this `dg` project ([tool.dg] in
    pyproject): raw_shard of the sample's partition, its first 20 documents, in a fresh
    DAGSTER_HOME."""
    import dagster as dg

    from assets.partitions import register

    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text((REPO / "docker" / "dagster.yaml").read_text())
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        [key] = register(instance, [str(sample_shard)])
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([str(DAGSTER.with_name("dg")), "launch", "--assets", "raw_shard",
                           "--partition", key, "--config-json",
                           json.dumps({"ops": {"raw_shard": {"config": {"max_docs": 20}}}})],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS and run.tags["dagster/partition"] == key
        [event] = instance.fetch_materializations(dg.AssetKey("raw_shard"), limit=1).records
    assert event.asset_materialization.metadata["rows"].value == 20
