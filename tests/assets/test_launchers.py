"""The trainer's launchers: the local one runs the user's command; the k8s one submits a pod
whose spec (checked here with dagster-k8s's own pod builder, no cluster) runs the same
command under torchrun with the GPUs requested and the Pipes and FineGPT environment."""

import os
from pathlib import Path

import pytest

from assets.launchers import TrainingLauncher
from finegpt_pipeline.train.run_dir import train_command

pipes = pytest.importorskip("dagster_k8s.pipes", reason="dagster-k8s: the `deploy` extra")


def test_processes_follow_the_request_then_the_backend():
    assert TrainingLauncher().processes(-1, visible_gpus=2) == 2
    assert TrainingLauncher(backend="k8s").processes(-1, visible_gpus=0) == 1
    assert TrainingLauncher(backend="k8s").processes(8, visible_gpus=0) == 8
    with pytest.raises(ValueError, match="backend"):
        TrainingLauncher(backend="slurm").processes(-1, 0)


def test_k8s_pod_runs_the_local_command_with_gpus_env_and_volume(tmp_path):
    home = Path("/finegpt")
    launcher = TrainingLauncher(backend="k8s", image="registry.example/finegpt:1", namespace="ml",
                                home_claim="finegpt-home-pvc")
    processes = launcher.processes(8, visible_gpus=0)
    args = (home / "bins/x", home / "runs/r/plan.json", home / "runs/r", False, processes,
            ["--overwrite"])
    local = train_command(*args)
    command = train_command(*args, python=launcher.interpreter())
    assert command[0] == "python" and command[1:] == local[1:]  # the same command
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=8"]
    env = {"FINEGPT_HOME": str(home), "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    request = launcher.pod_request(command, env, home, processes)
    assert request["namespace"] == "ml"
    body = pipes.build_pod_body(pod_name="dagster-run-train", image=request["image"],
                                command=request["command"],
                                env_vars={"DAGSTER_PIPES_CONTEXT": "ctx",
                                          "DAGSTER_PIPES_MESSAGES": "msgs", **request["env"]},
                                base_pod_meta=request["base_pod_meta"],
                                base_pod_spec=request["base_pod_spec"])
    spec = body.spec
    [container] = spec.containers
    assert container.image == "registry.example/finegpt:1"
    assert container.command == command
    assert container.resources.limits == {"nvidia.com/gpu": "8"}
    env_out = {e.name: e.value for e in container.env}
    assert env_out["FINEGPT_HOME"] == "/finegpt" and env_out["DAGSTER_PIPES_CONTEXT"] == "ctx"
    assert env_out["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    mounts = {m.name: m.mount_path for m in container.volume_mounts}
    assert mounts["finegpt-home"] == "/finegpt"
    claims = {v.name: v.persistent_volume_claim for v in spec.volumes}
    assert claims["finegpt-home"].claim_name == "finegpt-home-pvc"
    assert spec.restart_policy == "Never"
    assert body.metadata.labels["finegpt/stage"] == "train"


def test_a_stopped_run_leaves_no_trainer_behind_even_a_hung_one(tmp_path):
    """When a run is stopped the trainer's process group gets SIGINT, then SIGKILL after the
    grace period: a hung trainer (here SIGSTOPped: alive, deaf to SIGINT) and the children
    it started (torchrun's workers) are gone, not left holding the run directory."""
    import signal
    import subprocess
    import sys
    import time

    from assets.launchers import stop_group

    child = tmp_path / "child.pid"
    code = ("import subprocess, sys, time; "
            f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
            f"open({str(child)!r}, 'w').write(str(p.pid)); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.time() + 30
    while not (child.exists() and child.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    grandchild = int(child.read_text())
    os.kill(proc.pid, signal.SIGSTOP)  # hung: SIGINT stays pending
    t0 = time.monotonic()
    stop_group(proc, grace_s=1.0)
    assert proc.returncode == -signal.SIGKILL and time.monotonic() - t0 < 15
    for _ in range(50):  # the grandchild, reaped by init, goes a moment later
        if not os.path.exists(f"/proc/{grandchild}") or \
                open(f"/proc/{grandchild}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"child {grandchild} of the stopped trainer is still running")
