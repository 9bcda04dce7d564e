"""`recops up`'s Celery workers: which to start, how each runs, and their health by ping.

Each worker is an ``airflow celery worker`` process named ``worker-<i>``, Celery node
``recops-worker-<i>@<host>``, in a folder of its own (``<home>/platform/workers/worker-<i>``:
its working directory and task logs). A task reads everything it needs from the shared
stores (PostgreSQL, Redis, the home's lake and runs), never from its worker's folder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from pathlib import Path

from recops.config import Settings
from recops.core.processes import ProcRecord, spawn
from recops.orchestration.airflow_runner import airflow_bin
from recops.orchestration.celery_config import NODE_ENV, node
from recops.orchestration.platform_state import PlatformState

PREFIX = "worker-"
NODE_NAME_CALLABLE = "recops.orchestration.celery_config.node_name"


def wanted(settings: Settings) -> list[str]:
    """The workers platform.executor asks for (none under the LocalExecutor)."""
    p = settings.platform
    return [] if p.executor == "local" else [f"{PREFIX}{i}" for i in range(1, p.celery_workers + 1)]


def is_worker(name: str) -> bool:
    return name.startswith(PREFIX)


def names(state: PlatformState) -> list[str]:
    """The workers the state file records, in their order."""
    return sorted((n for n in state.procs if is_worker(n)), key=lambda n: int(n[len(PREFIX):]))


def folder(settings: Settings, worker: str) -> Path:
    return settings.paths.platform / "workers" / worker


def spawn_worker(settings: Settings, worker: str, airflow_env: Mapping[str, str]) -> ProcRecord:
    """Start one ``airflow celery worker`` with the platform's Airflow environment."""
    where = folder(settings, worker)
    (where / "logs").mkdir(parents=True, exist_ok=True)
    env = dict(airflow_env)
    env.update({
        NODE_ENV: node(worker),
        # Task instances record the node name, so Airflow tells this machine's workers apart.
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": NODE_NAME_CALLABLE,
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(where / "logs"),
    })
    # `env --chdir` execs the worker in its own folder (same PID): the supervisor starts every
    # component in the checkout, and a task must not depend on the folder it runs in.
    cmd = ["env", f"--chdir={where}", airflow_bin(), "celery", "worker",
           "--celery-hostname", node(worker),
           # Two workers on one machine cannot both serve logs on Airflow's one log port.
           "--skip-serve-logs"]
    return spawn(worker, cmd, env, settings.paths.platform / "logs" / f"{worker}.log")


def ping(broker: str, nodes: Iterable[str], timeout: float = 2.0) -> set[str] | None:
    """The nodes among ``nodes`` that answer Celery's ping on ``broker``; None when the broker
    cannot be reached."""
    from celery import Celery
    from kombu.exceptions import OperationalError

    wanted_nodes = list(nodes)
    if not wanted_nodes:
        return set()
    app = Celery(broker=broker, set_as_current=False)
    app.conf.broker_connection_timeout = timeout
    app.conf.broker_connection_retry_on_startup = False
    try:
        replies = app.control.ping(destination=wanted_nodes, timeout=timeout)
    except (OperationalError, OSError):
        return None
    finally:
        with contextlib.suppress(OperationalError, OSError):
            app.close()
    return {name for reply in replies for name in reply}


def pinged(state: PlatformState) -> set[str] | None:
    """The recorded workers whose node answers a ping now (empty when none is recorded)."""
    workers = names(state)
    if not workers or state.celery_broker is None:
        return set()
    return ping(state.celery_broker, [node(w) for w in workers])


def check(worker: str, answered: set[str] | None) -> tuple[bool, str]:
    """(healthy, detail) of a running worker, from a ping of all of them."""
    name = node(worker)
    if answered is None:
        return False, f"{name}: the broker does not answer"
    if name in answered:
        return True, f"{name} answers celery ping"
    return False, f"{name} does not answer celery ping (yet)"
