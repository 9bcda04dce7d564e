"""Two replicas share one durable feedback log in PostgreSQL; one is SIGKILLed under load.

Every event a replica acknowledged must be in the log, once, and reach the next retrain's
collect stage; retries of unanswered requests on the surviving replica are stored once.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pandas as pd
import pytest
from pydantic import SecretStr

from recops.config import FeedbackSettings
from recops.core.feedback import open_log
from tests.conftest import require_service
from tests.serving.conftest import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PG_DSN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
N_EVENTS, CONCURRENCY, KILL_AFTER = 600, 16, 150


@pytest.fixture
def pg_settings(world):
    require_service("PostgreSQL", "127.0.0.1", 5432)
    table = "t_replicas_" + uuid.uuid4().hex[:10]
    s = world.settings
    settings = s.model_copy(update={
        "stores": s.stores.model_copy(update={"postgres_dsn": SecretStr(PG_DSN)}),
        "feedback": FeedbackSettings(backend="postgres", table=table)})
    yield settings
    import psycopg

    with psycopg.connect(PG_DSN.replace("+psycopg", ""), autocommit=True) as c:
        c.execute(f"DROP TABLE IF EXISTS {table}")
    world.settings.save()  # later modules read the world's own settings back


@pytest.fixture
def replicas(pg_settings, tmp_path):
    servers = [Server(pg_settings, tmp_path / f"replica{i}.log") for i in range(2)]
    try:
        for srv in servers:
            srv.wait_ready()
        yield servers
    finally:
        for srv in servers:
            srv.stop()


def kill(server: Server) -> None:
    """SIGKILL the replica: `bentoml serve` and its workers (each in a session of its own)."""
    import psutil

    root = psutil.Process(server.proc.pid)
    for p in [*root.children(recursive=True), root]:
        p.send_signal(signal.SIGKILL)


async def drive(servers: list[Server], bodies: list[dict]) -> tuple[dict[str, dict], int]:
    """Send every event (alternating replicas), SIGKILL replica 0 after KILL_AFTER acks.

    A request that gets no answer is retried on the other replica, as a client would, up to
    three tries. Returns the acknowledged replies by event id and how many tries failed.
    """
    acked: dict[str, dict] = {}
    failures = 0
    killed = asyncio.Event()
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(c: httpx.AsyncClient, n: int, body: dict) -> None:
        nonlocal failures
        async with sem:
            for attempt in range(3):
                srv = servers[(n + attempt) % 2]
                try:
                    r = await c.post(srv.url + "/feedback", json=body)
                except httpx.HTTPError:
                    failures += 1
                    continue
                if r.status_code == 200 and r.json()["accepted"]:
                    acked[body["event_id"]] = r.json()
                    if len(acked) >= KILL_AFTER and not killed.is_set():
                        killed.set()
                        kill(servers[0])
                    return
                failures += 1

    async with httpx.AsyncClient(timeout=30,
                                 limits=httpx.Limits(max_connections=CONCURRENCY)) as c:
        await asyncio.gather(*(one(c, n, b) for n, b in enumerate(bodies)))
    assert killed.is_set(), "the load ended before the kill"
    return acked, failures


def test_no_acknowledged_event_is_lost_when_a_replica_is_killed(replicas, pg_settings, world):
    from recops.orchestration import continual

    items = [int(i) for i in world.items.item_id]
    t0 = datetime(2026, 6, 1, tzinfo=UTC)
    bodies = [{"user_id": 770_000_000 + n % 50, "item_id": items[n % len(items)],
               "event_type": "view", "timestamp": (t0 + timedelta(seconds=n)).isoformat(),
               "event_id": f"ev-{n}"} for n in range(N_EVENTS)]
    acked, failures = asyncio.run(drive(replicas, bodies))
    assert replicas[0].proc.poll() is not None  # it was killed, not stopped
    assert failures > 0  # the kill cut some requests off
    # Every event got an answer in the end (retried on the survivor).
    assert len(acked) == N_EVENTS
    log = open_log(pg_settings)
    df, _ = log.read(0)
    stored = df["event_id"].tolist()
    assert set(acked) <= set(stored)  # nothing acknowledged is lost
    assert len(stored) == len(set(stored))  # nothing is stored twice
    offsets = {eid: r["offset"] for eid, r in acked.items()}
    assert len(set(offsets.values())) == N_EVENTS  # one record per event, duplicates included
    # The next retrain reads the shared log through the same interface and sees them all.
    col = continual.collect(pg_settings, "replicas-" + uuid.uuid4().hex[:6])
    batch = pd.read_parquet(col["batch"])
    got = set(zip(batch.user_id, batch.item_id, batch.event_timestamp, strict=True))
    want = {(b["user_id"], b["item_id"], pd.Timestamp(b["timestamp"])) for b in bodies}
    assert want <= got and col["log"] == f"postgres:{pg_settings.feedback.table}"
