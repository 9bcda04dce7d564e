"""Traffic replay: the dataset's events the lake has not seen, played in time order as live users.

For each event, in time order, at ``rate`` events a second: ``POST /recommend`` for its user
(k=10), then ``POST /feedback`` with the item the user really chose. Each served list is kept
with the tag of the model that served it (the ``model`` field of the answer), so the online
HR@10 / NDCG@10 of the lists actually served, against the chosen item, split by serving model,
say what a retrain changed for users.

Which events: those of ``settings.data.dataset`` strictly after the lake's last interaction. The
lake holds everything any model was trained on (the champion included), so these are events no
model has seen, and replaying them adds no interaction the lake already holds.

Only HTTP reaches the service; events of one user are played one after the other (its next
``/recommend`` waits for its previous ``/feedback``), so every list reflects the user's history.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pandas as pd

from recops import schema
from recops.config import Settings
from recops.errors import ConfigError, DataError, RecopsError

Z95 = 1.959964  # the normal quantile of a two-sided 95% interval
INTERVAL = ("normal approximation over events: mean ± 1.96·s/√n; the after − before difference "
            "unpaired (different events): ± 1.96·√(s²a/na + s²b/nb)")


class ServiceUnreachable(RecopsError):
    """The service does not answer (not started, wrong URL, not ready)."""


@dataclass(frozen=True)
class ReplayOptions:
    """How to play: ``rate`` events/s started (open loop), at most ``concurrency`` in flight.

    ``after_swap``: the last events kept back until the service serves a new model (polled
    once a second, up to ``swap_timeout`` seconds), so that many events are scored under the
    retrained model even when the retrain takes longer than the rest of the replay.
    """

    rate: float = 10.0
    limit: int | None = None
    concurrency: int = 4
    k: int = 10
    timeout: float = 30.0
    after_swap: int = 0
    swap_timeout: float = 900.0

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first bad option."""
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ConfigError(f"--rate must be a positive number of events per second, "
                              f"not {self.rate}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be at least 1 event, not {self.limit}")
        if self.concurrency < 1:
            raise ConfigError(f"--concurrency must be at least 1, not {self.concurrency}")
        if self.k < 1:
            raise ConfigError(f"k must be at least 1, not {self.k}")
        if not self.timeout > 0:
            raise ConfigError(f"--timeout must be a positive number of seconds, not "
                              f"{self.timeout}")
        if self.after_swap < 0:
            raise ConfigError(f"--after-swap must be 0 or more events, not {self.after_swap}")
        if not self.swap_timeout > 0:
            raise ConfigError(f"--swap-timeout must be a positive number of seconds, not "
                              f"{self.swap_timeout}")


@dataclass
class Outcome:
    """One replayed event: what was served (by which model) and whether both calls succeeded."""

    user_id: int
    item_id: int
    event_timestamp: str
    event_id: str
    model: str | None = None
    rank: int | None = None  # 0-based position of the chosen item in the served list
    served_at: float | None = None  # Unix time the list arrived
    fallback: str | None = None
    recommend_error: str | None = None
    feedback_error: str | None = None
    acknowledged: bool = False
    duplicate: bool = False


@dataclass
class ReplayResult:
    url: str
    cut: str
    available: int
    skipped_unknown_items: int
    options: dict[str, Any]
    outcomes: list[Outcome] = field(default_factory=list)
    elapsed_s: float = 0.0
    waited_for_swap_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The figures: rate sustained, failures, acknowledgements, quality per serving model."""
        out = self.outcomes
        rec_fail = [o.recommend_error for o in out if o.recommend_error]
        fb_fail = [o.feedback_error for o in out if o.feedback_error]
        first = next((o.model for o in out if o.model), None)
        swap = next((o for o in out if o.model and o.model != first), None)
        playing = self.elapsed_s - self.waited_for_swap_s
        return {
            "url": self.url, "cut": self.cut, "events_available": self.available,
            "skipped_unknown_items": self.skipped_unknown_items,
            "events_played": len(out), "options": self.options,
            "elapsed_s": round(self.elapsed_s, 2),
            "waited_for_swap_s": round(self.waited_for_swap_s, 2),
            "rate_sustained": round(len(out) / playing, 2) if playing > 0 else None,
            "failed": {"recommend": len(rec_fail), "feedback": len(fb_fail),
                       "total": len(rec_fail) + len(fb_fail),
                       "first_errors": (rec_fail + fb_fail)[:5]},
            "acknowledged": sum(o.acknowledged for o in out),
            "duplicates": sum(o.duplicate for o in out),
            "fallbacks": sum(o.fallback is not None for o in out),
            "first_model": first,
            "new_model": swap.model if swap else None,
            "new_model_first_served_at": (datetime.fromtimestamp(swap.served_at, UTC).isoformat()
                                          if swap and swap.served_at else None),
            **online_quality(out, self.options.get("k", 10)),
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(),
                "acknowledged_events": [o.event_id for o in self.outcomes if o.acknowledged],
                "events": [asdict(o) for o in self.outcomes]}


# ---------------------------------------------------------------------------------------------
# Which events


def event_id(user_id: int, item_id: int, ts: pd.Timestamp) -> str:
    """A replayed event's idempotency key: replaying it again is acknowledged, not re-stored."""
    return f"replay-{user_id}-{item_id}-{int(ts.timestamp() * 1e6)}"


def later_events(settings: Settings) -> tuple[pd.DataFrame, pd.Timestamp, int]:
    """The dataset's events after the lake's last interaction, in time order, with the cut and
    how many were left out for an item the lake's catalogue lacks (the service refuses them)."""
    from recops.core.lake import Lake
    from recops.data.loaders import load_dataset

    lake = Lake(settings.paths.lake)
    seen = lake.read(schema.INTERACTIONS)
    if seen.empty:
        raise DataError(f"the lake at {settings.paths.lake} holds no interactions, so no model "
                        "was trained and nothing tells which events are new: train a champion "
                        "first (`recops run`)")
    cut = pd.to_datetime(seen[schema.EVENT_TIMESTAMP], utc=True).max()
    tables = load_dataset(settings)
    ev = tables.interactions
    ts = pd.to_datetime(ev[schema.EVENT_TIMESTAMP], utc=True)
    later = ev.assign(**{schema.EVENT_TIMESTAMP: ts})[ts > cut]
    known = set(lake.read_latest(schema.ITEMS)[schema.ITEM_ID].astype(int))
    keep = later[schema.ITEM_ID].astype(int).isin(known)
    later = later[keep].sort_values([schema.EVENT_TIMESTAMP, schema.USER_ID, schema.ITEM_ID],
                                    kind="stable").reset_index(drop=True)
    if later.empty:
        raise DataError(f"{settings.data.dataset} has no event after the lake's last one "
                        f"({cut.isoformat()}): every event was already trained on. Train the "
                        "champion on the earlier events only (docs/orchestration.md, "
                        "'Traffic replay')")
    return later, cut, int((~keep).sum())


# ---------------------------------------------------------------------------------------------
# Playing


def check_service(url: str, token: str | None = None, timeout: float = 10.0) -> None:
    """Raise :class:`ServiceUnreachable` unless the service at ``url`` answers ``/readyz``."""
    try:
        resp = httpx.get(url.rstrip("/") + "/readyz", timeout=timeout, headers=_headers(token))
    except httpx.HTTPError as exc:
        raise ServiceUnreachable(f"the service at {url} is unreachable ({type(exc).__name__}: "
                                 f"{exc}); is the platform up (`recops status`)?") from None
    if resp.status_code != 200:
        raise ServiceUnreachable(f"the service at {url} is not ready (/readyz answered "
                                 f"{resp.status_code})")


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _error(resp: httpx.Response | None, exc: Exception | None) -> str:
    if exc is not None:
        return f"{type(exc).__name__}: {exc}"[:200]
    assert resp is not None
    return f"{resp.status_code} {resp.text[:150]}"


class _Player:
    def __init__(self, client: httpx.AsyncClient, opts: ReplayOptions) -> None:
        self.client, self.opts = client, opts
        self.first_model: str | None = None
        self.swapped = asyncio.Event()
        self.locks: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.slots = asyncio.Semaphore(opts.concurrency)

    def _seen(self, model: str | None) -> None:
        if model is None:
            return
        if self.first_model is None:
            self.first_model = model
        elif model != self.first_model:
            self.swapped.set()

    async def _post(self, path: str, body: dict[str, Any]
                    ) -> tuple[dict[str, Any] | None, str | None]:
        try:
            resp = await self.client.post(path, json=body)
        except httpx.HTTPError as exc:
            return None, _error(None, exc)
        if not 200 <= resp.status_code < 300:
            return None, _error(resp, None)
        try:
            data: dict[str, Any] = resp.json()
        except ValueError as exc:
            return None, _error(None, exc)
        return data, None

    async def play(self, o: Outcome, rating: float | None, event_type: str) -> None:
        try:
            async with self.locks[o.user_id]:
                got, o.recommend_error = await self._post(
                    "/recommend", {"user_id": o.user_id, "k": self.opts.k})
                if got is not None:
                    o.served_at = time.time()
                    o.model = got.get("model")
                    o.fallback = got.get("fallback")
                    ids = [int(i["item_id"]) for i in got.get("items", [])]
                    o.rank = ids.index(o.item_id) if o.item_id in ids else None
                    self._seen(o.model)
                body: dict[str, Any] = {"user_id": o.user_id, "item_id": o.item_id,
                                        "event_type": event_type, "timestamp": o.event_timestamp,
                                        "event_id": o.event_id}
                if rating is not None:
                    body["rating"] = rating
                ack, o.feedback_error = await self._post("/feedback", body)
                if ack is not None:
                    o.acknowledged = bool(ack.get("accepted"))
                    o.duplicate = bool(ack.get("duplicate"))
                    if not o.acknowledged:
                        o.feedback_error = f"not accepted: {ack}"
        finally:
            self.slots.release()

    async def wait_for_swap(self, user_id: int) -> None:
        """Ask for ``user_id``'s list once a second until a new model serves it (or timeout)."""
        deadline = time.monotonic() + self.opts.swap_timeout
        while not self.swapped.is_set() and time.monotonic() < deadline:
            got, _ = await self._post("/recommend", {"user_id": user_id, "k": self.opts.k})
            if got is not None:
                self._seen(got.get("model"))
            if not self.swapped.is_set():
                await asyncio.sleep(1.0)


Progress = Callable[[int, int, str | None], None]


async def _replay(url: str, events: pd.DataFrame, opts: ReplayOptions, token: str | None,
                  result: ReplayResult, on_progress: Progress | None) -> None:
    limits = httpx.Limits(max_connections=opts.concurrency + 1)
    async with httpx.AsyncClient(base_url=url.rstrip("/"), timeout=opts.timeout,
                                 headers=_headers(token), limits=limits) as client:
        player = _Player(client, opts)
        tasks: list[asyncio.Task[None]] = []
        hold = len(events) - opts.after_swap if opts.after_swap else None
        loop = asyncio.get_running_loop()
        start = loop.time()
        base, t_wait = 0, 0.0
        for i, row in enumerate(events.itertuples(index=False)):
            if i == hold and not player.swapped.is_set():
                await asyncio.gather(*tasks)  # every answer so far is in
                t = loop.time()
                await player.wait_for_swap(int(row.user_id))
                t_wait += loop.time() - t
                start, base = loop.time(), i  # the rate counts from here again
            delay = start + (i - base) / opts.rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await player.slots.acquire()
            ts = row.event_timestamp
            o = Outcome(int(row.user_id), int(row.item_id), ts.isoformat(),
                        event_id(int(row.user_id), int(row.item_id), ts))
            result.outcomes.append(o)
            rating = None if pd.isna(row.rating) else float(row.rating)
            tasks.append(asyncio.create_task(player.play(o, rating, str(row.event_type))))
            if on_progress and (i + 1) % 50 == 0:
                on_progress(i + 1, len(events), player.first_model)
        await asyncio.gather(*tasks)
        result.waited_for_swap_s = t_wait


def replay(settings: Settings, url: str, opts: ReplayOptions,
           on_progress: Progress | None = None) -> ReplayResult:
    """Play the later events (see the module) against the service at ``url``."""
    opts.check()
    token = settings.serving.auth_token.get_secret_value() if settings.serving.auth_token \
        else None
    check_service(url, token)
    events, cut, skipped = later_events(settings)
    available = len(events)
    if opts.limit is not None:
        events = events.head(opts.limit)
    if opts.after_swap >= len(events):
        raise ConfigError(f"--after-swap {opts.after_swap} keeps back every one of the "
                          f"{len(events)} events to play: nothing would make a retrain happen")
    result = ReplayResult(url=url, cut=cut.isoformat(), available=available,
                          skipped_unknown_items=skipped, options=asdict(opts))
    t0 = time.perf_counter()
    asyncio.run(_replay(url, events, opts, token, result, on_progress))
    result.elapsed_s = time.perf_counter() - t0
    return result


# ---------------------------------------------------------------------------------------------
# Online quality


def mean_ci(values: list[float]) -> dict[str, Any]:
    """Mean and the half-width of its 95% interval (normal approximation over the values)."""
    n = len(values)
    if n == 0:
        return {"mean": None, "ci95": None, "n": 0}
    m = sum(values) / n
    if n < 2:
        return {"mean": m, "ci95": None, "n": n}
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    return {"mean": m, "ci95": Z95 * math.sqrt(var / n), "n": n}


def diff_ci(after: list[float], before: list[float]) -> dict[str, Any]:
    """after − before, with an unpaired 95% interval (the two sets of events differ)."""
    a, b = mean_ci(after), mean_ci(before)
    if a["mean"] is None or b["mean"] is None:
        return {"mean": None, "ci95": None}
    if len(after) < 2 or len(before) < 2:
        return {"mean": a["mean"] - b["mean"], "ci95": None}
    half = math.sqrt((a["ci95"] / Z95) ** 2 + (b["ci95"] / Z95) ** 2) * Z95
    return {"mean": a["mean"] - b["mean"], "ci95": half}


def _scores(outcomes: list[Outcome], k: int) -> tuple[list[float], list[float]]:
    hr = [1.0 if o.rank is not None and o.rank < k else 0.0 for o in outcomes]
    ndcg = [1.0 / math.log2(o.rank + 2) if o.rank is not None and o.rank < k else 0.0
            for o in outcomes]
    return hr, ndcg


def online_quality(outcomes: list[Outcome], k: int = 10) -> dict[str, Any]:
    """HR@k and NDCG@k of the served lists against the chosen item: per serving model, for the
    first model ("before") and every later one together ("after"), and after − before."""
    served = [o for o in outcomes if o.model is not None]
    order: list[str] = []
    for o in served:
        if o.model not in order:
            order.append(str(o.model))
    per_model = []
    for tag in order:
        hr, ndcg = _scores([o for o in served if o.model == tag], k)
        per_model.append({"model": tag, "events": len(hr), f"hr@{k}": mean_ci(hr),
                          f"ndcg@{k}": mean_ci(ndcg)})
    first = order[0] if order else None
    hr_b, nd_b = _scores([o for o in served if o.model == first], k)
    hr_a, nd_a = _scores([o for o in served if o.model != first], k)
    return {
        "k": k, "interval": INTERVAL, "per_model": per_model,
        "before": {"events": len(hr_b), f"hr@{k}": mean_ci(hr_b), f"ndcg@{k}": mean_ci(nd_b)},
        "after": {"events": len(hr_a), f"hr@{k}": mean_ci(hr_a), f"ndcg@{k}": mean_ci(nd_a)},
        "after_minus_before": {f"hr@{k}": diff_ci(hr_a, hr_b), f"ndcg@{k}": diff_ci(nd_a, nd_b)},
    }
