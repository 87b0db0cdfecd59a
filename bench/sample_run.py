"""The sample pipeline as `make run` runs it, phase by phase: where the minutes go, and what an
unchanged re-run costs. Goal (issue: speed where the user waits): the whole run costs at most
twice its training, and an unchanged re-run finishes in under 30 s.

    python bench/sample_run.py [--shard PARQUET] [--json out.json]

For each executor start method (`spawn`, Dagster's default, as the baseline; `forkserver-code`,
a forkserver that preloads the code location alone; `forkserver`, the jobs' default in
assets/jobs.py, which also preloads what the steps import), in fresh FINEGPT_HOME and
DAGSTER_HOME: register the shard's
partition, then run `python -m assets.launch -j pipeline_job` (as `make run`) twice (the
first run, then an unchanged re-run). Per run: wall time of the command, Dagster's own event
log per step (STEP_START to STEP_SUCCESS, checks included), the training step's share, and the
time not spent in any step (process start-up, Dagster, MLflow set-up). All start methods run
in the same invocation, so their ratios hold on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from tokenize_speed import machine  # noqa: E402

SAMPLE = REPO.parent / "shared" / "data" / "fineweb-cc-main-2013-20-head300.parquet"
BIN = Path(sys.executable).parent
TRAINING_STEP = "trained_checkpoint"


def run_config(start_method: str) -> str:
    from assets import jobs

    method = {"spawn": {"spawn": {}},  # Dagster's default
              # the code location alone, as the jobs preloaded before MLflow and matplotlib
              "forkserver-code": {"forkserver": {"preload_modules": ["assets.definitions"]}},
              "forkserver": jobs.FORKSERVER}[start_method]  # the jobs' default
    return json.dumps({"execution": {"config": {"multiprocess": {"start_method": method}}},
                       "loggers": {"console": {"config": {"log_level": "INFO"}}}})


def step_times(dagster_home: Path, run_id: str) -> dict[str, float]:
    """Seconds per step of the run, from Dagster's event log."""
    import dagster as dg
    from dagster import DagsterEventType

    os.environ["DAGSTER_HOME"] = str(dagster_home)
    started, took = {}, {}
    with dg.DagsterInstance.get() as instance:
        for record in instance.all_logs(run_id):
            event = record.dagster_event
            if event is None:
                continue
            if event.event_type == DagsterEventType.STEP_START:
                started[event.step_key] = record.timestamp
            elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
                took[event.step_key] = round(record.timestamp - started[event.step_key], 2)
    return took


def latest_run_id(dagster_home: Path) -> str:
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(dagster_home)
    with dg.DagsterInstance.get() as instance:
        return instance.get_runs(limit=1)[0].run_id


def one_method(start_method: str, shard: Path, work: Path) -> dict:
    home, dagster_home = work / start_method / "home", work / start_method / "dagster"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text((REPO / "docker" / "dagster.yaml").read_text())
    env = {**os.environ, "FINEGPT_HOME": str(home), "DAGSTER_HOME": str(dagster_home),
           "FINEGPT_SHARD": str(shard), "PYTHONPATH": str(REPO),
           "PYTHONWARNINGS": "ignore"}
    tags = subprocess.run([sys.executable, "-m", "assets.shards", "add", "--tags"], cwd=REPO,
                          env=env, capture_output=True, text=True, check=True).stdout.strip()
    config = work / start_method / "run.yaml"  # JSON is YAML
    config.write_text(run_config(start_method))
    runs = []
    for label in ("first", "unchanged"):
        t0 = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "assets.launch", "-j", "pipeline_job", "-c", str(config),
                               "--tags", tags], cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.monotonic() - t0
        if done.returncode != 0:
            raise SystemExit(f"{start_method} {label} run failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        steps = step_times(dagster_home, latest_run_id(dagster_home))
        training = steps.get(TRAINING_STEP, 0.0)
        runs.append({"run": label, "wall_s": round(wall, 1), "training_s": training,
                     "in_steps_s": round(sum(steps.values()), 1),
                     "outside_steps_s": round(wall - sum(steps.values()), 1),
                     "wall_over_training": round(wall / training, 2) if training else None,
                     "steps": steps})
        print(f"{start_method:10s} {label:9s} {wall:6.1f} s, training {training:5.1f} s, "
              f"{len(steps)} steps {sum(steps.values()):5.1f} s", flush=True)
    return {"start_method": start_method, "runs": runs}


def render(results: list[dict]) -> str:
    by = {r["start_method"]: {run["run"]: run for run in r["runs"]} for r in results}
    lines = ["| start method | run | wall s | training s | wall / training | in steps s | outside steps s |",
             "|---|---|---|---|---|---|---|"]
    for method, runs in by.items():
        for label, run in runs.items():
            lines.append(f"| {method} | {label} | {run['wall_s']} | {run['training_s']} | "
                         f"{run['wall_over_training']} | {run['in_steps_s']} | {run['outside_steps_s']} |")
    for base in ("spawn", "forkserver-code"):
        if {base, "forkserver"} <= by.keys():
            for label in ("first", "unchanged"):
                ratio = by[base][label]["wall_s"] / by["forkserver"][label]["wall_s"]
                lines.append(f"\n{label} run: forkserver is {ratio:.2f}x faster than {base}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shard", type=Path, default=SAMPLE)
    parser.add_argument("--methods", default="spawn,forkserver-code,forkserver",
                        help="comma-separated: spawn, forkserver-code, forkserver (the jobs')")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sample-run-") as tmp:
        results = [one_method(m, args.shard.resolve(), Path(tmp)) for m in args.methods.split(",")]
    out = {"machine": machine(), "shard": str(args.shard), "results": results}
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
