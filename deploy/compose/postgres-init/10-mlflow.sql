-- The MLflow tracking store and model registry live beside Dagster's storage, in their own database.
CREATE DATABASE mlflow;
