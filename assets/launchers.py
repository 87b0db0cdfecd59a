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
import sys
from pathlib import Path
from typing import Any

import dagster as dg

from finegpt_pipeline.train.launcher_watch import LAUNCHER_PID_ENV

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
            return dg.PipesSubprocessClient().run(command=command, context=context, env=env,
                                                  cwd=cwd)
        from dagster_k8s import PipesK8sClient  # installed with the `deploy` extra

        return PipesK8sClient().run(context=context,
                                    **self.pod_request(command, env, home, processes))
