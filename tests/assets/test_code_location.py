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


def test_launch_files_the_run_with_the_workspace_origin_and_prints_its_summary(
        tmp_path, finegpt_home, sample_shard):
    """`make run`'s way (python -m assets.launch): the run records the origin of workspace.yaml's
    location, as a launch from the UI does (the Overview timeline draws runs by it), runs the
    selected step in the job's executor, and ends with the summary block."""
    import dagster as dg

    from assets.definitions import defs
    from assets.partitions import register

    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text((REPO / "docker" / "dagster.yaml").read_text())
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        [key] = register(instance, [str(sample_shard)])
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"ops": {"raw_shard": {"config": {"max_docs": 20}}}}))
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-m", "assets.launch", "-j", "data_job",
                           "-o", "raw_shard", "-c", str(config),
                           "--tags", json.dumps({"dagster/partition": key})],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        (run,) = instance.get_runs()
    assert f"== run {run.run_id[:8]} (data_job): SUCCESS" in done.stdout
    assert "made   raw_shard" in done.stdout and done.stdout.rstrip().endswith("result   ok")
    origin = run.remote_job_origin
    assert origin is not None and origin.job_name == "data_job"
    assert origin.location_name == workspace_location()
    assert origin.repository_origin.repository_name == defs.get_repository_def().name
    assert run.tags["dagster/partition"] == key and run.op_selection == ["raw_shard"]


def test_launch_names_the_jobs_when_one_is_unknown(capsys):
    from assets import launch

    with pytest.raises(SystemExit, match="no job 'pipline_job' in assets.definitions .*"
                                         "pipeline_job"):
        launch.main(["-j", "pipline_job"])
    with pytest.raises(SystemExit, match="--tags .*not JSON"):
        launch.main(["-j", "data_job", "--tags", "partition=x"])


def test_every_jobs_snapshot_is_the_same_in_every_process():
    """The UI takes a run whose job snapshot differs from the one it loaded for a run of another
    version of the job (a warning at Re-execute). String hashing differs per process, so nothing
    in a snapshot may follow a set's order (assets/bins.py's blocking checks once did)."""
    code = ("from assets.definitions import defs\n"
            "for job in sorted(defs.get_repository_def().get_all_jobs(), key=lambda j: j.name):\n"
            "    print(job.name, job.get_job_snapshot_id())")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONWARNINGS": "ignore"})
             for seed in ("1", "2")]  # two seeds that ordered those checks differently
    outputs = {proc.communicate(timeout=120)[0] for proc in procs}
    assert len(outputs) == 1 and "pipeline_job" in outputs.pop()
