"""The run-config files under configs/: each loads into pipeline_job as Dagster validates a
`dagster job execute -c` file, and its planner settings give a trainable plan on the data it
names (CI also executes configs/demo-cpu.yaml end to end)."""

import os
from pathlib import Path

import dagster as dg
import pytest
import yaml

from assets.definitions import defs
from finegpt_pipeline.config import TrainConfig
from finegpt_pipeline.plan.planner import build_plan

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
ONE_SHARD_TOKENS = 750_000_000  # a full FineWeb shard, measured (README: facts we build on)


def load(name: str) -> dict:
    return yaml.safe_load((CONFIGS / name).read_text())


def test_every_config_file_is_covered():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == [
        "demo-cpu.yaml", "gpu-sample.yaml", "h100.yaml", "rtx4070-one-shard.yaml"]


@pytest.mark.parametrize("name", ["demo-cpu.yaml", "gpu-sample.yaml", "rtx4070-one-shard.yaml", "h100.yaml"])
def test_config_loads_into_pipeline_job(name):
    job = defs.resolve_job_def("pipeline_job")
    result = dg.validate_run_config(job, load(name))
    assert result["ops"]["training_config"]["config"]["gpu"] == load(name)["ops"][
        "training_config"]["config"]["gpu"]


def test_a_config_with_a_typo_is_refused():
    bad = load("demo-cpu.yaml")
    bad["ops"]["training_config"]["config"]["gpus"] = "cpu"
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.validate_run_config(defs.resolve_job_def("pipeline_job"), bad)


def test_demo_runs_on_the_shared_sample():
    """The shard is the run's partition, not config: `make demo` (CI) registers the sample's
    and runs demo-cpu.yaml on it, as the file's own comment says."""
    makefile = (REPO / "Makefile").read_text()
    assert "SAMPLE ?= ../shared/data/fineweb-cc-main-2013-20-head300.parquet" in makefile
    [demo] = [line for line in makefile.splitlines() if "-c configs/demo-cpu.yaml" in line]
    assert "FINEGPT_SHARD=$(SAMPLE)" in demo and '--tags "$$tags"' in demo
    assert "add --tags ../shared/data/fineweb-cc-main-2013-20-head300.parquet" in (
        REPO / "configs" / "demo-cpu.yaml").read_text()


@pytest.mark.parametrize("name", ["rtx4070-one-shard.yaml", "h100.yaml"])
def test_gpu_config_plans_a_trainable_run_on_one_shard(name):
    cfg = load(name)["ops"]["training_config"]["config"]
    # calibration measures the named GPU itself; this box has none, so plan from the catalog
    plan = build_plan(cfg["gpu"], ONE_SHARD_TOKENS, calibration=False, hours=cfg.get("hours"),
                      preset=cfg.get("preset"))
    rep = plan["report"]
    assert rep["peak_memory_bytes"] <= rep["memory_budget_bytes"]
    TrainConfig.from_plan(plan, source=name)
    assert rep["params"] > 10_000_000  # a real model for a real GPU, not the CPU demo's


@pytest.mark.parametrize("name", ["demo-cpu.yaml", "gpu-sample.yaml", "rtx4070-one-shard.yaml", "h100.yaml"])
def test_a_config_file_says_its_executor(name):
    """A run config given at launch replaces the job's defaults (assets/jobs.py), executor
    included: a file that named none would start every step as a cold process."""
    from assets.jobs import FORKSERVER

    execution = load(name)["execution"]["config"]
    assert "in_process" in execution or execution["multiprocess"]["start_method"] == FORKSERVER


def test_jobs_default_to_forked_steps():
    """The jobs' default run config forks each step from a server that imported the code
    location once; Dagster accepts it as the executor's config."""
    from assets.jobs import PRELOAD, RUN_DEFAULTS

    for name in ("data_job", "train_job", "pipeline_job"):
        result = dg.validate_run_config(defs.resolve_job_def(name), RUN_DEFAULTS)
        [executor] = result["execution"].values()  # under the executor's name once resolved
        start = executor["multiprocess"]["start_method"]
        assert start["forkserver"]["preload_modules"] == PRELOAD, name
    assert PRELOAD[0] == "assets.definitions"


def test_the_forkserver_preloads_start_no_thread():
    """Forking a process with threads can deadlock the child: the modules the jobs' forkserver
    imports (assets/jobs.py PRELOAD) must leave it single-threaded."""
    import subprocess
    import sys

    from assets.jobs import PRELOAD

    code = ("import importlib, threading, time, sys\n"
            "for name in sys.argv[1:]: importlib.import_module(name)\n"
            "time.sleep(0.5)\n"
            "print(threading.active_count())")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")}
    done = subprocess.run([sys.executable, "-c", code, *PRELOAD], capture_output=True, text=True,
                          timeout=120, env={**env, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "1"
