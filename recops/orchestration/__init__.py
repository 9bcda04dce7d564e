"""Orchestration: the pipeline and retraining stages, the one fit, and the Airflow runner."""
