"""`recops up` / `status` / `down` for real: Airflow's four daemons and the service as processes,
on SQLite (with a champion) and on PostgreSQL (without one); a SIGKILLed component; no process
left behind; bad ports, a start that times out and stale state leave nothing half-started."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from recops.core.processes import ProcRecord, members
from recops.core.supervisor import free_port
from recops.orchestration import platform_state
from tests.orchestration.platform_cli import FINISHED, recops, running, wait_for_runs
from tests.serving.conftest import build_world

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FAST = {"serving.workers": 1, "platform.parallelism": 1}



def _config(settings: Any) -> Path:
    return settings.save(settings.paths.home.parent / "recops.yaml")


def _sessions(state: platform_state.PlatformState) -> list[psutil.Process]:
    return [p for rec in state.procs.values() for p in members(rec)]


def _watcher_ran(state: platform_state.PlatformState, timeout: float = 600) -> dict[str, Any]:
    """The first scheduled run of recops_feedback_watch, once finished (through the REST API):
    the scheduler, a LocalExecutor worker and the execution API ran its task."""
    return dict(wait_for_runs(
        state, "recops_feedback_watch",
        lambda runs: runs[0] if runs and runs[0]["state"] in FINISHED else None,
        params={"order_by": "id", "limit": 1}, timeout=timeout, what="no finished watcher run"))


def _row(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if f" {name} " in line)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A home with a Feast online store and a registered champion (the serving tests' world)."""
    home = tmp_path_factory.mktemp("platform") / "home"
    settings = build_world(home, **FAST).settings
    return {"settings": settings, "config": _config(settings)}


@pytest.mark.timeout(1800)
def test_up_status_kill_down_on_sqlite(world: dict[str, Any]) -> None:
    settings, cfg = world["settings"], world["config"]
    ap, sp = free_port(), free_port()
    t0 = time.monotonic()
    up = recops(cfg, "up", "--airflow-port", ap, "--service-port", sp)
    print(f"recops up: {time.monotonic() - t0:.1f} s wall, load {os.getloadavg()}")
    state = platform_state.platform_state(settings)
    assert up.returncode == 0 and state is not None, up.stdout + up.stderr
    snapshot: list[psutil.Process] = []
    try:
        user, password = state.login()
        assert (state.ui_url, state.service_url) == (f"http://127.0.0.1:{ap}/",
                                                      f"http://127.0.0.1:{sp}")
        for shown in (state.ui_url, state.service_url, user, password, "recops down"):
            assert shown in up.stdout
        assert "healthy after" in up.stdout
        assert stat.S_IMODE(os.stat(state.password_file).st_mode) == 0o600
        assert stat.S_IMODE(platform_state.state_path(settings).stat().st_mode) == 0o600
        assert set(state.procs) == set(platform_state.COMPONENTS)

        health = httpx.get(state.api_url + "/monitor/health", timeout=10).json()
        for part in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
            assert health[part]["status"] == "healthy", health
        login = state.ui_url + "auth/token"
        assert httpx.post(login, json={"username": user, "password": "wrong"},
                          timeout=10).status_code == 401
        token = httpx.post(login, json={"username": user, "password": password},
                           timeout=10).json()["access_token"]
        dags = httpx.get(state.api_url + "/dags", headers={"Authorization": f"Bearer {token}"},
                         params={"dag_id_pattern": "recops_"}, timeout=10).json()["dags"]
        paused = {d["dag_id"]: d["is_paused"] for d in dags}
        assert paused == {d: False for d in platform_state.DAG_IDS}
        assert httpx.get(state.api_url + "/dags", timeout=10).status_code == 401  # no login

        got = httpx.post(state.service_url + "/recommend", json={"user_id": 1, "k": 5},
                         timeout=30)
        assert got.status_code == 200 and len(got.json()["items"]) == 5, got.text

        # (The watcher running a task under the scheduler is waited for once, in the
        # PostgreSQL test below: its LocalExecutor runs it the way it runs on SQLite.)

        again = recops(cfg, "up")
        assert again.returncode == 0 and "already up" in again.stdout, again.stdout
        assert platform_state.platform_state(settings) == state

        st = recops(cfg, "status")
        assert st.returncode == 0, st.stdout + st.stderr
        rss = sum(p.memory_info().rss for p in running(_sessions(state))) / 2**20
        print(f"platform: {len(_sessions(state))} processes, {rss:.0f} MB RSS summed")
        assert "MB RSS in all" in st.stdout
        for name, rec in state.procs.items():
            row = _row(st.stdout, name)
            assert str(rec.pid) in row and "healthy" in row, row
        assert str(ap) in _row(st.stdout, "api-server") and str(sp) in _row(st.stdout, "service")
        for dag_id in platform_state.DAG_IDS:
            assert dag_id in st.stdout

        # SIGKILL the scheduler: status names it dead at once (its heartbeat is not yet stale).
        snapshot = _sessions(state)
        victim = state.procs["scheduler"]
        os.kill(victim.pid, signal.SIGKILL)
        psutil.wait_procs([p for p in snapshot if p.pid == victim.pid], timeout=10)
        st = recops(cfg, "status")
        assert st.returncode == 1, st.stdout
        assert "dead" in _row(st.stdout, "scheduler")
        for name in ("api-server", "dag-processor", "triggerer", "service"):
            assert "healthy" in _row(st.stdout, name) and "dead" not in _row(st.stdout, name)

        # `up` starts the dead one again, on the same platform.
        t1 = time.monotonic()
        again = recops(cfg, "up")
        print(f"scheduler restarted by recops up in {time.monotonic() - t1:.1f} s")
        assert again.returncode == 0 and "scheduler started" in again.stdout, again.stdout
        restarted = platform_state.platform_state(settings)
        assert restarted is not None and restarted.procs["scheduler"].pid != victim.pid
        assert restarted.procs["api-server"] == state.procs["api-server"]
        assert recops(cfg, "status").returncode == 0
        snapshot += _sessions(restarted)
    finally:
        down = recops(cfg, "down")
    assert down.returncode == 0 and "recops is down" in down.stdout, down.stdout + down.stderr
    assert running(snapshot) == []
    assert not platform_state.state_path(settings).exists()
    for port in (ap, sp):  # the ports are free again
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
    again = recops(cfg, "down")
    assert again.returncode == 0 and "not up" in again.stdout
    st = recops(cfg, "status")
    assert st.returncode == 1 and "not up" in st.stdout


@pytest.mark.timeout(1800)
def test_up_on_postgres_without_a_champion(tmp_path: Path, fresh_database: str) -> None:
    import psycopg

    from recops.config import load_settings

    settings = load_settings(overrides={"home": tmp_path / "home", **FAST,
                                        "stores.airflow_db": "postgres",
                                        "stores.postgres_dsn": fresh_database})
    cfg = _config(settings)
    t0 = time.monotonic()
    up = recops(cfg, "up", "--airflow-port", free_port())
    print(f"recops up (PostgreSQL): {time.monotonic() - t0:.1f} s wall, load {os.getloadavg()}")
    state = platform_state.platform_state(settings)
    assert up.returncode == 0 and state is not None, up.stdout + up.stderr
    snapshot = _sessions(state)
    try:
        lines = [line for line in up.stdout.splitlines() if "no champion" in line]
        assert len(lines) == 1 and "`recops run`" in lines[0], up.stdout
        assert state.service_url is None and platform_state.SERVICE not in state.procs
        st = recops(cfg, "status")
        assert st.returncode == 0, st.stdout
        assert "not started" in _row(st.stdout, "service")
        assert "healthy" in _row(st.stdout, "triggerer")
        # Airflow's metadata is in this PostgreSQL database, run by the LocalExecutor.
        assert not (settings.paths.airflow_home / "airflow.db").exists()
        with psycopg.connect(fresh_database.replace("+psycopg", "")) as conn:
            jobs = {r[0] for r in conn.execute("SELECT job_type FROM job WHERE state = 'running'")}
        assert jobs >= {"SchedulerJob", "TriggererJob", "DagProcessorJob"}
        assert "Loaded executor: :LocalExecutor:" in Path(state.procs["scheduler"].log).read_text()
        workers = [" ".join(p.cmdline()) for p in members(state.procs["scheduler"])]
        assert any("LocalExecutor" in w for w in workers), workers
        # The watcher ran under the scheduler; with no feedback its task skips: run success.
        assert _watcher_ran(state)["state"] == "success"
    finally:
        down = recops(cfg, "down")
    assert down.returncode == 0 and "recops is down" in down.stdout, down.stdout + down.stderr
    assert running(snapshot) == []


def _stale_state(settings: Any) -> dict[str, Any]:
    """A state file naming this test's own PID under another start time (a reused PID)."""
    me = psutil.Process()
    rec = ProcRecord("scheduler", me.pid, me.create_time() - 500, None, "gone.log")
    state = platform_state.PlatformState(
        home=str(settings.paths.home), airflow_host="127.0.0.1", airflow_port=free_port(),
        service_host="127.0.0.1", service_port=free_port(), password_file="nowhere",
        started_at="2026-01-01T00:00:00+00:00", procs={"scheduler": rec})
    platform_state.state_path(settings).parent.mkdir(parents=True, exist_ok=True)
    platform_state.state_path(settings).write_text(json.dumps(state.to_dict()))
    return state.to_dict()


def test_bad_ports_and_stale_state_start_nothing(world: dict[str, Any]) -> None:
    settings, cfg = world["settings"], world["config"]
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    for args, message in (
            (("--airflow-port", 0), "platform.airflow_port"),
            (("--service-port", 70000), "serving.port"),
            (("--airflow-port", "http"), "not a valid integer"),
            (("--timeout", -1), "--timeout must be a positive number"),
            (("--host", "no-such-host.invalid"), "not an address of this machine")):
        got = recops(cfg, "up", *args)
        assert got.returncode == 2, got.stdout + got.stderr
        assert message in got.stdout + got.stderr
    port = free_port()
    got = recops(cfg, "up", "--airflow-port", port, "--service-port", port)
    assert got.returncode == 2 and f"both given port {port}" in got.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        got = recops(cfg, "up", "--service-port", taken)
        assert got.returncode == 2 and f"port {taken} on 127.0.0.1 is not free" in got.stderr
    assert not platform_state.state_path(settings).exists()
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before

    # A stale state file (its PID reused by this very test): status and down say so, and
    # signal nothing.
    _stale_state(settings)
    st = recops(cfg, "status")
    assert st.returncode == 1 and "not up" in st.stdout
    assert "reused" not in st.stdout  # not up: no table
    down = recops(cfg, "down")
    assert down.returncode == 0 and "stale state removed" in down.stdout, down.stdout
    assert not platform_state.state_path(settings).exists() and psutil.Process().is_running()


@pytest.mark.timeout(900)
def test_a_start_that_times_out_leaves_nothing(world: dict[str, Any]) -> None:
    settings, cfg = world["settings"], world["config"]
    _stale_state(settings)  # replaced by `up`, whose PID must not be signalled
    got = recops(cfg, "up", "--timeout", 3)
    assert got.returncode == 2 and "not healthy in time" in got.stderr, got.stdout + got.stderr
    assert not platform_state.state_path(settings).exists() and psutil.Process().is_running()
    logs = settings.paths.platform / "logs"
    assert (logs / "api-server.log").exists()
    # Nothing of the sessions it started runs: no airflow process has this home in its env.
    left = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("AIRFLOW_HOME") == str(settings.paths.airflow_home):
                left.append(p)
        except psutil.Error:
            continue
    assert running(left) == []
