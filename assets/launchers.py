"""Where `trained_checkpoint` runs the trainer, chosen by the `training_launcher` resource:

- `local` (default): a subprocess on this machine through Dagster Pipes, under torchrun when
  several GPUs are visible;
- `k8s`: a pod through dagster-k8s's Pipes client (one node; trained_checkpoint's `gpus`
  config, default 1, GPUs under torchrun),
  with the bins and run directories on a volume mounted at the same FINEGPT_HOME path.

Either way the trainer's command is the same `python -m finegpt_pipeline.train ...` (only the
interpreter's path differs), and its logs, metrics and materialization stream back alike.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg

from finegpt_pipeline.train.launcher_watch import GRACE_S, LAUNCHER_PID_ENV

BACKENDS = ("local", "k8s")
HOME_VOLUME = "finegpt-home"


class TrainingLauncher(dg.ConfigurableResource):
    """Run config, e.g. `resources: {training_launcher: {config: {backend: k8s}}}` with
    `ops: {trained_checkpoint: {config: {gpus: 8}}}`."""

    backend: str = "local"  # local | k8s
    image: str = "finegpt-user-code"  # k8s: the user-code image (docker/Dockerfile.user_code)
    namespace: str = ""  # k8s: "" = the current namespace, else "default"
    home_claim: str = "finegpt-home"  # k8s: PVC holding FINEGPT_HOME, mounted at the same path
    python: str = "python"  # k8s: the image's interpreter

    def processes(self, requested: int, visible_gpus: int) -> int:
        """Trainer processes: `requested` (trained_checkpoint's `gpus`) when set (>= 0), else
        every GPU visible here (local) or one (k8s: the pod's GPUs are not visible here)."""
        if self.backend not in BACKENDS:
            raise ValueError(f"training_launcher.backend: {self.backend!r}; use one of {BACKENDS}")
        if requested >= 0:
            return requested
        return visible_gpus if self.backend == "local" else 1

    def interpreter(self) -> str:
        return sys.executable if self.backend == "local" else self.python

    def pod_request(self, command: list[str], env: dict[str, str], home: Path,
                    processes: int) -> dict[str, Any]:
        """PipesK8sClient.run's arguments (less the context) for this command."""
        gpus = str(max(processes, 1))  # a k8s quantity
        resources = {"limits": {"nvidia.com/gpu": gpus}, "requests": {"nvidia.com/gpu": gpus}}
        return {
            "image": self.image,
            "command": command,
            "namespace": self.namespace or None,
            "env": env,
            "base_pod_meta": {"labels": {"app.kubernetes.io/part-of": "finegpt",
                                         "finegpt/stage": "train"}},
            "base_pod_spec": {
                "containers": [{
                    "resources": resources,
                    "volumeMounts": [{"name": HOME_VOLUME, "mountPath": str(home)},
                                     # torch/NCCL need more shared memory than a pod's 64 MB
                                     {"name": "dshm", "mountPath": "/dev/shm"}],
                }],
                "volumes": [{"name": HOME_VOLUME,
                             "persistentVolumeClaim": {"claimName": self.home_claim}},
                            {"name": "dshm", "emptyDir": {"medium": "Memory"}}],
            },
        }

    def run(self, context: dg.AssetExecutionContext, command: list[str], env: dict[str, str],
            cwd: str, home: Path, processes: int):
        """Launch and wait; returns the Pipes invocation (its materialize result)."""
        if self.backend == "local":
            # the trainer stops if this process dies without stopping it (launcher_watch)
            env = {**env, LAUNCHER_PID_ENV: str(os.getpid())}
            return run_subprocess(context, command, env, cwd)
        from dagster_k8s import PipesK8sClient  # installed with the `deploy` extra

        return PipesK8sClient().run(context=context,
                                    **self.pod_request(command, env, home, processes))


def run_subprocess(context: dg.AssetExecutionContext, command: list[str], env: dict[str, str],
                   cwd: str, grace_s: float = GRACE_S) -> dg.PipesClientCompletedInvocation:
    """The trainer as a Pipes subprocess (what `dg.PipesSubprocessClient` does), in a process
    group of its own that never outlives the step: when the run is stopped (canceled, or past
    its `dagster/max_runtime`), the group gets SIGINT (the trainer closes its MLflow run; the
    last checkpoint stays) and, if it has not ended within `grace_s` (a hung trainer does not
    answer), SIGKILL. Dagster's own client waits 20 s after SIGINT and then leaves a hung
    trainer running, holding the run directory its run's retry needs."""
    with dg.open_pipes_session(context=context,
                               context_injector=dg.PipesTempFileContextInjector(),
                               message_reader=dg.PipesTempFileMessageReader()) as session:
        proc = subprocess.Popen(command, cwd=cwd, start_new_session=True,
                                env={**os.environ, **env, **session.get_bootstrap_env_vars()})
        try:
            proc.wait()
        except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError) as stopped:
            # the run is being stopped (canceled, past its max_runtime, ^C): end the trainer,
            # and fail the step without its retry policy (the run's retry resumes it)
            context.log.info("the run is stopping: interrupting the trainer")
            stop_group(proc, grace_s)
            raise dg.Failure(description="the run was stopped while training; its trainer was "
                             "ended (the last checkpoint stays for a retry to resume)",
                             allow_retries=False) from stopped
        except BaseException:
            stop_group(proc, grace_s)
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"the trainer exited with code {proc.returncode}: see its log above "
                               "and the run directory's train_log.jsonl")
    return dg.PipesClientCompletedInvocation(session)


def stop_group(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGINT to the process group `proc` leads, then SIGKILL once `grace_s` has passed."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # also ends a stopped (SIGSTOP) or hung trainer
    except ProcessLookupError:
        pass
    proc.wait()
