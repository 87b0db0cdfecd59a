-- MLflow gets a database of its own: its tables (runs, metrics, ...) would clash with
-- Dagster's (runs, event_logs, ...) in one schema.
CREATE DATABASE mlflow;
