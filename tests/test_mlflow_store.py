"""The project's MLflow experiment is a model-training one, so MLflow's UI opens its runs table
rather than its GenAI views."""

from __future__ import annotations

import mlflow

from finegpt_pipeline import mlflow_store


def test_experiment_is_marked_as_model_training(finegpt_home):
    mlflow_store.configure()
    experiment = mlflow.get_experiment_by_name(mlflow_store.EXPERIMENT)
    assert experiment.tags[mlflow_store.EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_an_experiment_made_without_the_tag_gets_it(finegpt_home):
    mlflow.set_tracking_uri(f"sqlite:///{finegpt_home / 'mlflow.db'}")
    mlflow.create_experiment(mlflow_store.EXPERIMENT)
    mlflow_store.configure()
    experiment = mlflow.get_experiment_by_name(mlflow_store.EXPERIMENT)
    assert experiment.tags[mlflow_store.EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_run_links_open_the_model_training_views(finegpt_home):
    mlflow_store.configure()
    with mlflow.start_run() as run:
        url = mlflow_store.run_url(run.info.run_id)
    exp = run.info.experiment_id
    assert url == (f"http://127.0.0.1:5000/#/experiments/{exp}/runs/{run.info.run_id}"
                   "?workflowType=machine_learning")
