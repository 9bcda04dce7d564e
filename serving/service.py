"""The recops BentoML service: real-time recommendations from the champion model.

Run with ``recops serve`` (or ``bentoml serve serving.service:Recommender`` with the
environment of ``recops.environment.child_env``). Settings come from ``RECOPS_CONFIG``.
"""

import asyncio
import logging
import os
import threading
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

import bentoml
from bentoml.exceptions import InvalidArgument, NotFound, ServiceUnavailable
from bentoml.validators import ContentType
from pydantic import BaseModel, ConfigDict, Field

from recops.core.idmap import internal_id
from recops.environment import BENTO_SERVICE
from recops.schema import EVENT_TYPES
from serving.batching import MicroBatcher
from serving.contract import Contract
from serving.guard import Guard

if TYPE_CHECKING:  # imported at run time inside the worker, after BentoML set it up
    from prometheus_client import Counter

    from recops.policy.policies import Policy
    from serving.engine import Engine
    from serving.feedback_writer import GroupCommitter
    from serving.search import Searcher

log = logging.getLogger("recops.serving")

# An id as the team writes it: a string (an SKU, a UUID, a slug) or an integer (MovieLens).
Id = Annotated[int, Field(strict=True, ge=0, le=2**62)] | Annotated[
    str, Field(strict=True, min_length=1, max_length=256, pattern=r"^\S(.*\S)?$")]
MAX_CONTEXT = 200
POLL_SECONDS = 1.0  # how often a worker looks at the champion pointer
# A JSON object answer. Without the declared media type BentoML builds a pydantic TypeAdapter
# and its JSON schema for every response (to find the media type): CPU and garbage per request.
JSONObject = Annotated[dict[str, Any], ContentType("application/json")]
# A client's idempotency key or a /recommend request id (uuid4 hex): printable, no spaces.
Token = Annotated[str, Field(strict=True, min_length=1, max_length=128,
                             pattern=r"^[A-Za-z0-9._:~-]+$")]


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Id
    k: Annotated[int, Field(strict=True, ge=1)] = 10
    exclude_seen: Annotated[bool, Field(strict=True)] = True
    context_items: Annotated[list[Id], Field(max_length=MAX_CONTEXT)] = []


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Id
    item_id: Id
    event_type: Literal[EVENT_TYPES]  # type: ignore[valid-type]
    rating: Annotated[float, Field(allow_inf_nan=False)] | None = None
    timestamp: datetime | None = None
    # Idempotency key: a retried request with the same event_id is stored once. Without one, a
    # repeat is recognised by (user, item, type, timestamp), so retries must send the timestamp.
    event_id: Token | None = None
    # The request_id of the /recommend answer the item was shown in: joins the event to the
    # impression log (recops policy evaluate counts it as a click on that list's item).
    request_id: Token | None = None


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Strict: a number or a list is refused (400), not turned into text. The length bound is a
    # setting (serving.max_query_chars), checked in the handler.
    query: Annotated[str, Field(strict=True)]
    user_id: Id | None = None
    k: Annotated[int, Field(strict=True, ge=1)] = 10
    exclude_seen: Annotated[bool, Field(strict=True)] = False


class SimilarRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: Id
    k: Annotated[int, Field(strict=True, ge=1)] = 10


_METRICS: "dict[str, Counter]" = {}


def _metrics() -> "dict[str, Counter]":
    """Counters, made once per process after BentoML has set up Prometheus' multiprocess dir."""
    if not _METRICS:
        from prometheus_client import Counter

        _METRICS["fallback"] = Counter("recops_fallback_total",
                                       "Recommendations served by a fallback", ["kind"])
        _METRICS["feedback"] = Counter("recops_feedback_total",
                                       "Feedback events durably logged", ["event_type"])
        _METRICS["commits"] = Counter("recops_feedback_commits_total",
                                      "Durable writes (one fsync or transaction) of a feedback "
                                      "batch")
        _METRICS["push_fail"] = Counter("recops_feedback_push_failures_total",
                                        "Logged feedback events the online store did not take")
        _METRICS["swap"] = Counter("recops_model_swaps_total", "Champion models loaded")
        _METRICS["impressions"] = Counter("recops_impression_commits_total",
                                          "Durable writes of a batch of served lists")
        _METRICS["explored"] = Counter("recops_explored_lists_total",
                                       "Lists the serving policy drew at random")
    return _METRICS


# Workers (one per core by default, serving.workers) come from recops.environment.child_env.
@bentoml.service(name=BENTO_SERVICE, traffic={"timeout": 30})
class Recommender:
    """Serves the current champion; a promotion is picked up by a background watcher."""

    def __init__(self) -> None:
        import torch

        from recops.config import load_settings
        from recops.core.feedback import open_log
        from serving.feedback_writer import GroupCommitter
        from serving.online import OnlineFeatures

        self.settings = load_settings()
        # Requests are small: one thread each keeps concurrent requests from fighting for cores.
        torch.set_num_threads(1)
        self.online = OnlineFeatures(self.settings)
        self.metrics = _metrics()
        self.feedback_log = open_log(self.settings)
        self.committer = GroupCommitter(
            self.feedback_log, self.online.push_many,
            max_batch=self.settings.feedback.max_batch,
            on_logged=lambda e: self.metrics["feedback"].labels(event_type=e["event_type"]).inc(),
            on_commit=self.metrics["commits"].inc, on_push_failed=self.metrics["push_fail"].inc)
        self.policy, self.impressions = self._policy()
        from serving.availability import Availability

        self.availability = Availability(self.settings.paths.lake)
        self._pointer = self.settings.paths.bentoml_home / "champion.json"
        self._stamp = self._pointer_stamp()
        self.engine = self._load("champion")
        self.batcher = MicroBatcher(self._recommend_batch,
                                    max_batch=self.settings.serving.max_batch)
        self._searcher: Searcher | None = None  # of the current engine, made lazily
        self._search_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="champion-watcher", daemon=True)
        self._watcher.start()

    def _policy(self) -> "tuple[Policy, GroupCommitter | None]":
        """The serving policy, and the impression log's group committer (None when off)."""
        import numpy as np

        from recops.policy.impressions import open_impressions
        from recops.policy.policies import from_settings
        from serving.feedback_writer import GroupCommitter

        self._rng = np.random.default_rng()  # fresh entropy per worker; the log keeps the draw
        policy = from_settings(self.settings.serving)
        if not self.settings.serving.impressions_logged():
            return policy, None
        return policy, GroupCommitter(open_impressions(self.settings), lambda _: None,
                                      max_batch=self.settings.feedback.max_batch,
                                      on_commit=self.metrics["impressions"].inc)

    # --- model lifecycle ------------------------------------------------------------------------
    def _load(self, tag: str) -> "Engine":
        from recops.release import registry
        from serving.engine import Engine
        from serving.runtime import freeze_heap

        engine = Engine(registry.load(self.settings, tag), quantize=self.settings.serving.quantize)
        self.metrics["swap"].inc()
        log.info("serving %s (%s, %d items, quantized=%s)", engine.tag, engine.kind,
                 engine.n_items, engine.quantized)
        freeze_heap()  # full GC passes over the frameworks' objects stalled requests
        return engine

    def _pointer_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self._pointer)
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_ino

    def _watch(self) -> None:
        from recops.errors import RecopsError
        from recops.release import registry

        while not self._stop.wait(POLL_SECONDS):
            stamp = self._pointer_stamp()
            if stamp == self._stamp:
                continue
            self._stamp = stamp
            try:
                tag = registry.champion_tag(self.settings)
                if tag and tag != self.engine.tag:
                    # Build the new engine fully, then swap one reference: requests already
                    # running finish on the old model, none waits or fails.
                    self.engine = self._load(tag)
            except (RecopsError, OSError, RuntimeError) as exc:
                log.error("could not load the new champion, still serving %s: %s",
                          self.engine.tag, exc)

    def __is_ready__(self) -> bool:
        return self.engine is not None

    # --- API ----------------------------------------------------------------------------------
    def _check_k(self, k: int) -> None:
        if k > self.settings.serving.max_k:
            raise InvalidArgument(f"k={k} is out of range: it must be between 1 and "
                                  f"serving.max_k={self.settings.serving.max_k}")

    # BentoML's decorators live in _bentoml_sdk, which ships no types (py.typed).
    @bentoml.api(route="/recommend", input_spec=RecommendRequest)  # type: ignore[untyped-decorator]
    async def recommend(self, user_id: int | str, k: int = 10, exclude_seen: bool = True,
                        context_items: list[int | str] | None = None) -> JSONObject:
        """Top-k items for a user: one online-store read of their recent sequence, then the
        model's forward pass and top-k, batched with the requests that arrive meanwhile.
        Withdrawn items are never listed."""
        self._check_k(k)
        from recops.errors import FeatureError

        policy = self.policy
        uid = internal_id(user_id)
        context = [internal_id(i) for i in context_items] if context_items else None
        try:
            ranked, fallback, history_size, tag = await self.batcher.submit(
                (uid, policy.candidates(k), exclude_seen, context))
        except FeatureError as exc:
            # No silent fallback: without the user's features we say so (503, retryable).
            log.error("online feature read failed (%s)", type(exc).__name__)
            raise ServiceUnavailable("the online feature store is unavailable; retry") from None
        if fallback:
            self.metrics["fallback"].labels(kind=fallback).inc()
        slate = policy.choose(len(ranked), k, self._rng)
        items = [ranked[p] for p in slate.positions]
        if slate.explored:
            self.metrics["explored"].inc()
        request_id = uuid.uuid4().hex
        if self.impressions is not None:
            # The logs hold internal ids, as the feedback log does, so that they join.
            record = {"request_id": request_id, "user_id": uid,
                      "items": [internal_id(i["item_id"]) for i in items],
                      "propensities": slate.propensities,
                      "candidates": [internal_id(i["item_id"]) for i in ranked], "k": k,
                      "policy": policy.name, "policy_params": policy.params(),
                      "policy_tag": policy.tag, "model": tag, "fallback": fallback}
            try:
                # Durable before the answer, sharing one fsync with concurrent requests.
                await asyncio.wrap_future(self.impressions.submit(record))
            except Exception:  # noqa: BLE001 - logged by the committer
                raise ServiceUnavailable("the impression log is unavailable; the list was not "
                                         "served: retry") from None
        return {"user_id": user_id, "items": items, "fallback": fallback,
                "history_size": history_size, "model": tag, "request_id": request_id,
                "policy": policy.tag}

    def _recommend_batch(self, reqs: list[tuple[int, int, bool, list[int] | None]]
                         ) -> list[tuple[list[dict[str, Any]], str | None, int, str]]:
        """A batch of /recommend: one online read for all its users, one forward pass."""
        from serving.engine import Query

        engine = self.engine  # one model for the whole batch, even across a swap
        histories = self.online.histories([r[0] for r in reqs])
        banned = self.availability.withdrawn()
        answers = engine.recommend_many([Query(h or [], k, ex, ctx, banned)
                                         for h, (_, k, ex, ctx) in zip(histories, reqs,
                                                                      strict=True)])
        return [(items, fallback, len(h or []), engine.tag)
                for (items, fallback), h in zip(answers, histories, strict=True)]

    @bentoml.api(route="/feedback", input_spec=FeedbackRequest)  # type: ignore[untyped-decorator]
    async def feedback(self, user_id: int | str, item_id: int | str, event_type: str,
                       rating: float | None = None, timestamp: datetime | None = None,
                       event_id: str | None = None,
                       request_id: str | None = None) -> dict[str, Any]:
        """Log an event durably and push it online, both shared with concurrent requests
        (group commit), before answering; a repeat is acknowledged and not stored again."""
        s = self.settings
        engine = self.engine
        shown_item, user_id, item_id = item_id, internal_id(user_id), internal_id(item_id)
        if item_id not in engine.catalogue:
            raise NotFound(f"item_id {shown_item!r} is not in the catalogue of the served model")
        if event_type == "rating" and rating is None:
            raise InvalidArgument("event_type 'rating' needs a rating")
        if rating is not None and not s.validation.rating_min <= rating <= s.validation.rating_max:
            raise InvalidArgument(f"rating {rating} is out of range [{s.validation.rating_min}, "
                                  f"{s.validation.rating_max}]")
        now = datetime.now(UTC)
        ts = timestamp or now
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)  # naive timestamps are taken as UTC
        floor = s.validation.timestamp_floor.replace(tzinfo=UTC)
        if ts < floor or (ts - now).total_seconds() > 300:
            raise InvalidArgument(f"timestamp {ts.isoformat()} is outside [{floor.isoformat()}, "
                                  "now + 5 min]")
        event = {"user_id": user_id, "item_id": item_id, "event_type": event_type,
                 "rating": rating, "event_timestamp": ts, "event_id": event_id,
                 "request_id": request_id}
        try:
            # Resolves once the event is durable (fsync or commit) and pushed online.
            got = await asyncio.wrap_future(self.committer.submit(event))
        except Exception:  # noqa: BLE001 - logged by the committer; nothing was acknowledged
            raise ServiceUnavailable("the feedback log is unavailable; the event was not "
                                     "stored: retry") from None
        return {"accepted": True, "offset": got.offset, "online": got.online,
                "duplicate": got.duplicate}

    def _search_for(self, engine: "Engine") -> "Searcher":
        """The engine's Searcher: its item text matrix is built once per model load, on the
        first /search (so /recommend-only workers never load the sentence encoder)."""
        from serving.search import Searcher, item_text_matrix, query_encoder

        with self._search_lock:
            if self._searcher is None or self._searcher.engine is not engine:
                encode = query_encoder()  # loaded once per process (cached), verified, offline
                matrix, origin = item_text_matrix(engine, self.settings)
                self._searcher = Searcher(engine, matrix, origin, encode)
                log.info("search ready for %s (item text from %s)", engine.tag, origin)
            return self._searcher

    @bentoml.api(route="/search", input_spec=SearchRequest)  # type: ignore[untyped-decorator]
    def search(self, query: str, user_id: int | str | None = None, k: int = 10,
               exclude_seen: bool = False) -> JSONObject:
        """Items matching a text query: candidates by the query's sentence vector against the
        items' text vectors, re-ranked by the user's sequence model when the user has a history
        (``personalised``); with no user, or one without history, the query alone decides."""
        from recops.errors import FeatureError
        from serving.search import SearchUnavailable

        s = self.settings.serving
        self._check_k(k)
        if not query.strip():
            raise InvalidArgument("query is empty: send some text to search for")
        if len(query) > s.max_query_chars:
            raise InvalidArgument(f"query is {len(query)} characters long, over the limit of "
                                  f"serving.max_query_chars={s.max_query_chars}")
        engine = self.engine
        try:
            searcher = self._search_for(engine)
        except SearchUnavailable as exc:
            log.error("search unavailable: %s", exc)
            raise ServiceUnavailable(f"search is unavailable: {exc}") from None
        history: list[int] = []
        if user_id is not None:
            try:
                history = self.online.histories([internal_id(user_id)])[0] or []
            except FeatureError as exc:
                log.error("online feature read failed (%s)", type(exc).__name__)
                raise ServiceUnavailable("the online feature store is unavailable; "
                                         "retry") from None
        got = searcher.search(query, history, k, weight=s.search_weight,
                              candidates=s.search_candidates, exclude_seen=exclude_seen,
                              banned_ids=self.availability.withdrawn())
        return {"query": query, "user_id": user_id, "items": got.items,
                "personalised": got.personalised, "history_size": got.history_size,
                "model": engine.tag}

    @bentoml.api(route="/similar", input_spec=SimilarRequest)  # type: ignore[untyped-decorator]
    def similar(self, item_id: int | str, k: int = 10) -> JSONObject:
        """Items nearest to ``item_id`` in the model's item embedding space (cosine)."""
        self._check_k(k)
        engine = self.engine
        idx = engine.index.get(internal_id(item_id))
        if idx is None:
            raise NotFound(f"item_id {item_id!r} is unknown to the served model")
        ranked = engine.similar(idx, k, self.availability.withdrawn())
        return {"item_id": item_id, "items": engine.describe(ranked), "model": engine.tag}


# @bentoml.service made Recommender a bentoml Service; mypy keeps a decorated class's own type.
Recommender.add_asgi_middleware(Guard)  # type: ignore[attr-defined]
Recommender.add_asgi_middleware(Contract)  # type: ignore[attr-defined]
