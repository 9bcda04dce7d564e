"""Run recops' DAGs with a real Airflow whose home, database and DAG folder come from settings."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, ParamSpec

from recops.config import Settings
from recops.core.hashing import sha256_json
from recops.core.supervisor import Child, free_port, start
from recops.environment import child_env
from recops.errors import ConfigError, RecopsError
from recops.orchestration.celery_config import executor_env
from recops.paths import CHECKOUT

DAGS_FOLDER = CHECKOUT / "dags"
P = ParamSpec("P")
_FINISHED = re.compile(r"DagRun Finished: dag_id=(?P<dag>[^,]+), .*?run_id=(?P<run>[^,]+), .*?"
                       r"state=(?P<state>\w+)")
_END_TASK = re.compile(r"\[DAG TEST\] end task task_id=(?P<task>\S+)")
_FAILED_STATE = re.compile(r"new_state=(failed|up_for_retry)")
_EXC_LINE = re.compile(r"^(?:[\w.]+\.)?(?:AirflowFailException|[A-Z]\w*(?:Error|Exception|Failed|"
                       r"Exceeded|Rejected)): .+")


def airflow_bin() -> str:
    """The `airflow` next to this interpreter (the project's venv)."""
    cand = Path(sys.executable).with_name("airflow")
    return str(cand) if cand.exists() else "airflow"


def sql_alchemy_conn(settings: Settings) -> str:
    """Airflow's metadata database: SQLite under its home, or PostgreSQL when configured."""
    if settings.stores.airflow_db == "postgres":
        dsn = settings.stores.postgres_dsn
        if dsn is None:  # the settings validator already refuses this; keep the message clear
            raise ConfigError("stores.postgres_dsn is required when stores.airflow_db is "
                              "'postgres'")
        return dsn.get_secret_value()
    return f"sqlite:///{settings.paths.airflow_home / 'airflow.db'}"


def airflow_env(settings: Settings, base: Mapping[str, str] | None = None,
                parallelism: int = 2) -> dict[str, str]:
    """The environment of every Airflow process recops starts (child_env + Airflow's config)."""
    home = settings.paths.airflow_home
    env = child_env(settings, base)
    conn = sql_alchemy_conn(settings)
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # Two cores shared by everything else: a few task slots are plenty.
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(parallelism),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": conn,
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__API__EXPOSE_CONFIG": "False",
        # Airflow derives an asyncpg URL from a PostgreSQL one; psycopg 3 does both.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": conn if conn.startswith(
            "postgresql+psycopg://") else "",
        # Workers authenticate to the execution API with JWTs: every process of this home
        # must sign and verify with the same secret.
        "AIRFLOW__API_AUTH__JWT_SECRET": _jwt_secret(home),
    })
    env.update(executor_env(settings))  # LocalExecutor, or CeleryExecutor with its broker
    if not env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"]:
        del env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"]
    # The checkout must be importable by the tasks (dags -> recops, validation, federated...).
    env["PYTHONPATH"] = str(CHECKOUT) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _jwt_secret(home: Path) -> str:
    """A per-home random secret, created once (mode 0600) and reused by every process."""
    import secrets

    path = home / ".jwt_secret"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def _run(cmd: list[str], env: Mapping[str, str], log_path: Path,
         on_line: Callable[[str], None] | None = None, timeout: float | None = None
         ) -> tuple[int, list[str]]:
    """Run an airflow command to its end, its output to ``log_path`` (and ``on_line``).

    Returns (exit code, output lines). Past ``timeout`` its whole group (LocalExecutor workers
    included) is stopped and a RecopsError raised.
    """
    lines: list[str] = []

    def keep(line: str) -> None:
        lines.append(line)
        if on_line is not None:
            on_line(line)

    child = start("`airflow " + " ".join(cmd[1:3]) + "`", cmd, env, log_path, cwd=CHECKOUT,
                  append=False)
    return child.watch(timeout, on_line=keep, interval=0.2, check=False), lines


def prepare(settings: Settings, on_line: Callable[[str], None] | None = None) -> Path:
    """Create AIRFLOW_HOME and migrate its database (skipped when already done for this setup)."""
    home = settings.paths.airflow_home
    home.mkdir(parents=True, exist_ok=True)
    marker = home / ".recops-migrated"
    key = sha256_json({"conn": sql_alchemy_conn(settings), "airflow": _airflow_version()})
    if marker.exists() and marker.read_text().strip() == key:
        return home
    rc, lines = _run([airflow_bin(), "db", "migrate"], airflow_env(settings),
                     home / "logs" / "db_migrate.log", on_line)
    if rc != 0:
        tail = "\n".join(lines[-15:])
        raise RecopsError(f"`airflow db migrate` failed (exit {rc}) for "
                          f"{_redact(sql_alchemy_conn(settings))}; log {home / 'logs'}"
                          f"/db_migrate.log:\n{tail}")
    marker.write_text(key)
    return home


def _airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow")


def _redact(dsn: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]+@", r"//\1:***@", dsn)


@dataclass
class DagTestResult:
    dag_id: str
    airflow_run_id: str | None
    state: str
    returncode: int
    wall_s: float
    log_path: Path
    failed_tasks: list[str] = field(default_factory=list)
    error: str | None = None
    task_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.state == "success"

    @property
    def run_id(self) -> str | None:
        """The recops run id the tasks used (the Airflow run id made path-safe)."""
        from recops.orchestration.pipeline import safe_run_id

        return safe_run_id(self.airflow_run_id) if self.airflow_run_id else None


_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z")
_START_TASK = re.compile(r"\[DAG TEST\] starting task_id=(?P<task>\S+)")


def _parse(lines: list[str]) -> dict[str, Any]:
    """Run id, final state, failed tasks, the error line and per-task wall time from the log."""
    from datetime import datetime

    out: dict[str, Any] = {"run": None, "state": "unknown", "failed": [], "error": None,
                           "task_seconds": {}}
    pending_fail = False
    started: dict[str, datetime] = {}
    for line in lines:
        if m := _FINISHED.search(line):
            out["run"], out["state"] = m["run"], m["state"]
        if _FAILED_STATE.search(line):
            pending_fail = True
        ts = _TS.match(line)
        if (m := _START_TASK.search(line)) and ts:
            started[m["task"]] = datetime.fromisoformat(ts[1])
        if m := _END_TASK.search(line):
            if pending_fail and m["task"] not in out["failed"]:
                out["failed"].append(m["task"])
            pending_fail = False
            if ts and m["task"] in started:
                out["task_seconds"][m["task"]] = round(
                    (datetime.fromisoformat(ts[1]) - started[m["task"]]).total_seconds(), 2)
        stripped = line.strip()
        if _EXC_LINE.match(stripped) and not stripped.startswith("Traceback"):
            out["error"] = stripped
        if "ParamValidationError" in line or "Invalid input for param" in line:
            out["error"] = stripped
    return out


def dags_test(settings: Settings, dag_id: str = "recops_pipeline",
              conf: Mapping[str, Any] | None = None, *, use_executor: bool = False,
              on_line: Callable[[str], None] | None = None, timeout: float | None = None
              ) -> DagTestResult:
    """``airflow dags test <dag_id>`` with ``conf``: one real DAG run; returns what happened.

    Without ``use_executor`` the tasks run in the airflow process one by one (Airflow's
    debugging path); with it they go through the configured LocalExecutor.
    """
    prepare(settings, on_line)
    home = settings.paths.airflow_home
    stamp = time.strftime("%Y%m%dT%H%M%S")
    log_path = home / "logs" / "recops" / f"{dag_id}-{stamp}.log"
    cmd = [airflow_bin(), "dags", "test", dag_id]
    if conf:
        cmd += ["--conf", json.dumps(dict(conf))]
    if use_executor:
        cmd.append("--use-executor")
    env = airflow_env(settings)
    t0 = time.perf_counter()
    if use_executor:
        # LocalExecutor workers report to the execution API, served by the api-server.
        with execution_api(settings) as url:
            env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = url
            rc, lines = _run(cmd, env, log_path, on_line, timeout)
    else:
        rc, lines = _run(cmd, env, log_path, on_line, timeout)
    wall = round(time.perf_counter() - t0, 2)
    parsed = _parse(lines)
    state = parsed["state"] if parsed["run"] else ("failed" if rc else "unknown")
    return DagTestResult(dag_id=dag_id, airflow_run_id=parsed["run"], state=state,
                         returncode=rc, wall_s=wall, log_path=log_path,
                         failed_tasks=parsed["failed"], error=parsed["error"],
                         task_seconds=parsed["task_seconds"])


@contextmanager
def execution_api(settings: Settings) -> Iterator[str]:
    """An api-server on a free loopback port for the run's workers; yields its execution URL."""
    prepare(settings)
    port = free_port()
    with start_api_server(settings, port):
        yield f"http://127.0.0.1:{port}/execution/"


def dag_settings() -> Settings:
    """The settings a DAG file is parsed with, for a schedule or a Param default: the parsing
    process's own (``RECOPS_CONFIG``, which every Airflow process recops starts gets from
    :func:`recops.environment.child_env`; the defaults elsewhere)."""
    from recops.config import load_settings

    return load_settings()


def run_stage(stage: Callable[Concatenate[Settings, str, P], dict[str, Any]],
              *args: P.args, **kwargs: P.kwargs) -> dict[str, Any]:
    """Body of every DAG task: ``stage(settings, run_id, *args, **kwargs)``, typed.

    The settings are this process's (``RECOPS_CONFIG``) with the DAG run's Params applied
    (:func:`recops.orchestration.params.settings_from_params`), the run id the DAG run's, made
    path-safe. A stage that returns ``{"skip": reason}`` skips the task (and so the tasks after
    it). A :class:`RecopsError` (bad data, bad settings, a quarantined batch) will not heal on
    retry: it fails the task at once with its one-line message. Anything else is retried by
    Airflow.
    """
    from airflow.sdk import get_current_context
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from recops.orchestration.params import settings_from_params
    from recops.orchestration.pipeline import safe_run_id

    ctx = get_current_context()
    name = getattr(stage, "__qualname__", repr(stage))
    try:
        settings = settings_from_params(ctx["params"])
        out = stage(settings, safe_run_id(ctx["run_id"]), *args, **kwargs)
    except RecopsError as exc:
        raise AirflowFailException(f"{name}: {type(exc).__name__}: {exc}") from exc
    if isinstance(out, dict) and out.get("skip"):
        raise AirflowSkipException(str(out["skip"]))
    return out


def reserialize(settings: Settings, on_line: Callable[[str], None] | None = None) -> None:
    """Parse the DAG folder into the metadata database (what the UI and REST API list)."""
    prepare(settings, on_line)
    log = settings.paths.airflow_home / "logs" / "reserialize.log"
    rc, lines = _run([airflow_bin(), "dags", "reserialize"], airflow_env(settings), log, on_line)
    if rc != 0:
        raise RecopsError(f"`airflow dags reserialize` failed (exit {rc}); log {log}:\n"
                          + "\n".join(lines[-10:]))


HEALTH = "api/v2/monitor/health"


def start_api_server(settings: Settings, port: int, host: str = "127.0.0.1",
                     *, all_admins: bool = False, timeout: float = 240.0) -> Child:
    """Start `airflow api-server` (UI + REST API) on host:port and wait until its health check
    answers; the caller stops it (``with`` or ``.stop()``).

    ``all_admins`` lets anyone in as admin (Airflow's simple auth manager): for a local trial
    or a test, never for a shared machine. Otherwise the generated admin password is in
    ``<airflow_home>/simple_auth_manager_passwords.json.generated``.
    """
    from recops.orchestration.platform_state import client_host

    env = airflow_env(settings)
    if all_admins:
        env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] = "True"
    log = settings.paths.airflow_home / "logs" / f"api-server-{port}.log"
    server = start("airflow api-server", [airflow_bin(), "api-server", "--host", host, "--port",
                                          str(port), "--workers", "1"],
                   env, log, cwd=CHECKOUT, append=False, grace=60.0)
    reach = client_host(host)
    reach = f"[{reach}]" if ":" in reach else reach
    try:
        server.wait_http(f"http://{reach}:{port}/{HEALTH}", timeout=timeout)
    except BaseException:
        server.stop()
        raise
    return server
