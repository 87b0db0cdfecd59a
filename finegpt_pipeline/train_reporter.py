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
from finegpt_pipeline.layout import bins_fingerprint
from finegpt_pipeline.run_dir import LOG_NAME, MLFLOW_RUN_FILE

# Set by the Dagster asset so the MLflow run names the Dagster run and asset that launched it.
DAGSTER_RUN_ID_ENV = "FINEGPT_DAGSTER_RUN_ID"
ASSET_KEY_ENV = "FINEGPT_ASSET_KEY"


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
    """What the MLflow run is, for the runs table: stage, model size, start time, and the run
    directory's key, e.g. `train 2L/64d 2026-12-01 09:21 (f7a16843600a)`."""
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    return (f"train {params.get('n_layer', '?')}L/{params.get('n_embd', '?')}d {started} "
            f"({Path(out_dir).name})")


class Reporter:
    def __init__(self, out_dir: Path, enabled: bool, use_mlflow: bool):
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self.use_mlflow = enabled and use_mlflow
        self.mlflow = None
        self.mlflow_run_id: str | None = None
        self.mlflow_run_url: str | None = None
        self._pipes_cm = None
        self.pipes = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, params: dict[str, Any], resuming: bool, bins_dir: Path | None = None) -> None:
        if not self.enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if os.environ.get("DAGSTER_PIPES_CONTEXT"):
            from dagster_pipes import open_dagster_pipes

            self._pipes_cm = open_dagster_pipes()
            self.pipes = self._pipes_cm.__enter__()
        if self.use_mlflow:
            self._start_mlflow(params, resuming)
            if bins_dir is not None and not resuming:
                self._log_bins_input(Path(bins_dir))

    def _start_mlflow(self, params: dict[str, Any], resuming: bool) -> None:
        import mlflow

        from finegpt_pipeline import mlflow_store

        mlflow_store.configure()
        run_file = self.out_dir / MLFLOW_RUN_FILE
        previous = run_file.read_text().strip() if resuming and run_file.exists() else None
        system_metrics = importlib.util.find_spec("psutil") is not None
        if previous:
            # a resumed run continues its MLflow run: one loss curve, not two
            run = mlflow.start_run(run_id=previous, log_system_metrics=system_metrics)
        else:
            tags = mlflow_store.run_tags("train", os.environ.get(DAGSTER_RUN_ID_ENV),
                                     os.environ.get(ASSET_KEY_ENV))
            run = mlflow.start_run(run_name=run_name(params, self.out_dir), tags=tags,
                                   log_system_metrics=system_metrics)
            mlflow.log_params({k: _param(v) for k, v in params.items()})
            write_text(run_file, run.info.run_id + "\n")
        self.mlflow = mlflow
        self.mlflow_run_id = run.info.run_id
        self.mlflow_run_url = mlflow_store.run_url(self.mlflow_run_id)
        self.info(f"MLflow run {self.mlflow_run_id}: {self.mlflow_run_url}")

    def _log_bins_input(self, bins_dir: Path) -> None:
        """The bins as the run's MLflow dataset input (lineage); never fatal to training."""
        try:
            import warnings

            from mlflow.data.dataset_source_registry import resolve_dataset_source
            from mlflow.data.meta_dataset import MetaDataset

            # MLflow keeps one dataset per (name, digest) in an experiment and gives a later
            # run with the same digest the first one's source: the fingerprint holds the path,
            # so equal bins elsewhere (a copy, another FINEGPT_HOME) name their own directory
            digest = bins_fingerprint(bins_dir)
            with warnings.catch_warnings():
                # a local path matches two registered local sources; both are the same class
                warnings.simplefilter("ignore", UserWarning)
                source = resolve_dataset_source(str(bins_dir.resolve()))
            dataset = MetaDataset(source, name="tokenized_bins", digest=digest)
            self.mlflow.log_input(dataset, context="training")
        except Exception as exc:  # lineage is a nicety: report it, keep training
            self.info(f"MLflow dataset input not logged ({type(exc).__name__}: {exc})")

    def finish(self, summary: dict[str, Any], artifacts: list[Path], data_version: str,
               status: str = "FINISHED") -> None:
        if not self.enabled:
            return
        if self.mlflow is not None:
            for path in artifacts:
                self.mlflow.log_artifact(str(path))
            self.mlflow.end_run(status=status)
        if self.pipes is not None:
            metadata = {k: v for k, v in summary.items() if v is not None}
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

    def metrics(self, step: int, values: dict[str, float]) -> None:
        """One record per step into the JSONL log (appended across resumes) and MLflow."""
        if not self.enabled:
            return
        record = {"step": step, **values}
        with open(self.out_dir / LOG_NAME, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.mlflow is not None:
            finite = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}
            self.mlflow.log_metrics(finite, step=step)


def _param(value: Any) -> Any:
    text = value if isinstance(value, (int, float, bool)) else str(value)
    return text[:500] if isinstance(text, str) else text

