"""Worker processes from settings (serving.workers), and the frozen heap of a worker."""

from __future__ import annotations

import gc
import json
import weakref

import httpx
import psutil
import pytest

from recops.config import load_settings
from recops.environment import child_env
from recops.errors import ConfigError
from serving.runtime import freeze_heap


@pytest.mark.parametrize("value", ["-1", "many", "2.5", "1000"])
def test_bad_worker_counts_name_the_setting(monkeypatch, value) -> None:
    monkeypatch.setenv("RECOPS_SERVING__WORKERS", value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "serving.workers" in str(err.value) and "RECOPS_SERVING__WORKERS" in str(err.value)


@pytest.mark.parametrize(("value", "workers"), [(None, "cpu_count"), (0, "cpu_count"), (3, 3)])
def test_bentoml_gets_the_worker_count(tmp_path, value, workers) -> None:
    s = load_settings(overrides={"home": tmp_path, "serving.workers": value})
    got = json.loads(child_env(s)["BENTOML_CONFIG_OVERRIDES"])
    assert got["services"]["recops"]["workers"] == workers


def test_access_log_and_request_spans_are_off_unless_asked_for(tmp_path) -> None:
    off = json.loads(child_env(load_settings(overrides={"home": tmp_path}))[
        "BENTOML_CONFIG_OVERRIDES"])
    assert off["services"]["recops"]["logging"] == {"access": {"enabled": False}}
    # OpenTelemetry's middleware skips every path (a served answer carries no span id: see
    # test_two_workers_serve)
    assert off["services"]["recops"]["tracing"] == {"excluded_urls": [".*"]}
    on = json.loads(child_env(load_settings(overrides={
        "home": tmp_path, "serving.access_log": True, "serving.request_tracing": True}))[
        "BENTOML_CONFIG_OVERRIDES"])
    assert on["services"]["recops"]["logging"] == {"access": {"enabled": True}}
    assert "tracing" not in on["services"]["recops"]


@pytest.mark.parametrize("key", ["serving.access_log", "serving.max_batch"])
def test_bad_serving_switches_name_the_setting(tmp_path, key) -> None:
    with pytest.raises(ConfigError, match=key):
        load_settings(overrides={"home": tmp_path, key: "sometimes" if "log" in key else 0})


def test_freeze_heap_keeps_live_objects_out_of_full_collections() -> None:
    class Node:
        other: Node

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the cyclic collector frees it
    alive = weakref.ref(a)
    try:
        assert freeze_heap() > 0
        assert not any(o is a for o in gc.get_objects(2))  # full collections skip it
        del a, b  # garbage now, still frozen: the next freeze_heap (after a swap) frees it
        gc.collect()
        assert alive() is not None
        freeze_heap()
        assert alive() is None
    finally:
        gc.unfreeze()


@pytest.mark.integration
@pytest.mark.slow
def test_two_workers_serve(world, tmp_path_factory) -> None:
    from tests.serving.conftest import start_server

    # The world's own settings: its settings.yaml is rewritten by every server another test
    # starts (an auth token, another online store), so it is not read back here.
    s = world.settings.model_copy(update={
        "serving": world.settings.serving.model_copy(update={"workers": 2})})
    srv = start_server(s, tmp_path_factory.mktemp("workers") / "bentoml.log")
    try:
        workers = [p for p in psutil.Process(srv.proc.pid).children(recursive=True)
                   if "_bentoml_impl.worker.service" in " ".join(p.cmdline())]
        assert len(workers) == 2
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for n in range(20):
                r = c.post("/recommend", json={"user_id": 1 + n % 5, "k": 3})
                assert r.status_code == 200, r.text
                assert len(r.json()["items"]) == 3
                # serving.request_tracing is off: BentoML made no span for the request (with
                # one, its id comes back in this header)
                assert "x-bentoml-request-id" not in r.headers
    finally:
        srv.stop()
