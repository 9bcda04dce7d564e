"""Schema-driven fuzzing of the HTTP API (schemathesis) against a real `bentoml serve`: a few
hundred generated requests per endpoint, valid and invalid, from the served /docs.json."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.serving.conftest import World, build_world, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Per endpoint and mode: schemathesis generates this many valid and this many invalid
# requests (wrong types, missing and unknown fields, other media types): ~300 an endpoint.
CASES = 150
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
ENDPOINTS = ("/recommend", "/feedback", "/similar")


def valid_bodies(world: World, path: str) -> list[dict]:
    """Requests that must be served (2xx): users and items the served model knows. Generated
    item ids are mostly outside the catalogue (404), so without these a /feedback or /similar
    that never answered 200 would pass."""
    users = sorted(int(u) for u in world.interactions.user_id.unique())[:2]
    items = [int(i) for i in world.items.item_id[:3]]
    return {
        "/recommend": [{"user_id": users[0]}, {"user_id": users[1], "k": 3,
                                                "context_items": items[:2]}],
        "/feedback": [{"user_id": users[0], "item_id": items[0], "event_type": "view"},
                      {"user_id": users[1], "item_id": items[1], "event_type": "rating",
                       "rating": 4.0, "event_id": "fuzz-valid-1"},
                      {"user_id": users[1], "item_id": items[2], "event_type": "click",
                       "timestamp": "2026-01-02T03:04:05+00:00"}],
        "/similar": [{"item_id": items[0]}, {"item_id": items[1], "k": 3}],
    }[path]


@pytest.fixture(scope="module")
def fuzz_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    # Its own world: generated feedback must not change the histories other tests read.
    return build_world(tmp_path_factory.mktemp("fuzz") / "home")


@pytest.fixture(scope="module")
def fuzz_server(fuzz_world: World, tmp_path_factory: pytest.TempPathFactory):
    srv = start_server(fuzz_world.settings, tmp_path_factory.mktemp("fuzzlogs") / "bentoml.log")
    yield srv
    srv.stop()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["valid", "invalid"])
@pytest.mark.parametrize("path", ENDPOINTS)
def test_generated_requests_get_no_5xx_and_match_the_schema(fuzz_world, fuzz_server, path,
                                                            mode):
    # schemathesis' own pytest loader (from_fixture) breaks on pytest 9; hypothesis drives it.
    schema = schemathesis.openapi.from_url(fuzz_server.url + "/docs.json")
    operation = schema[path]["POST"]
    seen: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=CASES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case) -> None:
        seen.append(case.call_and_validate(checks=CHECKS, timeout=30).status_code)

    check()
    assert len(seen) >= CASES // 2, "hypothesis generated too few requests"
    if mode is GenerationMode.POSITIVE and path == "/recommend":
        # any generated user id is valid there (unknown users get the popular fallback)
        assert 200 in seen, "no generated valid request was served"
    if mode is GenerationMode.POSITIVE:
        # Valid requests on known users and items, under the same checks: each is served.
        for body in valid_bodies(fuzz_world, path):
            case = operation.Case(body=body, media_type="application/json")
            got = case.call_and_validate(checks=CHECKS, timeout=30)
            assert 200 <= got.status_code < 300, (body, got.status_code, got.text)
