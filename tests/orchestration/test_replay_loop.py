"""The loop closed under the scheduler, with nobody stepping in: `recops up` on fast settings,
`recops replay` plays the later events as live users; the watcher fires the asset, the retrain
runs under the scheduler and its gate promotes, the running service serves the new model; no
request failed, no acknowledged event was lost; `recops down` leaves no process.

That full loop takes ~10 min: it is marked slow. The default run keeps its scheduler link, fast:
enough logged feedback makes the watcher fire the asset, and that asset event (not the daily
slot) starts a recops_retrain run, which is not waited for."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from recops import schema
from recops.core.processes import members
from recops.core.supervisor import free_port
from recops.orchestration import platform_state
from tests.orchestration.platform_cli import FINISHED, recops, running, wait_for_runs

pytestmark = pytest.mark.integration

# 200 users x 100 items: with 60 users, the newest period's test users were too few (27) and
# a 3-user activity segment "regressed" by 23% for a challenger better by 43% overall, so the
# gate (rightly, by its rule) refused it. Model and training as tests/dags/tiny.py.
LOOP: dict[str, Any] = {
    "data.dataset": "synthetic", "data.synthetic.n_users": 200, "data.synthetic.n_items": 100,
    "data.synthetic.n_interactions": 9000, "data.synthetic.days": 30,
    "model.d_model": 16, "model.n_layers": 1, "model.n_heads": 1, "model.max_len": 20,
    "train.epochs": 10, "train.lr": 5e-3, "train.batch_size": 32, "train.num_threads": 1,
    # The platform: one service worker, one task slot, the watcher every 15 s.
    "serving.workers": 1, "platform.parallelism": 1, "platform.feedback_watch_minutes": 0.25,
    "platform.min_new_events": 600,
}
CHAMPION_EPOCHS = 2  # a first model trained briefly: it beats popularity, retraining beats it
PLAYED, HELD = 800, 60  # events played before the retrain, and kept back to play after it


@pytest.fixture(scope="module")
def loop_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A home whose champion was trained on the synthetic data's first 20 days."""
    from recops.config import load_settings
    from recops.data.synthetic import generate_from_settings
    from recops.data.tables import Tables, stage
    from recops.orchestration import pipeline

    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("RECOPS_")]:
            mp.delenv(key)
        home = tmp_path_factory.mktemp("loop") / "home"
        settings = load_settings(overrides={"home": home, **LOOP})
        first = settings.model_copy(update={"train": settings.train.model_copy(
            update={"epochs": CHAMPION_EPOCHS})})
        full = generate_from_settings(settings)
        ev = full.interactions
        ts = ev[schema.EVENT_TIMESTAMP]
        cut = ts.min().normalize() + timedelta(days=20)
        staged = stage(settings.paths.staging,
                       Tables(ev[ts < cut], full.items, full.users, source="test:first-20-days"))
        run_id = "champion"
        version = pipeline.validate(settings, run_id, staged)["dataset_version"]
        pipeline.features(settings, run_id, version)
        rdir = pipeline.train(first, run_id, version)["run_dir"]
        pipeline.evaluate(first, run_id, rdir)
        pipeline.gate(first, run_id, rdir)
        assert pipeline.register(first, run_id, rdir)["promoted"]
        return {"settings": settings,
                "config": settings.save(home.parent / "recops.yaml")}


def _retrain_run(state: platform_state.PlatformState, recops_run_id: str,
                 timeout: float = 600) -> dict[str, Any]:
    """The recops_retrain Airflow run behind a recops run id, once finished."""
    from recops.orchestration.pipeline import safe_run_id

    def finished(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
        mine = [r for r in runs if safe_run_id(r["dag_run_id"]) == recops_run_id]
        return mine[0] if mine and mine[0]["state"] in FINISHED else None

    return dict(wait_for_runs(state, "recops_retrain", finished, params={"limit": 100},
                              timeout=timeout, what=f"retrain run {recops_run_id} unfinished"))


def _first_start_done(state: platform_state.PlatformState, timeout: float = 300) -> None:
    """Wait for recops_retrain's first-start run (its latest daily slot, run at unpause) to
    finish: started after it, the replay's first events would race it into a tiny batch."""
    wait_for_runs(state, "recops_retrain",
                  lambda runs: bool(runs) and all(r["state"] in FINISHED for r in runs),
                  params={"limit": 100}, timeout=timeout,
                  what="recops_retrain's first-start run not finished")


def _asset_events(state: platform_state.PlatformState) -> list[dict[str, Any]]:
    from recops.orchestration.platform_health import AirflowClient

    client = AirflowClient(state, timeout=30)
    try:
        return list(client.request("GET", "assets/events", params={
            "source_dag_id": "recops_feedback_watch", "order_by": "timestamp"})["asset_events"])
    finally:
        client.close()


def _created_by(events: list[dict[str, Any]], run: dict[str, Any]) -> dict[str, Any]:
    """The one watcher asset event that created ``run`` (a recops_retrain run), checked against
    the run's own upstream asset events."""
    mine = [e for e in events if any(r["dag_id"] == "recops_retrain"
                                     and r["run_id"] == run["dag_run_id"]
                                     for r in e["created_dagruns"])]
    assert len(mine) == 1, (run, events)
    event = mine[0]
    assert (event["source_dag_id"], event["source_task_id"]) == ("recops_feedback_watch",
                                                                 "check_feedback"), event
    return event


def _upstream_event_ids(state: platform_state.PlatformState, run: dict[str, Any]) -> set[int]:
    from recops.orchestration.platform_health import AirflowClient

    client = AirflowClient(state, timeout=30)
    try:
        got = client.request("GET", f"dags/recops_retrain/dagRuns/{run['dag_run_id']}/"
                                    "upstreamAssetEvents")
        return {e["id"] for e in got["asset_events"]}
    finally:
        client.close()


def _of_home(settings: Any) -> list[psutil.Process]:
    """Every process started for this home (Airflow's and the service's carry it in env)."""
    out = []
    for p in psutil.process_iter():
        try:
            env = p.environ()
        except psutil.Error:
            continue
        if env.get("RECOPS_HOME") == str(settings.paths.home):
            out.append(p)
    return out


def _keys(events: Any) -> set[tuple[int, int, int]]:
    """(user, item, microseconds since the epoch) of each event."""
    import pandas as pd

    us = pd.to_datetime(events[schema.EVENT_TIMESTAMP], utc=True).dt.as_unit("us")
    return set(zip(events[schema.USER_ID].astype(int), events[schema.ITEM_ID].astype(int),
                   us.astype("int64"), strict=True))


@pytest.mark.timeout(900)
def test_enough_feedback_fires_the_asset_and_its_event_starts_a_retrain(tmp_path: Path) -> None:
    from recops.core.feedback import FeedbackLog
    from tests.dags.tiny import tiny_settings

    n = 5
    settings = tiny_settings(tmp_path / "home", **{
        "serving.workers": 1, "platform.parallelism": 1, "platform.feedback_watch_minutes": 0.25,
        "platform.min_new_events": n})
    cfg = settings.save(tmp_path / "recops.yaml")
    up = recops(cfg, "up", "--airflow-port", free_port())  # no champion: no service
    state = platform_state.platform_state(settings)
    assert up.returncode == 0 and state is not None, up.stdout + up.stderr
    snapshot = [p for rec in state.procs.values() for p in members(rec)]
    try:
        _first_start_done(state)  # no feedback yet: its collect skips
        logged_at = datetime.now(UTC)
        FeedbackLog(settings.paths.feedback).append_many([  # what /feedback logs
            {schema.USER_ID: 1, schema.ITEM_ID: 10 + i, schema.RATING: 4.0,
             schema.EVENT_TYPE: "rating", schema.EVENT_TIMESTAMP: f"2026-01-01T00:00:0{i}+00:00"}
            for i in range(n)])
        run = wait_for_runs(
            state, "recops_retrain",
            lambda runs: next((r for r in runs if r["run_type"] == "asset_triggered"), None),
            params={"limit": 100}, timeout=600, what="no asset-triggered recops_retrain run")
        event = _created_by(_asset_events(state), run)
        assert datetime.fromisoformat(event["timestamp"]) >= logged_at, event
        assert event["id"] in _upstream_event_ids(state, run)
        snapshot += [p for rec in state.procs.values() for p in members(rec)]
    finally:
        down = recops(cfg, "down")
    assert down.returncode == 0 and "recops is down" in down.stdout, down.stdout + down.stderr
    assert running(snapshot) == [] and running(_of_home(settings)) == []


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_replay_closes_the_loop_under_the_scheduler(loop_world: dict[str, Any],
                                                    tmp_path: Path) -> None:
    from recops.core.feedback import FeedbackLog
    from recops.core.lake import Lake
    from recops.core.runs import RunDir
    from recops.release import registry

    settings, cfg = loop_world["settings"], loop_world["config"]
    champion = registry.champion_tag(settings)
    t0 = time.monotonic()
    up = recops(cfg, "up", "--airflow-port", free_port(), "--service-port", free_port())
    print(f"recops up: {time.monotonic() - t0:.0f} s, load {os.getloadavg()}")
    state = platform_state.platform_state(settings)
    assert up.returncode == 0 and state is not None, up.stdout + up.stderr
    snapshot: list[psutil.Process] = []
    try:
        _first_start_done(state)
        result = tmp_path / "replay.json"
        replay_started = datetime.now(UTC)
        t1 = time.monotonic()
        rp = recops(cfg, "replay", "--rate", 20, "--limit", PLAYED + HELD, "--after-swap", HELD,
                    "--swap-timeout", 1200, "--output", result, timeout=1800)
        print(f"replay: {time.monotonic() - t1:.0f} s, load {os.getloadavg()}\n{rp.stdout}")
        got = json.loads(result.read_text())
        assert rp.returncode == 0, rp.stdout + rp.stderr

        # Nothing failed; every event acknowledged; the lists before the retrain came from the
        # champion, and the kept-back events were served by a new model.
        assert got["failed"]["total"] == 0, got["failed"]
        assert got["events_played"] == got["acknowledged"] == PLAYED + HELD
        assert got["first_model"] == champion
        assert got["new_model"] not in (None, champion), got["per_model"]
        assert got["after"]["events"] >= HELD

        # The new model was promoted by a recops_retrain run that the watcher's asset event
        # started (not the daily slot), and that run succeeded; the event is the one the
        # watcher emitted for this replay's feedback, and the one that created this run.
        meta = registry.metadata(settings, got["new_model"])
        assert meta["warm_start_from"] == champion
        run = _retrain_run(state, meta["run_id"])
        assert run["state"] == "success", run
        assert run["run_type"] == "asset_triggered", run
        event = _created_by(_asset_events(state), run)
        assert event["id"] in _upstream_event_ids(state, run)
        fired = datetime.fromisoformat(event["timestamp"])
        assert fired >= replay_started, (event, replay_started)
        served = datetime.fromisoformat(got["new_model_first_served_at"])
        print(f"asset event {fired.isoformat()} -> new model served "
              f"{(served - fired).total_seconds():.0f} s later ({run['run_type']} run)")

        # No acknowledged event lost: every one is in the feedback log, and the retrain's batch
        # (every logged event up to its offset) is in the lake, none quarantined.
        log = FeedbackLog(settings.paths.feedback)
        logged, _ = log.read(0)
        assert set(got["acknowledged_events"]) <= set(logged["event_id"])
        rdir = RunDir.of(settings, meta["run_id"])
        metric = rdir.read_json(RunDir.GATE)["checks"]["metric"]
        print(f"gate: {metric['metric']} challenger {metric['challenger']:.4f}, champion "
              f"{metric['champion']:.4f}")
        col = rdir.read_json(RunDir.COLLECT)
        since, _ = log.read(col["from_offset"])
        after, _ = log.read(col["to_offset"])
        batch = since.iloc[:len(since) - len(after)]
        assert len(batch) == col["n_events"] > 0
        assert rdir.read_json(RunDir.VALIDATION)["quarantined_rows"] == 0
        assert _keys(batch) <= _keys(Lake(settings.paths.lake).read(schema.INTERACTIONS))
        snapshot = [p for rec in state.procs.values() for p in members(rec)]
    finally:
        down = recops(cfg, "down")
    assert down.returncode == 0 and "recops is down" in down.stdout, down.stdout + down.stderr
    assert running(snapshot) == [] and running(_of_home(settings)) == []
