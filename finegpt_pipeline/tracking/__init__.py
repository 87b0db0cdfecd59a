"""MLflow tracking shared by the stages: the store and run tree (store), dataset inputs
(datasets), links into the MLflow UI (ui)."""
