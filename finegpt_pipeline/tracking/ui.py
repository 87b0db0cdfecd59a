"""What the MLflow UI shows when it opens the project's experiment: the runs table's columns.

MLflow 3's UI keeps a runs table's columns in the browser (localStorage, per experiment; a
fresh browser gets Source, Models and Dataset: no metric). The one view state it reads from the
server is a *shared view*: the experiment tag `mlflow.sharedViewState.<key>` holding the view as
JSON, applied when the page's URL carries `viewStateShareKey=<key>` (what its Share button
writes). So the project installs one such view on its experiment (`ensure_runs_view`) and its
experiment links carry the key (`experiment_url`): the training runs, best val loss first, with
val loss, bits per byte and tokens seen as columns; and on its Chart tab the curves a trainer
reads first (val loss, train loss, then lr, grad norm, tokens/s), every line chart against
tokens seen, so runs with different batch sizes line up (MLflow's default x-axis is the step).
A user's own column and chart choice stays theirs on plain visits.

A leaf module (no project imports): `mlflow_store` calls it with its base URL and UI mode."""

from __future__ import annotations

import json
from typing import Any

SHARE_PARAM = "viewStateShareKey"  # MLflow UI's URL parameter naming a shared view
SHARE_TAG_PREFIX = "mlflow.sharedViewState."  # its experiment tag holding that view
RUNS_VIEW_KEY = "finegpt-training-runs"
RUNS_VIEW_TAG = SHARE_TAG_PREFIX + RUNS_VIEW_KEY

# Metrics as the trainer (train_reporter) and eval_report (evaluate.log_to_training_run) log them.
RUNS_METRICS = ("eval/val_loss", "eval/val_loss_se", "eval/val_bpb", "val_loss", "tokens_seen")
# a training run's registered version and aliases, "v2 champion" (registry.label_runs); store
# re-exports it (store imports this module, not the other way)
MODEL_TAG = "finegpt.model"
TRAINING_RUNS_FILTER = "tags.`finegpt.stage` = 'train'"
# The trainer's curves (train_reporter; progress.at_eval logs val_loss and tokens_seen at each
# eval), first; the UI appends every other metric's chart after them, in its section.
LEAD_CHARTS = ("val_loss", "train_loss", "lr", "grad_norm", "tokens_per_s")
X_AXIS_METRIC = "tokens_seen"
# The UI's sections (a metric's prefix before "/"; no prefix: "Model metrics"), in this order.
SECTIONS = ("Model metrics", "forecast", "progress", "eval", "summary", "System metrics")


def column(section: str, name: str) -> str:
    """A runs-table column id as the UI writes it: `metrics.`eval/val_loss``."""
    return f"{section}.`{name}`"


def runs_view() -> dict[str, Any]:
    """The shared view: search facets (filter, order) and UI state (columns) in one object."""
    columns = ([column("tags", MODEL_TAG)] + [column("metrics", m) for m in RUNS_METRICS]
               + [column("attributes", "Models")])
    return {
        "searchFilter": TRAINING_RUNS_FILTER,
        # best first; and a sort other than by start time lists the matching runs flat: sorted
        # by time, the table files each training run under its (collapsed) parent Dagster run
        "orderByKey": column("metrics", "eval/val_loss"),
        "orderByAsc": True,
        "selectedColumns": columns,
        "columnOrder": columns,  # else the table orders metric columns alphabetically
        **charts_view(),
    }


def _section_id(name: str) -> str:
    return "finegpt-section-" + name.lower().replace(" ", "-")


def _line_chart(metric: str) -> dict[str, Any]:
    """A line chart card as the UI's own `RunsChartsLineCardConfig` serializes it."""
    return {"uuid": f"finegpt-chart-{metric}", "type": "LINE", "runsCountToCompare": 10,
            "metricSectionId": _section_id(SECTIONS[0]), "deleted": False, "isGenerated": True,
            "displayName": metric, "metricKey": metric, "selectedMetricKeys": [metric],
            "lineSmoothness": 0, "xAxisScaleType": "linear", "scaleType": "linear",
            "range": {}, "xAxisKey": "metric", "selectedXAxisMetricKey": X_AXIS_METRIC,
            "yAxisKey": "metric", "yAxisExpressions": [], "ignoreOutliers": False,
            "useGlobalXaxisKey": True, "useGlobalLineSmoothing": True}


def charts_view() -> dict[str, Any]:
    """The Chart tab's state: sections in `SECTIONS` order, `LEAD_CHARTS` first, line charts
    against `X_AXIS_METRIC`. Marked as reordered, so the UI keeps this order and appends the
    charts of other metrics (system metrics stay against time, as the UI makes them)."""
    return {
        "isAccordionReordered": True,
        "compareRunSections": [{"uuid": _section_id(name), "name": name, "display": True,
                                "isReordered": True, "deleted": False, "isGenerated": True}
                               for name in SECTIONS],
        "compareRunCharts": [_line_chart(metric) for metric in LEAD_CHARTS],
        "globalLineChartConfig": {"xAxisKey": "metric", "selectedXAxisMetricKey": X_AXIS_METRIC,
                                  "lineSmoothness": 0},
    }


def ensure_runs_view(client, experiment_id: str) -> None:
    """Install (or update) the project's shared runs view on the experiment; no write when it
    already holds this view. `client` is an `mlflow.MlflowClient`."""
    value = json.dumps(runs_view(), sort_keys=True)
    if client.get_experiment(experiment_id).tags.get(RUNS_VIEW_TAG) != value:
        client.set_experiment_tag(experiment_id, RUNS_VIEW_TAG, value)


def experiment_url(base: str, experiment_id: str, ui_mode: str = "") -> str:
    """The experiment's runs table in that view. `ui_mode` is a `?name=value` query the link
    also carries (mlflow_store.UI_MODE: the model-training views)."""
    query = f"{SHARE_PARAM}={RUNS_VIEW_KEY}"
    query = f"{ui_mode}&{query}" if ui_mode else f"?{query}"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs{query}"
