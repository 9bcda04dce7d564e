"""The running platform's health and DAG runs, read from Airflow's REST API and the service.

A component is healthy when its process runs and its own check passes: the api-server's
``/api/v2/monitor/health``; the scheduler's, dag-processor's and triggerer's heartbeats as that
health check reports them; a Celery worker's answer to ``celery inspect ping``; the service's
``/readyz``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil

from recops.config import Settings
from recops.core.processes import alive, members, pid_reused
from recops.core.supervisor import http_ok, log_tail, wait_for
from recops.errors import RecopsError
from recops.orchestration import celery_workers
from recops.orchestration.platform_state import (
    COMPONENTS,
    DAG_IDS,
    SERVICE,
    PlatformState,
    read_state,
)

# The health check's key for each Airflow daemon.
_HEARTBEAT_KEY = {"scheduler": "scheduler", "dag-processor": "dag_processor",
                  "triggerer": "triggerer"}


class AirflowClient:
    """A small client of the platform's Airflow REST API, logged in as the platform's user."""

    def __init__(self, state: PlatformState, timeout: float = 5.0) -> None:
        self.state = state
        self.http = httpx.Client(base_url=state.ui_url, timeout=timeout)
        self._token: str | None = None

    def health(self) -> dict[str, Any] | None:
        """The monitor health document, or None when the api-server does not answer 200."""
        try:
            resp = self.http.get("api/v2/monitor/health")
        except httpx.HTTPError:
            return None
        body: dict[str, Any] = resp.json() if resp.status_code == 200 else {}
        return body or None

    def warm_execution_api(self, timeout: float) -> float:
        """Make the execution API (what task workers call) answer once; returns its seconds.

        Its first request builds the versioned routes and blocks the whole api-server for
        20-35 s on two busy cores; served here, it delays no task and no UI request later.
        """
        t0 = time.monotonic()
        # An api-server that does not answer is reported by the health wait that follows.
        with contextlib.suppress(httpx.HTTPError):
            self.http.get("execution/health", timeout=max(timeout, 1.0))
        return time.monotonic() - t0

    def token(self) -> str:
        if self._token is None:
            user, password = self.state.login()
            resp = self.http.post("auth/token", json={"username": user, "password": password})
            if resp.status_code != 201:
                raise RecopsError(f"Airflow refused the platform's login ({resp.status_code}: "
                                  f"{resp.text[:200]})")
            self._token = str(resp.json()["access_token"])
        return self._token

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.http.request(method, "api/v2/" + path, headers={
            "Authorization": f"Bearer {self.token()}"}, **kwargs)
        if resp.status_code >= 400:
            raise RecopsError(f"Airflow REST {method} {path}: {resp.status_code} "
                              f"{resp.text[:200]}")
        return resp.json()

    def close(self) -> None:
        self.http.close()


def _service_ready(state: PlatformState) -> bool:
    return state.service_url is not None and http_ok(state.service_url + "/readyz")


def _check(state: PlatformState, name: str, health: dict[str, Any] | None,
           pinged: set[str] | None = None) -> tuple[bool, str]:
    """(healthy, detail) of one running component (``pinged``: the workers' ping answers)."""
    if celery_workers.is_worker(name):
        return celery_workers.check(name, pinged)
    if name == "api-server":
        return health is not None, "monitor/health answers" if health else "no answer yet"
    if name == SERVICE:
        ok = _service_ready(state)
        return ok, "ready" if ok else "/readyz not ready"
    part = (health or {}).get(_HEARTBEAT_KEY[name]) or {}
    beat = next((v for k, v in part.items() if k.endswith("heartbeat")), None)
    return part.get("status") == "healthy", f"heartbeat {beat}" if beat else "no heartbeat yet"


def wait_healthy(state: PlatformState, deadline: float,
                 on_progress: Callable[[str], None] | None = None,
                 only: list[str] | None = None) -> None:
    """Block until every recorded component (or those in ``only``) is healthy, and, unless
    ``only`` is given, recops' DAGs are parsed.

    Raises at once when a component exits (with its log's tail), and at the deadline.
    """
    client = AirflowClient(state)
    names = only or list(state.procs)

    def exited() -> str | None:
        for name in names:
            rec = state.procs[name]
            if not alive(rec):
                return (f"{name} exited before it was healthy; its log {rec.log} ends:\n"
                        f"{log_tail(rec.log)}")
        return None

    def pending() -> str | None:
        health = client.health()
        pinged = celery_workers.pinged(state)
        waiting = [n for n in names if not _check(state, n, health, pinged)[0]]
        if waiting or only:
            return ", ".join(waiting) or None
        if health is None:
            return "Airflow's health check"
        listed = _listed_dags(client)
        return ", ".join(f"DAG {d} (not parsed yet)" for d in DAG_IDS if d not in listed) or None

    try:
        wait_for(pending, deadline=deadline, exited=exited,
                 on_wait=(lambda waiting: on_progress("waiting for " + waiting))
                 if on_progress else None,
                 late=lambda waiting: ("the platform was not healthy in time; waiting for: "
                                       f"{waiting} (logs: {state.home}/platform/logs)"))
        if only and "api-server" in only:
            client.warm_execution_api(deadline - time.monotonic())
    finally:
        client.close()


def _listed_dags(client: AirflowClient) -> dict[str, dict[str, Any]]:
    body = client.request("GET", "dags", params={"dag_id_pattern": "recops_", "limit": 100})
    return {d["dag_id"]: d for d in body.get("dags", [])}


def unpause_dags(state: PlatformState) -> None:
    """Unpause recops' DAGs (new ones start unpaused; this undoes a pause made in the UI)."""
    client = AirflowClient(state)
    try:
        for dag_id, dag in _listed_dags(client).items():
            if dag_id in DAG_IDS and dag.get("is_paused"):
                client.request("PATCH", f"dags/{dag_id}", json={"is_paused": False})
    finally:
        client.close()


@dataclass
class ComponentStatus:
    name: str
    pid: int | None
    port: int | None
    health: str  # healthy | unhealthy | dead | not started
    detail: str = ""
    processes: int = 0  # its session's live processes (workers, task processes included)
    rss_mb: float = 0.0  # their summed resident memory


@dataclass
class DagStatus:
    dag_id: str
    paused: bool | None
    last_run_state: str | None = None
    last_run_at: str | None = None
    next_run_after: str | None = None


@dataclass
class PlatformStatus:
    state: PlatformState | None
    components: list[ComponentStatus] = field(default_factory=list)
    dags: list[DagStatus] = field(default_factory=list)
    dags_error: str | None = None

    @property
    def up(self) -> bool:
        return self.state is not None and any(c.health != "dead" for c in self.components
                                              if c.pid is not None)

    @property
    def healthy(self) -> bool:
        return self.up and all(c.health in ("healthy", "not started") for c in self.components)


def status(settings: Settings) -> PlatformStatus:
    """Each component's PID, port and health, and each DAG's last run."""
    state = read_state(settings)
    if state is None:
        return PlatformStatus(None)
    out = PlatformStatus(state)
    client = AirflowClient(state)
    try:
        running = {n: r for n, r in state.procs.items() if alive(r)}
        health = client.health() if "api-server" in running else None
        pinged = celery_workers.pinged(state)
        for name in (*COMPONENTS, *celery_workers.names(state)):
            rec = state.procs.get(name)
            if rec is None:
                why = "no champion when `up` ran" if name == SERVICE else ""
                out.components.append(ComponentStatus(name, None, None, "not started", why))
                continue
            if name not in running:
                why = ("its PID now belongs to another process" if pid_reused(rec)
                       else "process gone") + f"; log {rec.log}"
                out.components.append(ComponentStatus(name, rec.pid, rec.port, "dead", why))
                continue
            ok, detail = _check(state, name, health, pinged)
            procs = members(rec)
            out.components.append(ComponentStatus(
                name, rec.pid, rec.port, "healthy" if ok else "unhealthy", detail,
                len(procs), round(_rss(procs) / 2**20, 1)))
        if health is None:
            out.dags_error = "Airflow's REST API does not answer"
        else:
            out.dags = _dag_statuses(client)
    except (RecopsError, httpx.HTTPError) as exc:
        out.dags_error = str(exc)
    finally:
        client.close()
    return out


def _rss(procs: list[psutil.Process]) -> int:
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def _dag_statuses(client: AirflowClient) -> list[DagStatus]:
    listed = _listed_dags(client)
    rows = []
    for dag_id in DAG_IDS:
        dag = listed.get(dag_id)
        if dag is None:
            rows.append(DagStatus(dag_id, None))
            continue
        runs = client.request("GET", f"dags/{dag_id}/dagRuns",
                              params={"order_by": "-id", "limit": 1}).get("dag_runs", [])
        last = runs[0] if runs else {}
        rows.append(DagStatus(dag_id, bool(dag.get("is_paused")), last.get("state"),
                              last.get("end_date") or last.get("start_date")
                              or last.get("run_after"), dag.get("next_dagrun_run_after")))
    return rows
