"""This run against the earlier runs of its MLflow experiment, read from MLflow.

Training runs are the experiment's runs tagged `finegpt.stage=train` (the trainer's). Per run:
- date: the run's start; model `n_layer`L/`n_embd`d and N (`costs.param_count`, total
  parameters) from its params;
- tokens, wall time, tokens/s: the metrics `summary/tokens_seen`, `summary/wall_time_s`,
  `summary/tokens_per_s` that the eval report logs from the run's summary.json
  (`evaluate.log_to_training_run`); for a run never evaluated so, the trainer's last
  `tokens_seen` and `tokens_per_s` (last log window) and the MLflow run's end - start;
- val loss ± se, bpb: `eval/val_loss`, `eval/val_loss_se`, `eval/val_bpb`;
- same val: its tag `finegpt.eval.val_sha256` (sha256 of the val.bin it was evaluated on)
  equals this evaluation's.

Newest first, `SHOWN` rows, this run among them (its numbers from this evaluation), and
GPT-2 124M's FineWeb val loss as a labelled reference from a different val set. The points a
loss forecast is fitted to are every other finished run evaluated on the same val.bin.
"""

from __future__ import annotations

import math
import time
from typing import Any

from finegpt_pipeline.config import TrainConfig
from finegpt_pipeline.plan.costs import param_count
from finegpt_pipeline.tracking.store import MODEL_TAG

TRAIN_FILTER = "tags.`finegpt.stage` = 'train'"
VAL_DIGEST_TAG = "finegpt.eval.val_sha256"
SUMMARY_METRICS = ("tokens_seen", "wall_time_s", "tokens_per_s")  # logged as summary/<name>
SHOWN = 6
MAX_READ = 500  # runs read from the experiment (newest first)
# llm.c's GPT-2 (124M) reproduction: 10 B FineWeb tokens, val loss ~3.28 on FineWeb's val split
# (karpathy/llm.c discussion #481; modded-nanogpt's README quotes 3.2847 for the llm.c trainer)
GPT2_REFERENCE = {
    "name": "GPT-2 124M (llm.c)", "model": "12L/768d", "params": 124_439_808,
    "tokens": 10_000_000_000, "val_loss": 3.28,
    "note": "different val set, not comparable directly",
    "source": "karpathy/llm.c discussion #481 (Reproducing GPT-2 (124M) in llm.c), FineWeb val",
}


def _float(metrics: dict, key: str) -> float | None:
    value = metrics.get(key)
    return float(value) if value is not None and math.isfinite(value) else None


def _params_of(params: dict[str, str]) -> int | None:
    """N from the run's logged config (the trainer logs every TrainConfig field)."""
    try:
        fields = {k: int(params[k]) for k in ("n_layer", "n_embd", "block_size", "vocab_size")}
        fields["bias"] = params.get("bias", "False") == "True"
        fields["n_head"] = 1
        return param_count(TrainConfig(**fields))
    except (KeyError, ValueError):
        return None


def run_row(run) -> dict[str, Any]:
    """One MLflow training run as a table row."""
    m, p, info = run.data.metrics, run.data.params, run.info
    wall = _float(m, "summary/wall_time_s")
    if wall is None and info.end_time and info.start_time:
        wall = (info.end_time - info.start_time) / 1000
    tokens = _float(m, "summary/tokens_seen") or _float(m, "tokens_seen")
    return {
        "run_id": info.run_id, "name": info.run_name, "status": info.status,
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime(info.start_time / 1000)),
        "model": f"{p.get('n_layer', '?')}L/{p.get('n_embd', '?')}d", "params": _params_of(p),
        "tokens": int(tokens) if tokens is not None else None,
        "val_loss": _float(m, "eval/val_loss"), "val_loss_se": _float(m, "eval/val_loss_se"),
        "val_bpb": _float(m, "eval/val_bpb"), "wall_time_s": wall,
        "tokens_per_s": _float(m, "summary/tokens_per_s") or _float(m, "tokens_per_s"),
        "val_sha256": run.data.tags.get(VAL_DIGEST_TAG), "this_run": False,
        "registered": run.data.tags.get(MODEL_TAG),  # "v2 champion" (registry.label_runs)
    }


def _this_row(current: dict[str, Any], run_id: str | None) -> dict[str, Any]:
    summary = current.get("run_summary") or {}
    return {
        "run_id": run_id, "name": current.get("run_dir"), "status": "FINISHED",
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "model": f"{current['model_args']['n_layer']}L/{current['model_args']['n_embd']}d",
        "params": current.get("params"), "tokens": summary.get("tokens_seen"),
        "val_loss": current["val_loss"], "val_loss_se": current["val_loss_se"],
        "val_bpb": current["val_bpb"], "wall_time_s": summary.get("wall_time_s"),
        "tokens_per_s": summary.get("tokens_per_s") or None,
        "val_sha256": current.get("val_sha256"), "this_run": True,
    }


def _experiment_of(client, run_id: str | None) -> str | None:
    """The experiment of the training run, None when the store does not hold it."""
    if not run_id:
        return None
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id).info.experiment_id
    except MlflowException:
        return None


def history(tracking_uri: str | None, current: dict[str, Any], run_id: str | None = None,
            experiment: str | None = None, shown: int = SHOWN) -> dict[str, Any]:
    """The comparison section: `current` is this evaluation's report (numbers, val_sha256,
    run_summary), `run_id` its training run; the experiment is that run's, else `experiment`
    (default `mlflow_store.EXPERIMENT`). Never raises for MLflow's sake: an unreadable store
    gives a section that says so."""
    base = {"reference": GPT2_REFERENCE, "val_sha256": current.get("val_sha256")}
    if not tracking_uri:
        return {**base, "tracked": False, "rows": [_this_row(current, run_id)], "points": [],
                "note": "no MLflow tracking: no earlier runs to compare with"}
    try:
        from mlflow import MlflowClient

        from finegpt_pipeline.tracking.store import EXPERIMENT

        client = MlflowClient(tracking_uri=tracking_uri)
        exp_id = _experiment_of(client, run_id)
        if exp_id is None:
            exp = client.get_experiment_by_name(experiment or EXPERIMENT)
            exp_id = exp.experiment_id if exp else None
        runs = client.search_runs([exp_id], filter_string=TRAIN_FILTER,
                                  order_by=["attributes.start_time DESC"],
                                  max_results=MAX_READ) if exp_id else []
        name = client.get_experiment(exp_id).name if exp_id else (experiment or EXPERIMENT)
    except Exception as exc:  # the comparison is a nicety: the report is written regardless
        return {**base, "tracked": False, "rows": [_this_row(current, run_id)], "points": [],
                "note": f"MLflow history not read ({type(exc).__name__}: {str(exc)[:200]})"}
    digest = current.get("val_sha256")
    rows = []
    for run in runs:
        row = run_row(run)
        if run_id and row["run_id"] == run_id:
            row = {**row, **{k: v for k, v in _this_row(current, run_id).items()
                             if v is not None and k not in ("date", "name")}}
        row["same_val"] = bool(digest) and row["val_sha256"] == digest
        rows.append(row)
    if not any(r["this_run"] for r in rows):
        rows.insert(0, {**_this_row(current, run_id), "same_val": True})
    points = [(r["params"], r["tokens"], r["val_loss"]) for r in rows
              if not r["this_run"] and r["same_val"] and r["status"] == "FINISHED"
              and r["params"] and r["tokens"] and r["val_loss"] is not None]
    mine = next(i for i, r in enumerate(rows) if r["this_run"])
    picked = rows[:shown] if mine < shown else rows[:shown - 1] + [rows[mine]]
    return {**base, "tracked": True, "experiment": name, "runs": len(rows), "rows": picked,
            "points": points,
            "note": f"{len(rows)} training run{'s' if len(rows) != 1 else ''} in experiment "
                    f"{name!r}, newest first"}
