"""Airflow's executor settings from recops' settings: LocalExecutor, or CeleryExecutor with its
broker, its result backend and the node name a Celery worker gives its task instances."""

from __future__ import annotations

import os
import socket

from recops.config import Settings
from recops.errors import ConfigError

# Set in each worker's environment; read by node_name (Airflow's [core] hostname_callable).
NODE_ENV = "RECOPS_WORKER_NODE"


def node(worker: str) -> str:
    """The Celery node name of one of `recops up`'s workers on this machine."""
    return f"recops-{worker}@{socket.gethostname()}"


def node_name() -> str:
    """The hostname a task instance records: its worker's Celery node name.

    Two workers on one machine share the machine's name; the node name tells them apart in
    Airflow (the task instance's ``hostname``) as in Celery (``inspect ping``).
    """
    return os.environ.get(NODE_ENV) or socket.getfqdn()


def result_backend(settings: Settings) -> str:
    """Celery's SQLAlchemy result backend on recops' PostgreSQL (``db+postgresql+...://``)."""
    dsn = settings.stores.postgres_dsn
    if dsn is None:  # the settings refuse celery without PostgreSQL; keep the message clear
        raise ConfigError("platform.executor 'celery' needs stores.postgres_dsn for Celery's "
                          "result backend")
    return "db+" + dsn.get_secret_value()


def executor_env(settings: Settings) -> dict[str, str]:
    """The ``AIRFLOW__*`` variables that pick and configure the executor of platform.executor."""
    p = settings.platform
    if p.executor == "local":
        return {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": p.celery_broker.get_secret_value(),
        "AIRFLOW__CELERY__RESULT_BACKEND": result_backend(settings),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(p.celery_concurrency),
    }
