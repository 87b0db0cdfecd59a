"""Where a training run reports (`Reporter`): stdout, a JSONL log beside the checkpoint, MLflow
(live, when configured; the store is `mlflow_store`) and Dagster Pipes (when launched by
Dagster). Only rank 0 reports.

mlflow and dagster_pipes are imported only when used: the trainer also runs on GPU machines
that have neither installed.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from finegpt_pipeline.atomic import write_text
from finegpt_pipeline.train.run_dir import CKPT_NAME, LOG_NAME, MLFLOW_RUN_FILE

# Set by the Dagster asset so the MLflow run is its nested run in the Dagster run's parent
# run: the Dagster run, asset, code version and parent MLflow run that launched it.
DAGSTER_RUN_ID_ENV = "FINEGPT_DAGSTER_RUN_ID"
ASSET_KEY_ENV = "FINEGPT_ASSET_KEY"
CODE_VERSION_ENV = "FINEGPT_CODE_VERSION"
PARENT_RUN_ENV = "FINEGPT_MLFLOW_PARENT_RUN_ID"


def mlflow_wanted(flag: bool | None) -> bool:
    """Track by default, to MLFLOW_TRACKING_URI or else the store under FINEGPT_HOME (the
    environment contract); --no-mlflow (False) opts out. Where mlflow is not installed (a bare
    GPU box) the default is off, and --mlflow (True) an error, before anything runs."""
    if flag is False:
        return False
    if importlib.util.find_spec("mlflow") is None:
        if flag:
            raise ValueError("--mlflow: mlflow is not installed in this environment; install it "
                             "or pass --no-mlflow")
        return False
    return True


def run_name(params: dict[str, Any], out_dir: Path) -> str:
    """What the MLflow run is, named by what tells runs apart: model size, tokens trained,
    optimizer and peak lr, then the start time and the run directory's key, e.g.
    `train 2L/64d 137k tok muon lr 0.0072 2026-12-01 09:21 (f7a16843600a)`."""
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    parts = [f"train {params.get('n_layer', '?')}L/{params.get('n_embd', '?')}d"]
    try:
        total = (int(params["max_iters"]) * int(params["micro_batch"]) * int(params["grad_accum"])
                 * int(params["block_size"]))
        div, unit = next((d, u) for d, u in ((1e9, "B"), (1e6, "M"), (1e3, "k"), (1, ""))
                         if total >= d or d == 1)
        parts.append(f"{total / div:.3g}{unit} tok")
    except (KeyError, TypeError, ValueError):
        pass
    if isinstance(params.get("learning_rate"), (int, float)):
        parts.append(f"{params.get('optimizer', 'adamw')} lr {params['learning_rate']:g}")
    return " ".join([*parts, started, f"({Path(out_dir).name})"])


class Reporter:
    def __init__(self, out_dir: Path, enabled: bool, use_mlflow: bool):
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self.use_mlflow = enabled and use_mlflow
        self.mlflow = None
        self.mlflow_run_id: str | None = None
        self.mlflow_run_url: str | None = None
        self._logged_through: dict[str, int] = {}  # metric -> last step the MLflow run holds
        self._pipes_cm = None
        self.pipes = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, params: dict[str, Any], resuming: bool, bins_dir: Path | None = None,
              previous_run_id: str | None = None) -> None:
        """`previous_run_id` is the MLflow run a resumed checkpoint names: the run continues
        it (else the one the run directory's `mlflow_run_id` file names)."""
        if not self.enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if os.environ.get("DAGSTER_PIPES_CONTEXT"):
            from dagster_pipes import open_dagster_pipes

            self._pipes_cm = open_dagster_pipes()
            self.pipes = self._pipes_cm.__enter__()
        if self.use_mlflow:
            self._start_mlflow(params, resuming, previous_run_id, bins_dir)

    def _start_mlflow(self, params: dict[str, Any], resuming: bool, previous: str | None,
                      bins_dir: Path | None) -> None:
        import mlflow

        from finegpt_pipeline.tracking import store as mlflow_store

        mlflow_store.configure()
        client = mlflow.MlflowClient()
        run_file = self.out_dir / MLFLOW_RUN_FILE
        if resuming and not previous and run_file.exists():
            previous = run_file.read_text().strip()
        if previous and not _run_exists(client, previous):
            self.info(f"MLflow run {previous} (named by the checkpoint) is not in this store; "
                      "starting a new one")
            previous = None
        system_metrics = importlib.util.find_spec("psutil") is not None
        if previous:
            # a resumed run continues its MLflow run: one loss curve, not two, and the steps
            # it already holds (replayed after the checkpoint, identical) are not logged again
            self._logged_through = logged_steps(client, previous)
            run = mlflow.start_run(run_id=previous, log_system_metrics=system_metrics)
        else:
            env = os.environ.get
            tags = mlflow_store.run_tags("train", env(DAGSTER_RUN_ID_ENV), env(ASSET_KEY_ENV),
                                         env(CODE_VERSION_ENV), env(PARENT_RUN_ENV))
            run = mlflow.start_run(run_name=run_name(params, self.out_dir), tags=tags,
                                   log_system_metrics=system_metrics)
            mlflow.log_params({k: _param(v) for k, v in params.items()})
            write_text(run_file, run.info.run_id + "\n")
            if bins_dir is not None:
                self._log_bins_inputs(client, run.info.run_id, Path(bins_dir))
        self.mlflow = mlflow
        self.mlflow_run_id = run.info.run_id
        self.mlflow_run_url = mlflow_store.run_url(self.mlflow_run_id)
        self.info(f"MLflow run {self.mlflow_run_id}: {self.mlflow_run_url}")

    def _log_bins_inputs(self, client, run_id: str, bins_dir: Path) -> None:
        """The bins (and the shard they came from) as the run's MLflow dataset inputs
        (lineage); never fatal to training."""
        try:
            from finegpt_pipeline.tracking import datasets as mlflow_datasets

            mlflow_datasets.log_inputs(client, run_id, mlflow_datasets.bins_inputs(bins_dir),
                                       context="training")
        except Exception as exc:  # lineage is a nicety: report it, keep training
            self.info(f"MLflow dataset input not logged ({type(exc).__name__}: {exc})")

    def finish(self, summary: dict[str, Any], artifacts: list[Path], data_version: str,
               status: str = "FINISHED") -> None:
        if not self.enabled:
            return
        if self.mlflow is not None:
            from finegpt_pipeline.tracking import store as mlflow_store

            client = self.mlflow.MlflowClient()
            for path in artifacts:
                if Path(path).name == CKPT_NAME:  # once on disk where the store is local
                    mlflow_store.log_artifact_once(client, self.mlflow_run_id, path)
                else:
                    self.mlflow.log_artifact(str(path))
            self.mlflow.end_run(status=status)
        if self.pipes is not None:
            metadata = {k: ({"raw_value": v, "type": "json"} if isinstance(v, (list, dict)) else v)
                        for k, v in summary.items() if v is not None}
            if self.mlflow_run_url:
                metadata["mlflow_run_url"] = {"raw_value": self.mlflow_run_url, "type": "url"}
            self.pipes.report_asset_materialization(metadata=metadata, data_version=data_version)
        self.close()

    def close(self, error: BaseException | None = None) -> None:
        """End MLflow and Pipes; an `error` marks the MLflow run FAILED and reaches Dagster."""
        if self.mlflow is not None and error is not None:
            self.mlflow.end_run(status="FAILED")
        self.mlflow = None
        if self._pipes_cm is not None:
            cm, self._pipes_cm, self.pipes = self._pipes_cm, None, None
            if error is None:
                cm.__exit__(None, None, None)
            else:
                cm.__exit__(type(error), error, error.__traceback__)

    # -- reporting -------------------------------------------------------------------------
    # Under Dagster Pipes a line goes to the Dagster run as a Pipes log message only: the
    # launching process shares our stdout, so printing it too showed every line twice.
    def info(self, message: str) -> None:
        self._say("info", message)

    def warning(self, message: str) -> None:
        self._say("warning", message)

    def _say(self, level: str, message: str) -> None:
        if not self.enabled:
            return
        if self.pipes is not None:
            getattr(self.pipes.log, level)(message)
        else:
            print(message if level == "info" else f"{level}: {message}", flush=True)

    def rewind_log(self, through_step: int) -> None:
        """Drop the JSONL log's records after `through_step` (a resume from that checkpoint
        logs those steps again; MLflow skips them already), so the log has each step once."""
        path = self.out_dir / LOG_NAME
        if not self.enabled or not path.exists():
            return
        kept = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= through_step]
        write_text(path, "".join(line + "\n" for line in kept))

    def metrics(self, step: int, values: dict[str, float]) -> None:
        """One record per step into the JSONL log (appended across resumes) and MLflow."""
        if not self.enabled:
            return
        record = {"step": step, **values}
        with open(self.out_dir / LOG_NAME, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.mlflow is not None:
            finite = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)
                      and step > self._logged_through.get(k, -1)}
            if finite:
                self.mlflow.log_metrics(finite, step=step)


    def tags(self, values: dict[str, str]) -> None:
        """Set (overwrite) MLflow tags on the run: what is true now, e.g. the latest forecast."""
        if self.enabled and self.mlflow is not None:
            self.mlflow.set_tags({k: _param(v) for k, v in values.items()})


def logged_steps(client, run_id: str) -> dict[str, int]:
    """The last step of each metric the run holds (one history query per metric, at start)."""
    keys = [k for k in client.get_run(run_id).data.metrics if not k.startswith("system/")]
    return {k: max(m.step for m in client.get_metric_history(run_id, k)) for k in keys}


def _run_exists(client, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
        return True
    except MlflowException:
        return False


def _param(value: Any) -> Any:
    text = value if isinstance(value, (int, float, bool)) else str(value)
    return text[:500] if isinstance(text, str) else text

