"""Airflow on Celery workers for real: `recops up --executor celery --workers 2` on PostgreSQL
with a Redis broker runs recops_pipeline on both workers; a worker SIGKILLed mid-task is
recovered by a retry on the other one; one worker against RabbitMQ runs a task; bad settings
stop `recops up` before anything starts.

Figures (printed; run with -s): the first run's wall time on 2 workers and the time from a
killed worker to the retried task's success. The wall time on 1 worker against 2 workers is
benchmarks/bench_celery.py's.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from recops.core.processes import members, stop_all
from recops.orchestration import platform_state
from recops.orchestration.airflow_runner import airflow_env, free_port
from recops.orchestration.celery_config import node, result_backend
from recops.orchestration.celery_workers import folder, ping, spawn_worker
from recops.orchestration.platform_health import AirflowClient
from tests.conftest import require_service, run_cli_text
from tests.dags.tiny import tiny_settings
from tests.orchestration.platform_cli import FINISHED, recops, running

SLOW = [pytest.mark.integration, pytest.mark.slow]
REDIS_DB = 11  # this test's private broker database on the shared Redis
RABBIT = "amqp://guest:guest@127.0.0.1:5672//"
TASKS = {"ingest", "validate", "features", "train", "evaluate", "gate", "register", "report"}
# No run promotes (NDCG is never 1): no champion, so `up` starts no service, and every run
# does the same work.
NO_PROMOTION = {"gate.floor": 1.0}
# Lost tasks are noticed in tens of seconds, not Airflow's default five minutes.
HEARTBEAT = {"AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
             "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5"}


# ----------------------------------------------------------------------------- fast: bad input


def test_bad_celery_settings_stop_up_with_exit_2(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str],
                                                   home: Path) -> None:
    code, text = run_cli_text(monkeypatch, capsys, "up", "--executor", "celery")
    assert code == 2, text
    assert "platform.executor 'celery' needs stores.airflow_db 'postgres'" in text
    code, text = run_cli_text(monkeypatch, capsys, "up", "--executor", "kubernetes")
    assert code == 2 and "platform.executor" in text and "'kubernetes'" in text, text

    monkeypatch.setenv("RECOPS_STORES__AIRFLOW_DB", "postgres")
    monkeypatch.setenv("RECOPS_STORES__POSTGRES_DSN", "postgresql+psycopg://u@127.0.0.1:1/x")
    code, text = run_cli_text(monkeypatch, capsys, "up", "--executor", "celery", "--workers", "0")
    assert code == 2 and "platform.celery_workers" in text and "greater than or equal to 1" in text
    monkeypatch.setenv("RECOPS_PLATFORM__CELERY_BROKER", "sqs://queue.example")
    code, text = run_cli_text(monkeypatch, capsys, "up", "--executor", "celery")
    assert code == 2, text
    assert "platform.celery_broker" in text and "broker scheme 'sqs'" in text
    assert "RECOPS_PLATFORM__CELERY_BROKER" in text
    assert not (home / "platform" / "state.json").exists()  # nothing started


# ------------------------------------------------------------------------- helpers (for real)


def _database(name: str) -> str:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres",
                         autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def _drop(name: str) -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres",
                         autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _flush_broker_db() -> None:
    import redis

    redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()


def _trigger(client: AirflowClient, conf: dict[str, Any]) -> str:
    body = client.request("POST", "dags/recops_pipeline/dagRuns",
                          json={"logical_date": None, "conf": conf})
    return str(body["dag_run_id"])


def _tis(client: AirflowClient, run_id: str) -> dict[str, dict[str, Any]]:
    body = client.request("GET", f"dags/recops_pipeline/dagRuns/{run_id}/taskInstances")
    return {ti["task_id"]: ti for ti in body["task_instances"]}


def _finish(client: AirflowClient, run_id: str, timeout: float = 1500) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run: dict[str, Any] = client.request("GET", f"dags/recops_pipeline/dagRuns/{run_id}")
        if run["state"] in FINISHED:
            return run
        assert time.monotonic() < deadline, f"run {run_id} not finished in {timeout} s: {run}"
        time.sleep(2)


def _run(client: AirflowClient, conf: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """Trigger recops_pipeline, wait for it; the run and its wall seconds (trigger to end)."""
    t0 = time.monotonic()
    run_id = _trigger(client, conf)
    run = _finish(client, run_id)
    return run, round(time.monotonic() - t0, 1)


def _since(t0: datetime, iso: str | None) -> float | None:
    return round((datetime.fromisoformat(iso) - t0).total_seconds(), 1) if iso else None


def _row(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if f" {name} " in line)


@pytest.fixture(scope="module")
def celery_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`recops up --executor celery --workers 2` on a private PostgreSQL database and Redis db;
    `recops down` after, and no process of the platform left."""
    require_service("Redis", "127.0.0.1", 6379)
    require_service("PostgreSQL", "127.0.0.1", 5432)
    db = f"recops_celery_{uuid.uuid4().hex[:10]}"
    dsn = _database(db)
    _flush_broker_db()
    home = tmp_path_factory.mktemp("celery") / "home"
    settings = tiny_settings(home, **NO_PROMOTION, **{
        "serving.workers": 1, "platform.parallelism": 2, "stores.airflow_db": "postgres",
        "stores.postgres_dsn": dsn, "platform.celery_broker": f"redis://127.0.0.1:6379/{REDIS_DB}"})
    config = settings.save(home.parent / "recops.yaml")
    procs: list[psutil.Process] = []
    with pytest.MonkeyPatch.context() as mp:
        for key, value in HEARTBEAT.items():
            mp.setenv(key, value)
        try:
            t0 = time.monotonic()
            up = recops(config, "up", "--airflow-port", free_port(), "--executor", "celery",
                        "--workers", 2)
            print(f"\nrecops up --executor celery --workers 2: {time.monotonic() - t0:.1f} s")
            state = platform_state.platform_state(settings)
            assert up.returncode == 0 and state is not None, up.stdout + up.stderr
            procs = [p for rec in state.procs.values() for p in members(rec)]
            client = AirflowClient(state, timeout=30)
            try:
                yield {"settings": settings, "config": config, "state": state,
                       "client": client, "up": up.stdout, "procs": procs}
            finally:
                client.close()
        finally:
            after = platform_state.read_state(settings)
            if after is not None:
                procs += [p for rec in after.procs.values() for p in members(rec)]
            down = recops(config, "down")
            _flush_broker_db()
            _drop(db)
    assert down.returncode == 0 and "recops is down" in down.stdout, down.stdout + down.stderr
    assert running(procs) == []


# --------------------------------------------------------------------------------- for real


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_one_worker_against_rabbitmq_runs_a_task(tmp_path: Path, fresh_database: str) -> None:
    """An `airflow celery worker` as `recops up` starts it, on RabbitMQ: it answers ping and
    runs a Celery task sent to its queue, its result stored in PostgreSQL."""
    from celery import Celery

    require_service("RabbitMQ", "127.0.0.1", 5672)
    settings = tiny_settings(tmp_path / "home", **{
        "stores.airflow_db": "postgres", "stores.postgres_dsn": fresh_database,
        "platform.executor": "celery", "platform.celery_broker": RABBIT})
    queue = f"recops-test-{uuid.uuid4().hex[:8]}"  # no other worker of the vhost takes it
    env = airflow_env(settings)
    env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"] = queue
    rec = spawn_worker(settings, "worker-1", env)
    procs = members(rec)
    app = Celery(broker=RABBIT, backend=result_backend(settings), set_as_current=False)
    try:
        t0 = time.monotonic()
        while ping(RABBIT, [node("worker-1")]) != {node("worker-1")}:
            assert members(rec), Path(rec.log).read_text()[-3000:]
            assert time.monotonic() - t0 < 300, "no answer to ping in 300 s"
        print(f"\nRabbitMQ worker answers ping {time.monotonic() - t0:.1f} s after start")
        # celery.accumulate is a task of every Celery app, Airflow's included.
        t1 = time.monotonic()
        got = app.send_task("celery.accumulate", args=[7, "pong"], queue=queue).get(timeout=120)
        print(f"RabbitMQ: a task sent, run and its result read back in "
              f"{time.monotonic() - t1:.2f} s")
        assert list(got) == [7, "pong"], got
        assert psutil.Process(rec.pid).cwd() == str(folder(settings, "worker-1"))
        procs += members(rec)
    finally:
        app.close()
        stop_all([rec])
    assert running(procs) == []


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_pipeline_on_two_celery_workers_survives_a_killed_worker(
        celery_up: dict[str, Any]) -> None:
    settings, config, state = celery_up["settings"], celery_up["config"], celery_up["state"]
    client: AirflowClient = celery_up["client"]
    workers = ["worker-1", "worker-2"]
    assert [n for n in state.procs if n.startswith("worker-")] == workers
    for w in workers:  # each in its own folder, not the checkout
        assert psutil.Process(state.procs[w].pid).cwd() == str(folder(settings, w))

    st = recops(config, "status")
    assert st.returncode == 0, st.stdout + st.stderr
    for w in workers:
        row = _row(st.stdout, w)
        assert "healthy" in row and str(state.procs[w].pid) in row, row
        assert f"{node(w)} answers celery ping" in row, row
    assert "CeleryExecutor" in Path(state.procs["scheduler"].log).read_text()

    # (a) One run on the two workers: every task succeeds, both workers ran some.
    run, cold_s = _run(client, {})
    tis = _tis(client, run["dag_run_id"])
    assert run["state"] == "success", (run, tis)
    assert set(tis) == TASKS and {t["state"] for t in tis.values()} <= {"success", "skipped"}
    hosts = {t["task_id"]: t["hostname"] for t in tis.values()}
    print(f"run 1 (2 workers, first run): {cold_s} s; tasks by worker: {hosts}")
    assert set(hosts.values()) == {node(w) for w in workers}, hosts
    for w in workers:  # task logs stay in the worker's own log folder
        assert list((folder(settings, w) / "logs").rglob("*.log")), w

    # (b) SIGKILL the worker (its whole process session) running `train`, mid-task.
    run_id = _trigger(client, {"epochs": 100})
    deadline = time.monotonic() + 900
    while True:
        train = _tis(client, run_id).get("train", {})
        if train.get("state") == "running" and train.get("hostname"):
            break
        assert train.get("state") not in ("success", "failed"), train
        assert time.monotonic() < deadline, f"train not running in 900 s: {train}"
        time.sleep(0.5)
    victim = next(w for w in workers if node(w) == train["hostname"])
    survivor = next(w for w in workers if w != victim)
    doomed = members(state.procs[victim])
    assert train["pid"] in {p.pid for p in doomed}, (train, doomed)  # the task runs there
    killed_at, killed_wall = time.monotonic(), datetime.now(UTC)
    for proc in doomed:
        proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(doomed, timeout=10)
    run = _finish(client, run_id)
    recovered_s = round(time.monotonic() - killed_at, 1)
    tries = client.request(
        "GET", f"dags/recops_pipeline/dagRuns/{run_id}/taskInstances/train/tries")[
        "task_instances"]
    print(f"killed {victim} (pid {state.procs[victim].pid}) while it ran train; run "
          f"{run['state']} {recovered_s} s after the kill; train tries: "
          f"{[(t['try_number'], t['hostname'], t['state']) for t in tries]}")
    assert run["state"] == "success", (run, tries)
    first, last = tries[0], tries[-1]
    print("after the kill, seconds: try 1 failed by the scheduler "
          f"{_since(killed_wall, first['end_date'])}, try 2 started "
          f"{_since(killed_wall, last['start_date'])}, try 2 succeeded "
          f"{_since(killed_wall, last['end_date'])}")
    assert (first["try_number"], first["hostname"]) == (1, node(victim)), tries
    assert first["state"] in ("failed", "up_for_retry"), tries
    assert (last["try_number"], last["hostname"], last["state"]) == (
        2, node(survivor), "success"), tries

    st = recops(config, "status")
    assert st.returncode == 1 and "dead" in _row(st.stdout, victim), st.stdout
    assert "healthy" in _row(st.stdout, survivor) and "dead" not in _row(st.stdout, survivor)

    # `up` again (the same executor: another one is refused while up) starts the dead worker.
    again = recops(config, "up", "--executor", "celery", "--workers", 2)
    assert again.returncode == 0 and f"{victim} started" in again.stdout, again.stdout
    restarted = platform_state.platform_state(settings)
    assert restarted is not None
    celery_up["procs"] += members(restarted.procs[victim])
    st = recops(config, "status")
    assert st.returncode == 0 and "healthy" in _row(st.stdout, victim), st.stdout
    print(f"first run on 2 workers: {cold_s} s; recovery from a killed worker: {recovered_s} s "
          f"from SIGKILL to the run's success; load {os.getloadavg()}")
