"""The deployment stack under docker/, loaded as the services would load it (no docker daemon
runs here): both instance YAMLs through Dagster's instance-config loader, both workspaces
through its workspace loader, and the compose file's wiring (Postgres behind Dagster and
MLflow, ports on loopback, secrets from an env file, GPUs for runs)."""

import shutil
from pathlib import Path

import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config
from dagster._core.workspace.config_schema import ensure_workspace_config

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
POSTGRES_ENV = ("DAGSTER_POSTGRES_HOST", "DAGSTER_POSTGRES_PORT", "DAGSTER_POSTGRES_USER",
                "DAGSTER_POSTGRES_PASSWORD", "DAGSTER_POSTGRES_DB")


def instance_config(path: Path, tmp_path: Path) -> dict:
    home = tmp_path / path.parent.name
    home.mkdir()
    shutil.copy(path, home / "dagster.yaml")
    config, _ = dagster_instance_config(str(home))
    return config


@pytest.fixture
def deploy_env(monkeypatch):
    for name in POSTGRES_ENV:
        monkeypatch.setenv(name, "5432" if name.endswith("PORT") else "finegpt")
    monkeypatch.setenv("FINEGPT_USER_CODE_IMAGE", "finegpt-user-code")


def test_embedded_instance_monitors_runs_and_retries_crashes_only(tmp_path):
    config = instance_config(DOCKER / "dagster.yaml", tmp_path)
    assert config["telemetry"] == {"enabled": False}
    assert config["run_monitoring"]["enabled"] is True
    assert config["run_retries"]["enabled"] is True
    assert config["run_retries"]["retry_on_asset_or_op_failure"] is False
    assert config["concurrency"]["pools"]["default_limit"] == 1
    # a crashed run's pool slot is freed, or its retry waits on it forever
    assert config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0


def test_deployment_instance_uses_postgres_the_queue_and_gpu_containers(tmp_path, deploy_env):
    config = instance_config(DOCKER / "deploy" / "dagster.yaml", tmp_path)
    db = config["storage"]["postgres"]["postgres_db"]
    assert {v["env"] for v in db.values() if isinstance(v, dict)} == set(POSTGRES_ENV)  # no secret
    assert db["scheme"] == "postgresql+psycopg2"  # the driver dagster-postgres installs
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_docker", "DockerRunLauncher")
    assert launcher["config"]["container_kwargs"]["device_requests"] == [
        {"count": -1, "capabilities": [["gpu"]]}]
    assert set(POSTGRES_ENV) <= set(launcher["config"]["env_vars"])
    assert config["run_retries"]["retry_on_asset_or_op_failure"] is False
    assert config["run_monitoring"]["enabled"] is True
    assert config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0


@pytest.mark.parametrize("path", [ROOT / "workspace.yaml", DOCKER / "deploy" / "workspace.yaml"])
def test_workspaces_load(path):
    config = ensure_workspace_config(yaml.safe_load(path.read_text()), str(path))
    [entry] = config["load_from"]
    target = next(iter(entry.values()))
    assert target.get("location_name") == "finegpt"  # one code location name everywhere


def test_compose_wires_postgres_dagster_mlflow_and_gpus(tmp_path, deploy_env):
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "user_code", "dagster_webserver", "dagster_daemon",
                             "mlflow"}
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("${BIND_ADDRESS:-127.0.0.1}:"), (name, port)
        assert service.get("env_file") == ".env", name  # secrets from the env file only
        assert "finegpt" in service["networks"], name
    mlflow_cmd = services["mlflow"]["command"]
    for flag in ("--serve-artifacts", "--artifacts-destination", "--allowed-hosts"):
        assert flag in mlflow_cmd
    # MLflow's backend: Postgres, from the env file (env.example shows the URI's shape)
    assert "postgresql+psycopg2://" in (DOCKER / "env.example").read_text()
    assert "mlflow:5000" in mlflow_cmd.split("--allowed-hosts")[1]
    assert any("docker.sock" in v for v in services["dagster_daemon"]["volumes"])
    # the run launcher joins the compose network and volume by the names they are given
    launcher = instance_config(DOCKER / "deploy" / "dagster.yaml", tmp_path)["run_launcher"]
    assert compose["networks"]["finegpt"]["name"] == launcher["config"]["network"]
    volume = launcher["config"]["container_kwargs"]["volumes"][0].split(":")[0]
    assert compose["volumes"][volume]["name"] == volume
    # no password has a default: without docker/.env compose refuses to start, naming the fix
    text = (DOCKER / "compose.yaml").read_text()
    assert "change-me" not in text
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith(
        "${POSTGRES_PASSWORD:?cp docker/env.example docker/.env")
    assert "${MLFLOW_BACKEND_STORE_URI:?" in mlflow_cmd
    init = services["postgres"]["volumes"][1].split(":")[0]
    assert "CREATE DATABASE mlflow" in (DOCKER / init).read_text()


def test_the_user_code_image_installs_the_deploy_extra():
    """The image runs trainings in k8s pods too (training_launcher backend k8s): dagster_k8s
    must import there, so it installs the project's deploy extra."""
    text = (DOCKER / "Dockerfile.user_code").read_text()
    assert '".[deploy]"' in text


def test_images_hold_no_secrets_and_serve_the_one_code_location():
    for dockerfile in ("Dockerfile.dagster", "Dockerfile.user_code"):
        text = (DOCKER / dockerfile).read_text()
        assert "PASSWORD" not in text and ".env" not in text, dockerfile
    user_code = (DOCKER / "Dockerfile.user_code").read_text()
    base = next(line for line in user_code.splitlines() if line.startswith("FROM"))
    assert "pytorch" in base and "cuda" in base  # a CUDA PyTorch runtime
    assert '"--location-name", "finegpt"' in user_code
    assert "docker/.env" in (ROOT / ".gitignore").read_text()
