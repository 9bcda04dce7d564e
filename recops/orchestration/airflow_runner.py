"""Run recops' DAGs with a real Airflow whose home, database and DAG folder come from settings."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recops.config import Settings
from recops.core.hashing import sha256_json
from recops.environment import child_env
from recops.errors import ConfigError, RecopsError
from recops.orchestration.celery_config import executor_env
from recops.paths import CHECKOUT

DAGS_FOLDER = CHECKOUT / "dags"
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
    """Run a command, stream its output to ``log_path`` (and ``on_line``); returns (rc, lines)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        # Its own process group: LocalExecutor workers must go down with it on a timeout.
        proc = subprocess.Popen(cmd, env=dict(env), cwd=str(CHECKOUT), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1,
                                start_new_session=True)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                lines.append(line.rstrip("\n"))
                if on_line:
                    on_line(line.rstrip("\n"))
                if timeout and time.monotonic() - started > timeout:
                    raise subprocess.TimeoutExpired(cmd, timeout)
            rc = proc.wait()
        except BaseException:
            _stop_group(proc)
            raise
    return rc, lines


def _stop_group(proc: subprocess.Popen[str], grace: float = 30.0) -> None:
    """SIGTERM the group we started (the airflow process and its workers), then SIGKILL."""
    import signal

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(proc: subprocess.Popen[bytes], port: int, timeout: float = 240.0) -> None:
    """Block until the api-server on ``port`` answers its health check."""
    import httpx

    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/api/v2/monitor/health"
    while True:
        if proc.poll() is not None:
            raise RecopsError(f"airflow api-server exited with {proc.returncode} before it was "
                              "ready: see its log under <airflow_home>/logs")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RecopsError(f"airflow api-server on port {port} not healthy after "
                              f"{timeout:.0f} s")
        time.sleep(1.0)


def stop(proc: subprocess.Popen[bytes], grace: float = 60.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds: only the process we started."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextmanager
def execution_api(settings: Settings) -> Iterator[str]:
    """An api-server on a free loopback port for the run's workers; yields its execution URL."""
    prepare(settings)
    port = free_port()
    proc = start_api_server(settings, port)
    try:
        wait_healthy(proc, port)
        yield f"http://127.0.0.1:{port}/execution/"
    finally:
        stop(proc)


def dag_settings() -> Settings:
    """The settings a DAG file is parsed with, for a schedule or a Param default: the parsing
    process's own (``RECOPS_CONFIG``, which every Airflow process recops starts gets from
    :func:`recops.environment.child_env`; the defaults elsewhere)."""
    from recops.config import load_settings

    return load_settings()


def run_stage(stage: str, *args: Any, module: str = "pipeline",
              param_args: tuple[str, ...] = ()) -> dict[str, Any]:
    """Body of every DAG task: settings from the env + Params, run id from the DAG run.

    ``stage`` is a function of ``recops.orchestration.<module>`` (``pipeline`` or ``continual``).

    ``param_args`` names Params that are not settings: each goes to the stage as a keyword
    argument when the stage takes it.
    A stage that returns ``{"skip": reason}`` skips the task (and so the tasks after it).
    A :class:`RecopsError` (bad data, bad settings, a quarantined batch) will not heal on retry:
    it fails the task at once with its one-line message. Anything else is retried by Airflow.
    """
    import importlib
    import inspect

    from airflow.sdk import get_current_context
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from recops.orchestration.pipeline import safe_run_id, settings_from_params

    ctx = get_current_context()
    params = dict(ctx["params"])
    kwargs = {k: params.pop(k) for k in param_args if k in params}
    try:
        settings = settings_from_params(params)
        fn = getattr(importlib.import_module(f"recops.orchestration.{module}"), stage)
        accepted = inspect.signature(fn).parameters
        kwargs = {k: v for k, v in kwargs.items() if v is not None and k in accepted}
        out: dict[str, Any] = fn(settings, safe_run_id(ctx["run_id"]), *args, **kwargs)
    except RecopsError as exc:
        raise AirflowFailException(f"{stage}: {type(exc).__name__}: {exc}") from exc
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


def start_api_server(settings: Settings, port: int, host: str = "127.0.0.1",
                     *, all_admins: bool = False) -> subprocess.Popen[bytes]:
    """Start `airflow api-server` (UI + REST API) on host:port; the caller stops it by PID.

    ``all_admins`` lets anyone in as admin (Airflow's simple auth manager): for a local trial
    or a test, never for a shared machine. Otherwise the generated admin password is in
    ``<airflow_home>/simple_auth_manager_passwords.json.generated``.
    """
    env = airflow_env(settings)
    if all_admins:
        env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] = "True"
    log = settings.paths.airflow_home / "logs" / f"api-server-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        return subprocess.Popen([airflow_bin(), "api-server", "--host", host, "--port",
                                 str(port), "--workers", "1"], env=env, cwd=str(CHECKOUT),
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
