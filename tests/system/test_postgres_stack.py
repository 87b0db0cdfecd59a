"""The deployment stack's parts, for real, without containers (no docker daemon runs here):
Debian's PostgreSQL on a loopback port holds Dagster's run, event and schedule storage (the
deployment's docker/deploy/dagster.yaml: Postgres, the queued run coordinator, run monitoring
and crash-only run retries) and MLflow's backend (an `mlflow server --serve-artifacts`); the
daemon and the user-code gRPC server run as processes; `pipeline_job` on the sample goes in
through Dagster's GraphQL client.

Mid-training, after the trainer's first checkpoint, the test kills the run's worker process
outright (SIGKILL, as the OOM killer or a lost container would). The run fails (the code server
sees its worker gone), its trainer stops by itself (launcher_watch), and the daemon retries the
run; the retry's trainer resumes from the last checkpoint into the same MLflow run and ends at
the plan's final step. The test waits for the retry's success, then finds both runs in
Dagster's database and one finished training, each step logged once, in MLflow's.

A second run hangs instead: its trainer is stopped (SIGSTOP) after the first checkpoint and
the run's `dagster/max_runtime` made to run out. The daemon's run monitoring stops the run,
`trained_checkpoint` ends the hung trainer's process group (assets/launchers.py), and the
daemon's retry resumes from the checkpoint as above.

Run by `make test-stack` (part of `make test`); minutes of work, so marked `stack`."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from unittest import mock

import pytest
import yaml

from tests._trainers import parent_pid, trainer_pids
from finegpt_pipeline.train import launcher_watch

from assets.training import MAX_RUNTIME_TAG

pytestmark = pytest.mark.stack
ROOT = Path(__file__).resolve().parents[2]
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None) \
    if Path("/usr/lib/postgresql").is_dir() else None
STEPS = 8
RUN_CONFIG = {  # the demo on the sample, shortened: the stack is under test, not the model
    "execution": {"config": {"in_process": {}}},  # one process: the step subprocesses cost minutes
    # checkpoints every 2 steps of 8: killed after the first, resumed by the run's retry
    "ops": {"trained_checkpoint": {"config": {"max_iters": STEPS,
                                              "overrides": ["checkpoint_interval=2"]}},
            "eval_report": {"config": {"max_new_tokens": 8}}},
    "loggers": {"console": {"config": {"log_level": "INFO"}}},
}
TIMEOUT_S = 900


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, name: str, timeout: float = 180,
                  log: Path | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{name} exited with {proc.returncode} before listening\n{tail}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"{name} did not listen on {port} within {timeout:.0f} s")


def as_postgres(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as Debian's `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture
def postgres(tmp_path):
    if PG_BIN is None or not (PG_BIN / "initdb").exists():
        reason = "PostgreSQL server binaries missing (`.ci/run` installs Debian's postgresql)"
        if os.environ.get("FINEGPT_STACK_REQUIRED") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    # not under pytest's tmp_path: its parents are private to root, and postgres runs as
    # Debian's `postgres` user when we are root
    data = Path(tempfile.mkdtemp(prefix="finegpt-pg-"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    init = subprocess.run(as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "finegpt",
                                       "--auth=trust", "-E", "UTF8"]), capture_output=True, text=True)
    assert init.returncode == 0, f"initdb: {init.stderr[-2000:]}"
    log = tmp_path / "pg.log"
    server = subprocess.Popen(as_postgres([str(PG_BIN / "postgres"), "-D", str(data), "-p",
                                           str(port), "-c", "listen_addresses=127.0.0.1",
                                           "-k", str(data)]),
                              stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, server, "postgres", 60, log=log)
        for db in ("dagster", "mlflow"):
            for _ in range(20):  # accepting TCP a moment before it accepts logins
                if subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "finegpt",
                                   "-d", "postgres", "-c", f"CREATE DATABASE {db}"],
                                  capture_output=True).returncode == 0:
                    break
                time.sleep(0.5)
        yield port
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(data, ignore_errors=True)


def deployment_instance(home: Path) -> None:
    """docker/deploy/dagster.yaml as the compose stack loads it, less the Docker run launcher
    (runs start as processes of the code server here, not as containers), polled sooner."""
    config = yaml.safe_load((ROOT / "docker" / "deploy" / "dagster.yaml").read_text())
    config.pop("run_launcher")
    # the monitoring daemon frees the killed run's pool slot at its next poll: sooner here
    config["run_monitoring"]["poll_interval_seconds"] = 5
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


def psql(port: int, db: str, sql: str) -> str:
    return subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "finegpt", "-d", db,
                           "-tAc", sql], check=True, capture_output=True, text=True).stdout.strip()


@dataclass
class Stack:
    pg: int
    home: Path  # FINEGPT_HOME
    client: object  # DagsterGraphQLClient
    key: str  # the sample's partition key
    logs: list[Path]
    env: dict  # the stack's environment (DAGSTER_HOME, its Postgres)

    def submit(self) -> str:
        return self.client.submit_job_execution("pipeline_job", run_config=RUN_CONFIG,
                                                repository_location_name="finegpt",
                                                tags={"dagster/partition": self.key})

    def log_tails(self) -> str:
        return "\n".join(log.read_text()[-3000:] for log in self.logs)


@contextlib.contextmanager
def deployment_stack(pg: int, tmp_path: Path, sample_shard: Path) -> Iterator[Stack]:
    """MLflow on Postgres, the user-code server, the webserver and the daemon, as processes;
    the sample's partition registered in the deployment's instance."""
    from dagster_graphql import DagsterGraphQLClient

    home = tmp_path / "dagster_home"
    deployment_instance(home)
    ports = {name: free_port() for name in ("code", "web", "mlflow")}
    env = {**os.environ,
           "DAGSTER_HOME": str(home), "FINEGPT_HOME": str(tmp_path / "finegpt"),
           "FINEGPT_SHARD": str(sample_shard),
           "DAGSTER_POSTGRES_HOST": "127.0.0.1", "DAGSTER_POSTGRES_PORT": str(pg),
           "DAGSTER_POSTGRES_USER": "finegpt", "DAGSTER_POSTGRES_PASSWORD": "",
           "DAGSTER_POSTGRES_DB": "dagster",
           "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{ports['mlflow']}",
           "FINEGPT_MLFLOW_UI": f"http://127.0.0.1:{ports['mlflow']}",
           "FINEGPT_DAGSTER_UI": f"http://127.0.0.1:{ports['web']}",
           "PYTHONPATH": str(ROOT)}
    (tmp_path / "workspace.yaml").write_text(yaml.safe_dump({"load_from": [{"grpc_server": {
        "host": "127.0.0.1", "port": ports["code"], "location_name": "finegpt"}}]}))
    bin_dir = Path(sys.executable).parent
    mlflow_db = f"postgresql+psycopg2://finegpt@127.0.0.1:{pg}/mlflow"
    commands = {
        "mlflow": [str(bin_dir / "mlflow"), "server", "--host", "127.0.0.1", "--port",
                   str(ports["mlflow"]), "--backend-store-uri", mlflow_db, "--serve-artifacts",
                   "--artifacts-destination", str(tmp_path / "mlartifacts"), "--workers", "1"],
        "code": [str(bin_dir / "dagster"), "code-server", "start", "-h", "127.0.0.1", "-p",
                 str(ports["code"]), "-m", "assets.definitions", "--location-name", "finegpt"],
        "web": [str(bin_dir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(ports["web"]),
                "-w", str(tmp_path / "workspace.yaml")],
        "daemon": [str(bin_dir / "dagster-daemon"), "run", "-w", str(tmp_path / "workspace.yaml")],
    }
    procs = {}
    try:
        for name in ("mlflow", "code", "web", "daemon"):
            procs[name] = subprocess.Popen(commands[name], cwd=ROOT, env=env,
                                           stdout=open(tmp_path / f"{name}.log", "w"),
                                           stderr=subprocess.STDOUT)
            if name in ports:
                wait_for_port(ports[name], procs[name], name, log=tmp_path / f"{name}.log")
        # the shard's partition, in the deployment's Postgres instance
        key = subprocess.run([sys.executable, "-m", "assets.shards", "add", str(sample_shard)],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                             check=True).stdout.strip()
        client = DagsterGraphQLClient("127.0.0.1", port_number=ports["web"], timeout=60)
        yield Stack(pg, tmp_path / "finegpt", client, key,
                    [tmp_path / f"{n}.log" for n in procs], env)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_pipeline_job_through_the_deployment_stack(postgres, tmp_path, sample_shard):
    pg = postgres
    with deployment_stack(pg, tmp_path, sample_shard) as stack:
        run_id = stack.submit()
        deadline = time.time() + TIMEOUT_S
        trainer = kill_worker_after_first_checkpoint(stack.home, deadline)
        retry_id = wait_for_retry(pg, run_id, deadline)
        status = wait_for_end(stack.client, retry_id, deadline)
        assert status == "SUCCESS", f"retry {retry_id} of {run_id}: {status}\n{stack.log_tails()}"
        assert launcher_watch.identity(trainer) is None  # the orphan stopped, as it should
    # both Dagster runs went through the queue into Postgres: the killed one failed, the
    # daemon's retry (from the failure: the data steps are not run again) succeeded
    assert psql(pg, "dagster", f"SELECT status FROM runs WHERE run_id = '{run_id}'") == "FAILURE"
    assert_resumed_once(pg, tmp_path, retry_id)


def test_a_hung_training_is_stopped_by_its_max_runtime_and_the_retry_resumes(
        postgres, tmp_path, sample_shard):
    """A training that hangs (its trainer stopped by SIGSTOP after the first checkpoint: alive,
    silent) is stopped by the run's `dagster/max_runtime` (the daemon's run monitoring), its
    trainer does not outlive the run, and the daemon's retry resumes it from the checkpoint."""
    import dagster as dg

    pg = postgres
    with deployment_stack(pg, tmp_path, sample_shard) as stack:
        run_id = stack.submit()
        deadline = time.time() + TIMEOUT_S
        trainer = signal_trainer_after_first_checkpoint(stack.home, deadline, signal.SIGSTOP)
        with mock.patch.dict(os.environ, stack.env), dg.DagsterInstance.get() as instance:
            # the limit trained_checkpoint set (the plan's estimate plus a margin) runs out now
            record = instance.get_run_record_by_id(run_id)
            limit = int(time.time() - record.start_time) + 5
            assert int(record.dagster_run.tags[MAX_RUNTIME_TAG]) > limit  # set by the asset
            instance.add_run_tags(run_id, {MAX_RUNTIME_TAG: str(limit)})
            retry_id = wait_for_retry(pg, run_id, deadline)
            # the retry inherits the run's tags: give it its own limit back (the asset keeps
            # a limit a run was launched with, so this one would stop a healthy retry)
            instance.add_run_tags(retry_id, {MAX_RUNTIME_TAG: "3600"})
        status = wait_for_end(stack.client, retry_id, deadline)
        assert status == "SUCCESS", f"retry {retry_id} of {run_id}: {status}\n{stack.log_tails()}"
        assert launcher_watch.identity(trainer) is None  # the hung trainer did not outlive its run
    assert psql(pg, "dagster", f"SELECT status FROM runs WHERE run_id = '{run_id}'") == "FAILURE"
    reason = psql(pg, "dagster", "SELECT count(*) FROM event_logs WHERE run_id = "
                  f"'{run_id}' AND event LIKE '%maximum runtime%'")
    assert int(reason) >= 1, "the run was not stopped by its max_runtime"
    assert_resumed_once(pg, tmp_path, retry_id)


def assert_resumed_once(pg: int, tmp_path: Path, retry_id: str) -> None:
    """The retry succeeded, the daemon's first; one MLflow training run, continued by the retry
    and finished, each step logged once; the checkpoint resumed mid-run."""
    assert psql(pg, "dagster", f"SELECT status FROM runs WHERE run_id = '{retry_id}'") == "SUCCESS"
    assert psql(pg, "dagster", f"SELECT value FROM run_tags WHERE run_id = '{retry_id}' "
                "AND key = 'dagster/retry_number'") == "1"
    assert int(psql(pg, "dagster", "SELECT count(*) FROM event_logs")) > 0
    # one MLflow training run, continued by the retry and finished; no step logged twice
    trained = psql(pg, "mlflow", "SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = "
                   "r.run_uuid WHERE t.key = 'finegpt.stage' AND t.value = 'train' "
                   "AND r.status = 'FINISHED'").split()
    assert len(trained) == 1
    assert psql(pg, "mlflow", "SELECT count(*) FROM runs r JOIN tags t ON t.run_uuid = "
                "r.run_uuid WHERE t.key = 'finegpt.stage' AND t.value = 'train'") == "1"
    logged = psql(pg, "mlflow", "SELECT count(*), count(DISTINCT step), max(step) FROM metrics "
                  f"WHERE key = 'train_loss' AND run_uuid = '{trained[0]}'")
    count, distinct, last = map(int, logged.split("|"))
    assert count == distinct and last == STEPS
    (summary,) = (tmp_path / "finegpt").glob("**/summary.json")
    summary = json.loads(summary.read_text())
    assert summary["steps"] == STEPS and summary["resumed_from"] in range(2, STEPS, 2)
    assert summary["mlflow_run_id"] == trained[0]
    # the report's val loss, once on the training run (and once on the retry's parent run)
    assert int(psql(pg, "mlflow", "SELECT count(*) FROM metrics WHERE key = 'eval/val_loss' "
                    f"AND run_uuid = '{trained[0]}'")) == 1


def trainer_after_first_checkpoint(home: Path, deadline: float) -> int:
    """The trainer's pid once its first checkpoint is on disk."""
    while time.time() < deadline:
        if any(home.glob("**/ckpt.pt")):
            (trainer,) = trainer_pids(home)
            return trainer
        time.sleep(0.1)
    raise TimeoutError("no checkpoint before the deadline")


def signal_trainer_after_first_checkpoint(home: Path, deadline: float, sig: int) -> int:
    """Send `sig` to the trainer once its first checkpoint is on disk; returns its pid."""
    trainer = trainer_after_first_checkpoint(home, deadline)
    os.kill(trainer, sig)
    return trainer


def kill_worker_after_first_checkpoint(home: Path, deadline: float) -> int:
    """SIGKILL the run worker that launched the trainer (the trainer's parent: the run executes
    in one process) once the first checkpoint is on disk; returns the trainer's pid."""
    trainer = trainer_after_first_checkpoint(home, deadline)
    os.kill(parent_pid(trainer), signal.SIGKILL)
    return trainer


def wait_for_retry(pg: int, run_id: str, deadline: float) -> str:
    """The run the daemon launched to retry `run_id` once the code server failed it."""
    while time.time() < deadline:
        found = psql(pg, "dagster", "SELECT run_id FROM run_tags WHERE key = "
                     f"'dagster/parent_run_id' AND value = '{run_id}'")
        if found:
            return found
        time.sleep(1)
    status = psql(pg, "dagster", f"SELECT status FROM runs WHERE run_id = '{run_id}'")
    raise TimeoutError(f"run {run_id} ({status}) was not retried before the deadline")


def wait_for_end(client, run_id: str, deadline: float) -> str | None:
    status = None
    while time.time() < deadline:
        status = client.get_run_status(run_id).value
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(3)
    return status
