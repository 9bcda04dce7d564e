"""The serving core in-process: masking, reasons, fallbacks, similarity, int8 quantisation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recops.release import registry
from serving.engine import Engine, Query
from tests.serving.conftest import make_checkpoint, meta

IDS = list(range(100, 160))
ITEMS = pd.DataFrame({"item_id": IDS, "title": [f"T{i}" for i in IDS]})
INTER = pd.DataFrame({"item_id": [150] * 5 + [120] * 3 + [101] * 2})


@pytest.fixture
def loaded(settings):
    tag = registry.register(settings, make_checkpoint(IDS, 3), meta("r"), items=ITEMS,
                            interactions=INTER)
    return registry.load(settings, tag)


@pytest.mark.integration  # the real BentoML model store
def test_recommend_masks_history_and_explains(loaded):
    eng = Engine(loaded)
    history = [100, 101, 102, 999]  # 999: an item the model does not know, ignored
    items, fallback = eng.recommend(history, 10)
    ids = [it["item_id"] for it in items]
    assert fallback is None and len(ids) == 10 == len(set(ids))
    assert not set(ids) & {100, 101, 102}
    assert {it["reason"]["because_you_interacted_with"] for it in items} <= {100, 101, 102}
    assert all(it["title"] == f"T{it['item_id']}" for it in items)
    # The reason is the history item nearest to the recommendation.
    v = eng.item_vectors
    for it in items:
        r = eng.index[it["item_id"]]
        sims = {h: float(v[r] @ v[eng.index[h]]) for h in (100, 101, 102)}
        assert it["reason"]["because_you_interacted_with"] == max(sims, key=sims.get)
    unmasked, _ = eng.recommend(history, 60, exclude_seen=False)
    assert {100, 101, 102} <= {it["item_id"] for it in unmasked}


@pytest.mark.integration  # the real BentoML model store
def test_fallbacks(loaded):
    eng = Engine(loaded)
    items, fallback = eng.recommend([], 3)
    assert fallback == "popular" and [it["item_id"] for it in items] == [150, 120, 101]
    items, fallback = eng.recommend([], 3, context_ids=[150])
    assert fallback == "context" and 150 not in [it["item_id"] for it in items]
    items, fallback = eng.recommend([424242], 3)  # only unknown items: nothing to go on
    assert fallback == "popular"


@pytest.mark.integration  # the real BentoML model store
def test_k_larger_than_the_unseen_catalogue(loaded):
    eng = Engine(loaded)
    items, _ = eng.recommend(IDS[:55], 10)
    assert sorted(it["item_id"] for it in items) == IDS[55:]


@pytest.mark.integration  # the real BentoML model store
def test_a_batch_answers_each_request_as_if_it_came_alone(loaded):
    eng = Engine(loaded)
    queries = [Query([100, 101, 102], 10), Query([], 3), Query([], 4, context_ids=[150]),
               Query(IDS[:55], 10), Query([103, 104], 5, exclude_seen=False),
               Query([424242], 2)]
    batch = eng.recommend_many(queries)
    alone = [eng.recommend(list(q.history_ids), q.k, exclude_seen=q.exclude_seen,
                           context_ids=list(q.context_ids or [])) for q in queries]
    assert [f for _, f in batch] == [None, "popular", "context", None, None, "popular"]
    for (got, _), (want, _) in zip(batch, alone, strict=True):
        assert [it["item_id"] for it in got] == [it["item_id"] for it in want]
        assert [it["score"] for it in got] == pytest.approx([it["score"] for it in want],
                                                            abs=1e-5)


@pytest.mark.integration  # the real BentoML model store
def test_similar_excludes_itself_and_ranks_by_cosine(loaded):
    eng = Engine(loaded)
    ranked = eng.similar(eng.index[130], 5)
    assert eng.index[130] not in ranked.indices and 0 not in ranked.indices
    assert ranked.scores == sorted(ranked.scores, reverse=True)


@pytest.mark.integration  # the real BentoML model store
def test_int8_quantisation_keeps_the_ranking_close(loaded):
    f32, q8 = Engine(loaded), Engine(loaded, quantize=True)
    assert q8.quantized and any("quantized" in type(m).__module__ for m in q8.model.modules())
    seq = f32.sequence([f32.index[i] for i in IDS[:15]])
    with torch.inference_mode():
        a, b = f32.model.score(seq)[0, 1:].numpy(), q8.model.score(seq)[0, 1:].numpy()
    assert np.corrcoef(a, b)[0, 1] > 0.95


@pytest.mark.integration  # the real BentoML model store
def test_blocked_items_are_never_listed_and_leave_the_other_scores_alone(loaded):
    """A user's negatives (blocked items) are out of the list whatever exclude_seen, also on
    the popular fallback, and every other item keeps its score."""
    eng = Engine(loaded)
    history = [100, 101, 102]
    free = {it["item_id"]: it["score"] for it in eng.recommend(history, 57)[0]}
    blocked = list(free)[:3]
    for exclude_seen in (True, False):
        (got, _), = eng.recommend_many([Query(history, 57, exclude_seen, None, blocked)])
        assert not {it["item_id"] for it in got} & set(blocked)
    (got, _), = eng.recommend_many([Query(history, 54, True, None, blocked)])
    assert {it["item_id"]: it["score"] for it in got} == {
        i: s for i, s in free.items() if i not in blocked}
    (popular, fallback), = eng.recommend_many([Query([], 5, True, None, [150])])
    assert fallback == "popular" and 150 not in [it["item_id"] for it in popular]
