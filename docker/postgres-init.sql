-- Runs once, on the first start of an empty Postgres volume: MLflow gets its own database next
-- to Prefect's (POSTGRES_DB creates `prefect`), and Label Studio its own.
CREATE DATABASE mlflow;
CREATE DATABASE labelstudio;
