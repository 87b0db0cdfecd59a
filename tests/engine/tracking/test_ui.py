"""The runs view the project installs on its MLflow experiment (a shared view: experiment tag
`mlflow.sharedViewState.<key>`, opened by links carrying `viewStateShareKey=<key>`). What the UI
renders from it is checked in a browser by tests/system/test_browser.py."""

from __future__ import annotations

import json


from finegpt_pipeline.tracking import store as mlflow_store, ui as mlflow_ui


def test_runs_view_selects_val_loss_bpb_and_tokens_columns():
    view = mlflow_ui.runs_view()
    assert {"metrics.`eval/val_loss`", "metrics.`eval/val_bpb`", "metrics.`tokens_seen`"} <= set(
        view["selectedColumns"])
    assert view["searchFilter"] == "tags.`finegpt.stage` = 'train'"
    assert view["orderByKey"] == "metrics.`eval/val_loss`" and view["orderByAsc"] is True


def test_runs_view_leads_the_charts_with_the_losses_against_tokens_seen():
    view = mlflow_ui.runs_view()
    charts, sections = view["compareRunCharts"], view["compareRunSections"]
    assert [c["metricKey"] for c in charts][:2] == ["val_loss", "train_loss"]
    assert sections[0]["name"] == "Model metrics"  # the UI's section for unprefixed metrics
    assert {c["metricSectionId"] for c in charts} == {sections[0]["uuid"]}
    assert view["isAccordionReordered"] is True and all(s["isReordered"] for s in sections)
    assert view["globalLineChartConfig"] == {"xAxisKey": "metric", "lineSmoothness": 0,
                                             "selectedXAxisMetricKey": "tokens_seen"}
    assert all(c["useGlobalXaxisKey"] and c["type"] == "LINE" for c in charts)


def test_ensure_runs_view_installs_the_tag_once_and_replaces_a_stale_one(finegpt_home):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{finegpt_home / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    exp_id = client.create_experiment("ui-view")
    mlflow_ui.ensure_runs_view(client, exp_id)
    tags = client.get_experiment(exp_id).tags
    assert json.loads(tags[mlflow_ui.RUNS_VIEW_TAG]) == mlflow_ui.runs_view()
    client.set_experiment_tag(exp_id, mlflow_ui.RUNS_VIEW_TAG, '{"selectedColumns": []}')
    mlflow_ui.ensure_runs_view(client, exp_id)
    assert json.loads(client.get_experiment(exp_id).tags[mlflow_ui.RUNS_VIEW_TAG]) == mlflow_ui.runs_view()


def test_experiment_url_carries_the_ui_mode_and_the_share_key():
    url = mlflow_ui.experiment_url("http://127.0.0.1:5000/", "7", mlflow_store.UI_MODE)
    assert url == ("http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
                   "&viewStateShareKey=finegpt-training-runs")


def test_configure_installs_the_runs_view(finegpt_home):
    import mlflow

    mlflow_store.configure()
    exp = mlflow.get_experiment_by_name(mlflow_store.EXPERIMENT)
    assert mlflow_ui.RUNS_VIEW_TAG in exp.tags
