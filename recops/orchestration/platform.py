"""`recops up` / `down`: Airflow's api-server, scheduler, dag-processor and triggerer (and its
Celery workers under platform.executor 'celery'), and the champion's BentoML service, as
processes under ``<home>/platform`` started and stopped by PID.

Nothing watches the components once `up` returns: a component that dies is reported as dead by
:func:`recops.orchestration.platform_health.status`, and `up` run again starts the missing ones
on their recorded ports (all healthy: it says the platform is already up).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from recops.config import Settings
from recops.core.processes import alive, check_ports, spawn, stop_all
from recops.errors import ConfigError
from recops.orchestration import celery_workers
from recops.orchestration.platform_state import (
    AIRFLOW_COMPONENTS,
    SERVICE,
    SERVICE_TARGET,
    USER,
    PlatformState,
    read_password,
    read_state,
    state_path,
    write_state,
)


def _password_file(settings: Settings) -> Path:
    """The UI's password file (mode 0600), created once per home with a random password."""
    import json

    path = settings.paths.platform / "passwords.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps({USER: secrets.token_urlsafe(18)}) + "\n")
    path.chmod(0o600)
    read_password(path)
    return path


def airflow_platform_env(settings: Settings, state: PlatformState) -> dict[str, str]:
    """Airflow's environment (airflow_runner's) plus the platform's API URL and login."""
    from recops.orchestration import airflow_runner

    env = airflow_runner.airflow_env(settings, parallelism=settings.platform.parallelism)
    env.update({
        # LocalExecutor workers report to the execution API of this platform's api-server.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": state.ui_url + "execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": state.password_file,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__API__HOST": state.airflow_host,
        "AIRFLOW__API__PORT": str(state.airflow_port),
    })
    return env


def _command(name: str, state: PlatformState) -> list[str]:
    from recops.orchestration import airflow_runner

    af = airflow_runner.airflow_bin()
    # Task logs are files on this machine, read by the api-server itself: no log servers.
    return {
        "api-server": [af, "api-server", "--host", state.airflow_host, "--port",
                       str(state.airflow_port), "--workers", "1"],
        "scheduler": [af, "scheduler", "--skip-serve-logs"],
        "dag-processor": [af, "dag-processor"],
        "triggerer": [af, "triggerer", "--skip-serve-logs"],
        SERVICE: [sys.executable, "-m", "bentoml", "serve", SERVICE_TARGET, "--host",
                  state.service_host, "--port", str(state.service_port)],
    }[name]


def _start(settings: Settings, state: PlatformState, names: list[str]) -> None:
    from recops.environment import child_env

    logs = settings.paths.platform / "logs"
    af_env = airflow_platform_env(settings, state)
    for name in names:
        if celery_workers.is_worker(name):
            state.procs[name] = celery_workers.spawn_worker(settings, name, af_env)
            write_state(settings, state)
            continue
        env = child_env(settings) if name == SERVICE else af_env
        port = {"api-server": state.airflow_port, SERVICE: state.service_port}.get(name)
        state.procs[name] = spawn(name, _command(name, state), env, logs / f"{name}.log", port)
        write_state(settings, state)  # recorded at once: `down` finds it whatever happens next


@dataclass
class UpResult:
    state: PlatformState
    started: list[str]
    seconds: float
    already_up: bool = False

    @property
    def no_champion(self) -> bool:
        return self.state.service_url is None


Progress = Callable[[str], None]


def up(settings: Settings, *, timeout: float | None = None,
       on_progress: Progress | None = None) -> UpResult:
    """Start what is not running and wait until every component is healthy; see the module."""
    from recops.orchestration import airflow_runner
    from recops.orchestration.platform_health import unpause_dags, wait_healthy
    from recops.release import registry

    t0 = time.monotonic()
    say = on_progress or (lambda _msg: None)
    champion = registry.champion_tag(settings)
    state = read_state(settings)
    if state is not None and not any(alive(r) for r in state.procs.values()):
        stop_all(state.procs.values())  # whatever a dead leader left behind
        clear_state(settings)
        state = None
    fresh = state is None
    if state is None:
        p = settings.platform
        ports = {"Airflow api-server": (p.host, p.airflow_port)}
        if champion:
            ports["service"] = (settings.serving.host, settings.serving.port)
        check_ports(ports)
        say("preparing Airflow's database")
        airflow_runner.prepare(settings)
        _sqlite_wal(settings)
        state = PlatformState(
            home=str(settings.paths.home), airflow_host=p.host, airflow_port=p.airflow_port,
            service_host=settings.serving.host, service_port=settings.serving.port,
            password_file=str(_password_file(settings)),
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            executor=p.executor, celery_broker=(p.celery_broker.get_secret_value()
                                                if p.executor == "celery" else None))
    elif state.executor != settings.platform.executor:
        raise ConfigError(f"the platform in {state.home} runs the {state.executor} executor, not "
                          f"{settings.platform.executor}: `recops down` first to switch")
    wanted = [*AIRFLOW_COMPONENTS, *celery_workers.wanted(settings),
              *([SERVICE] if champion else [])]
    missing = [n for n in wanted if n not in state.procs or not alive(state.procs[n])]
    if not missing:
        return UpResult(state, [], round(time.monotonic() - t0, 1), already_up=True)
    if not fresh:
        stop_all([state.procs[n] for n in missing if n in state.procs])  # dead leaders' leftovers
        check_ports({what: where for name, what, where in (
            ("api-server", "Airflow api-server", (state.airflow_host, state.airflow_port)),
            (SERVICE, "service", (state.service_host, state.service_port))) if name in missing})
    state.champion = champion
    deadline = t0 + (timeout or settings.platform.start_timeout)
    try:
        say("starting " + ", ".join(missing))
        # The scheduler last: a task it launches before the execution API answers fails.
        _start(settings, state, [n for n in missing if n != "scheduler"])
        if "scheduler" in missing:
            wait_healthy(state, deadline, say, only=["api-server"])
            _start(settings, state, ["scheduler"])
        wait_healthy(state, deadline, say)
        unpause_dags(state)
    except BaseException:
        stop_all([state.procs[n] for n in (state.procs if fresh else missing) if n in state.procs])
        if fresh:
            clear_state(settings)
        else:
            for n in missing:
                state.procs.pop(n, None)
            write_state(settings, state)
        raise
    state.healthy_after_s = round(time.monotonic() - t0, 1)
    write_state(settings, state)
    return UpResult(state, missing, state.healthy_after_s)


def _sqlite_wal(settings: Settings) -> None:
    """SQLite in WAL mode: readers stop blocking the one writer among Airflow's processes.

    In the default rollback journal, one execution-API call waited 35 s for the lock while the
    scheduler, dag-processor and triggerer wrote (a platform started on 2 busy cores).
    """
    import sqlite3

    if settings.stores.airflow_db != "sqlite":
        return
    with contextlib.closing(sqlite3.connect(settings.paths.airflow_home / "airflow.db")) as db:
        db.execute("PRAGMA journal_mode=WAL")


def clear_state(settings: Settings) -> None:
    state_path(settings).unlink(missing_ok=True)


def down(settings: Settings, grace: float = 30.0) -> list[str] | None:
    """Stop every recorded component and what it started; None when the platform was not up."""
    state = read_state(settings)
    if state is None:
        return None
    stopped = stop_all(state.procs.values(), grace=grace)
    clear_state(settings)
    return stopped

