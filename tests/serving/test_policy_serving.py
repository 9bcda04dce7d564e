"""An exploring serving policy over HTTP against a real `bentoml serve`: every served list is in
the impression log before the answer, with the propensity of each shown item; /feedback's
request_id joins a click to its list; a bad request_id is a clear 400 that stores nothing."""

from __future__ import annotations

import re

import httpx
import pytest

from recops.core.feedback import FeedbackLog
from recops.policy.evaluate import evaluate
from recops.policy.impressions import ImpressionLog
from recops.policy.policies import Greedy
from tests.serving.conftest import build_world, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EPSILON, TOP_N, K = 0.5, 8, 4


@pytest.fixture(scope="module")
def explore(tmp_path_factory: pytest.TempPathFactory):
    world = build_world(tmp_path_factory.mktemp("policy") / "home",
                        **{"serving.policy": "epsilon_greedy", "serving.explore_epsilon": EPSILON,
                           "serving.policy_top_n": TOP_N})
    srv = start_server(world.settings, tmp_path_factory.mktemp("policylogs") / "bentoml.log")
    yield world, srv
    srv.stop()


def post(srv, path, body):
    return httpx.post(srv.url + path, json=body, timeout=30)


def test_each_served_list_is_logged_with_its_propensities(explore) -> None:
    world, srv = explore
    log = ImpressionLog(world.settings.paths.feedback)
    answers = []
    for n in range(80):
        r = post(srv, "/recommend", {"user_id": 1 + n % 40, "k": K})
        assert r.status_code == 200, r.text
        answers.append(r.json())
        # Durable before the answer: the list is in the log when the client reads it.
        assert log.count() == n + 1
    records = {row.request_id: row for row in log.read(0)[0].itertuples()}
    explored = 0
    for a in answers:
        assert re.fullmatch(r"[0-9a-f]{32}", a["request_id"])
        assert a["policy"] == f"epsilon_greedy(epsilon={EPSILON:g},top_n={TOP_N})"
        rec = records[a["request_id"]]
        shown = [i["item_id"] for i in a["items"]]
        assert rec.items == shown and len(shown) == K and rec.user_id == a["user_id"]
        assert rec.model == a["model"] and rec.policy == "epsilon_greedy"
        n = len(rec.candidates)
        assert n == TOP_N and set(shown) <= set(rec.candidates)
        for j, item in enumerate(shown):
            top = rec.candidates[j] == item
            assert rec.propensities[j] == pytest.approx((1 - EPSILON) * top + EPSILON / n)
        explored += shown != rec.candidates[:K]
    # About half the lists were drawn at random (a random draw can equal the top-k, rarely).
    assert 20 <= explored <= 60, explored


def test_feedback_request_id_joins_a_click_to_its_list(explore) -> None:
    world, srv = explore
    a = post(srv, "/recommend", {"user_id": 3, "k": K}).json()
    item = a["items"][1]["item_id"]
    r = post(srv, "/feedback", {"user_id": 3, "item_id": item, "event_type": "click",
                                "request_id": a["request_id"]})
    assert r.status_code == 200, r.text
    rows, _ = FeedbackLog(world.settings.paths.feedback).read(0)
    assert rows[rows.request_id == a["request_id"]].item_id.tolist() == [item]
    got = evaluate(world.settings, Greedy(), ["click"])
    assert got.clicks == 1 and got.logged_policies == {a["policy"]: got.lists}


@pytest.mark.parametrize(("request_id", "message"), [
    (12345, "Input should be a valid string"),
    ("", "at least 1 character"),
    ("has space", "should match pattern"),
    ("x" * 129, "at most 128 characters"),
    (["a"], "Input should be a valid string"),
])
def test_a_bad_request_id_is_a_clear_400_and_stores_nothing(explore, request_id, message) -> None:
    world, srv = explore
    log = FeedbackLog(world.settings.paths.feedback)
    n = log.count()
    r = post(srv, "/feedback", {"user_id": 3, "item_id": 10, "event_type": "click",
                                "request_id": request_id})
    assert r.status_code == 400 and message in r.text, r.text
    assert log.count() == n
    # /recommend takes no request id from the client: an unknown field, refused.
    r = post(srv, "/recommend", {"user_id": 3, "request_id": "abc"})
    assert r.status_code == 400 and "Extra inputs are not permitted" in r.text


def test_docs_declare_request_id(explore) -> None:
    spec = httpx.get(explore[1].url + "/docs.json", timeout=30).json()
    body = spec["paths"]["/feedback"]["post"]["requestBody"]["content"]["application/json"]
    schema = body["schema"]
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    assert "request_id" in schema["properties"] and schema["additionalProperties"] is False
    assert "impression log" in spec["paths"]["/recommend"]["post"]["responses"]["503"][
        "description"]
