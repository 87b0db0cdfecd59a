"""The two UIs as a user starts them, for tests/system/test_browser.py: two pipeline runs on the shared
sample with `python -m assets.launch` (as `make run`), then
`dagster-webserver -w workspace.yaml` and `mlflow server` on free loopback ports, with
FINEGPT_MLFLOW_UI / FINEGPT_DAGSTER_UI set before the runs so their links resolve."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Two tiny trainings to compare: the same plan, trained for a different number of steps
TINY = ["n_layer=2", "n_head=2", "n_embd=64", "block_size=64", "micro_batch=8", "grad_accum=1",
        "eval_iters=2"]
STEPS = (2, 4)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_config(max_iters: int) -> dict:
    return {
        # one process: a step's subprocess costs ~10 s of imports on a busy 2-core box
        "execution": {"config": {"in_process": {}}},
        "ops": {
            "training_config": {"config": {"gpu": "cpu", "overrides": TINY}},
            "trained_checkpoint": {"config": {"max_iters": max_iters}},
            "eval_report": {"config": {"max_new_tokens": 8}},
        },
    }


@dataclass
class Stack:
    root: Path
    env: dict[str, str]
    dagster: str
    mlflow: str
    run_ids: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    tags: str | None = None  # `--tags` of FINEGPT_SHARD's partition, once registered

    @property
    def home(self) -> Path:
        return Path(self.env["FINEGPT_HOME"])

    def start(self, name: str, argv: list[str]) -> None:
        log = open(self.root / f"{name}.log", "w")
        self.procs.append(subprocess.Popen(argv, cwd=REPO, env=self.env, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True))

    def wait_http(self, url: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args[0]} exited {proc.returncode}; see {self.root}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not up after {timeout:.0f} s; logs in {self.root}")
            time.sleep(1)

    def pipeline(self, max_iters: int) -> None:
        path = self.root / f"run-{max_iters}.json"
        path.write_text(json.dumps(run_config(max_iters)))
        t0 = time.monotonic()
        with open(self.root / f"pipeline-{max_iters}.log", "w") as log:
            # the README's way: register FINEGPT_SHARD's partition (once), run the job on it
            if self.tags is None:
                self.tags = subprocess.run([sys.executable, "-m", "assets.shards", "add", "--tags"],
                                           cwd=REPO, env=self.env, capture_output=True, text=True,
                                           timeout=120, check=True).stdout.strip()
            done = subprocess.run([sys.executable, "-m", "assets.launch", "-j", "pipeline_job", "-c", str(path), "--tags", self.tags],
                                  cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=900)
        self.timings[f"pipeline_job max_iters={max_iters}"] = time.monotonic() - t0
        # a few steps learn less than the unigram: the run succeeds, its ERROR check fails, so
        # the launch exits 1 (the summary's "result   FAILED: an ERROR-severity check failed")
        text = (self.root / f"pipeline-{max_iters}.log").read_text()
        if done.returncode not in (0, 1) or "(pipeline_job): SUCCESS" not in text:
            tail = text[-3000:]
            raise RuntimeError(f"pipeline_job (max_iters={max_iters}) failed:\n{tail}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # the server and the children it started
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextlib.contextmanager
def _env(env: dict):
    """The stack's environment (its model name, store) in this process for a moment."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def start_stack(root: Path, shard: Path) -> Stack:
    home, dagster_home = root / "home", root / "dagster"
    home.mkdir()
    dagster_home.mkdir()
    shutil.copy(REPO / "docker" / "dagster.yaml", dagster_home / "dagster.yaml")
    dagster_port, mlflow_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "FINEGPT_EXPERIMENT")}
    env.update(FINEGPT_HOME=str(home), DAGSTER_HOME=str(dagster_home), FINEGPT_SHARD=str(shard),
               FINEGPT_MLFLOW_UI=f"http://127.0.0.1:{mlflow_port}",
               FINEGPT_DAGSTER_UI=f"http://127.0.0.1:{dagster_port}",
               PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore", MLFLOW_DISABLE_TELEMETRY="true",
               DO_NOT_TRACK="1", HF_HUB_OFFLINE="1")
    stack = Stack(root, env, env["FINEGPT_DAGSTER_UI"], env["FINEGPT_MLFLOW_UI"])
    try:
        t0 = time.monotonic()
        # the README's commands; MLflow first: it creates and migrates the store the runs use
        stack.start("mlflow", [str(BIN / "mlflow"), "server", "--host", "127.0.0.1",
                               "--port", str(mlflow_port), "--workers", "1",
                               "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
                               "--default-artifact-root", str(home / "mlartifacts")])
        stack.wait_http(f"{stack.mlflow}/health")
        # the instance's SQLite storages made and migrated once, before the webserver and the
        # runs open them side by side (two processes creating one schedule DB can leave two
        # alembic heads)
        subprocess.run([sys.executable, "-c", "import dagster as dg; dg.DagsterInstance.get()"
                        ".get_runs(limit=1)"], cwd=REPO, env=env, check=True, timeout=120)
        stack.start("dagster", [str(BIN / "dagster-webserver"), "-h", "127.0.0.1",
                                "-p", str(dagster_port), "-w", "workspace.yaml"])
        stack.timings["mlflow server up"] = time.monotonic() - t0
        for i, steps in enumerate(STEPS):
            stack.pipeline(steps)
            if i == 0:
                # a champion by hand (`registry.promote`, as a user may): a 2-step model is
                # below the unigram baseline, so the rule promotes none by itself; the second
                # run's report then says where it stands against champion v1
                from finegpt_pipeline.evaluate import registry

                with _env(env):
                    registry.promote(f"sqlite:///{home / 'mlflow.db'}", 1)
        # The runs view the experiment links open. mlflow_store.configure() installs it once
        # merged (tests/engine/tracking/test_ui.py checks that); again here it is a no-op.
        from mlflow import MlflowClient

        from finegpt_pipeline.tracking import ui as mlflow_ui

        client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
        mlflow_ui.ensure_runs_view(client, client.get_experiment_by_name("finegpt").experiment_id)
        stack.wait_http(f"{stack.dagster}/server_info")
        import dagster as dg

        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            stack.run_ids = [r.run_id for r in reversed(instance.get_runs())]  # oldest first
    except BaseException:
        stack.stop()
        raise
    return stack
