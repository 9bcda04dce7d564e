"""Seeded synthetic interactions: long-tail popularity, taste clusters, sequential sessions.

The model behind the data, vectorised end to end (no Python loop over rows):

* Items fall into clusters ("genres"). Popularity is Zipf-like over all items.
* Each user has a Dirichlet preference over clusters (concentrated: a few favourites) and a
  log-normal activity level.
* A user's events come in sessions. A session starts with a *jump*: a cluster drawn from the
  user's taste, then an item of that cluster drawn by popularity. Within a session, each next
  event either jumps again or *follows*: it moves 1..K steps along its cluster's item ring
  (items ordered by popularity), so the next item depends on the previous one, like watching a
  series in order. Runs of follows are a segmented cumulative sum, which keeps it vectorised.
* Ratings are higher for clusters the user likes; timestamps are seconds-apart within a
  session and hours-to-days apart between sessions, over ``days`` days.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from recops import schema
from recops.data.movielens import item_text
from recops.data.tables import Tables

if TYPE_CHECKING:
    from recops.config import Settings

GENRES = ("Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
          "Thriller", "War", "Western")
THEMES = ("space", "robots", "heist", "family", "friendship", "revenge", "small town", "ocean",
          "detectives", "dragons", "high school", "road trip", "war veterans", "cooking",
          "time travel", "vampires", "sports", "music band", "courtroom", "pirates", "jungle",
          "spies", "ghosts", "wedding")
ADJECTIVES = ("Silent", "Broken", "Golden", "Hidden", "Last", "Crimson", "Endless", "Wild",
              "Frozen", "Secret", "Electric", "Lonely", "Burning", "Distant", "Midnight", "Lost")
NOUNS = ("River", "Empire", "Garden", "Signal", "Harbor", "Kingdom", "Road", "Machine", "Winter",
         "Echo", "Mirror", "Storm", "Horizon", "Promise", "Circle", "Forest", "City", "Voyage")


@dataclass(frozen=True)
class Knobs:
    """Shape parameters of the generator (defaults give MovieLens-like statistics)."""

    zipf_a: float = 1.0  # popularity ~ 1 / rank^a
    taste_alpha: float = 0.3  # Dirichlet concentration of user taste (small: few favourites)
    activity_sigma: float = 1.0  # log-normal spread of events per user
    min_events: int = 3  # per user, when the total allows it
    new_session: float = 0.15  # probability an event opens a new session
    jump: float = 0.25  # within a session, probability of a fresh draw instead of a follow
    step_probs: tuple[float, ...] = (0.55, 0.25, 0.12, 0.08)  # follow: 1..K steps along the ring
    intra_gap_s: float = 240.0  # mean seconds between events of a session
    session_gap_s: float = 2 * 86_400.0  # mean seconds between sessions


def _segment_starts(counts: np.ndarray) -> np.ndarray:
    return np.concatenate(([0], np.cumsum(counts)[:-1]))


def _allocate(rng: np.random.Generator, n_users: int, total: int, k: Knobs) -> np.ndarray:
    """Events per user: log-normal shares, at least ``min_events`` each, summing to ``total``."""
    floor = min(k.min_events, total // n_users)
    w = rng.lognormal(0.0, k.activity_sigma, n_users)
    extra = total - floor * n_users
    share = w / w.sum() * extra
    counts = np.floor(share).astype(np.int64)
    # Hand out the rounding remainder to the largest fractional parts (deterministic).
    rest = extra - int(counts.sum())
    if rest:
        counts[np.argsort(-(share - counts), kind="stable")[:rest]] += 1
    out: np.ndarray = counts + floor
    return out


def _sample_segmented(rng: np.random.Generator, cum_flat: np.ndarray, segment: np.ndarray,
                      ) -> np.ndarray:
    """Draw an index in each row's segment of a flat CDF laid out as ``segment + cdf``.

    ``cum_flat`` holds, segment after segment, ``s + cumulative probability`` (ending at s + 1),
    so one searchsorted serves every segment at once.
    """
    u = rng.random(len(segment))
    return np.searchsorted(cum_flat, segment + u, side="right")


def generate_arrays(n_users: int, n_items: int, n_interactions: int, n_clusters: int, days: int,
                    seed: int, knobs: Knobs = Knobs()) -> dict[str, np.ndarray]:
    """The raw arrays (0-based ids; seconds since start). Same seed, same arrays."""
    k = knobs
    rng = np.random.default_rng(seed)
    n_clusters = min(n_clusters, n_items)

    # Items: balanced clusters, Zipf popularity over a random ranking.
    item_cluster = rng.permutation(np.arange(n_items) % n_clusters)
    rank = rng.permutation(n_items)
    popularity = 1.0 / np.power(rank + 1.0, k.zipf_a)
    # The ring of each cluster: its items by decreasing popularity, clusters one after another.
    ring = np.lexsort((-popularity, item_cluster))
    ring_cluster = item_cluster[ring]
    cluster_size = np.bincount(item_cluster, minlength=n_clusters)
    cluster_start = _segment_starts(cluster_size)
    pop_sorted = popularity[ring]
    cum = np.cumsum(pop_sorted)
    seg_total = np.add.reduceat(pop_sorted, cluster_start)
    before = cum[cluster_start] - pop_sorted[cluster_start]
    item_cdf = (cum - before[ring_cluster]) / seg_total[ring_cluster]
    item_cdf[cluster_start + cluster_size - 1] = 1.0
    item_cum_flat = ring_cluster + item_cdf

    # Users: taste over clusters and activity.
    taste = rng.dirichlet(np.full(n_clusters, k.taste_alpha), n_users)
    taste_cdf = np.cumsum(taste, axis=1)
    taste_cdf[:, -1] = 1.0
    taste_cum_flat = (np.arange(n_users)[:, None] + taste_cdf).ravel()
    counts = _allocate(rng, n_users, n_interactions, k)
    user = np.repeat(np.arange(n_users), counts)
    starts = _segment_starts(counts)
    first = np.zeros(n_interactions, dtype=bool)
    first[starts[counts > 0]] = True

    # Sessions and jumps.
    new_session = first | (rng.random(n_interactions) < k.new_session)
    jump = new_session | (rng.random(n_interactions) < k.jump)
    jumps = np.flatnonzero(jump)
    j_cluster = _sample_segmented(rng, taste_cum_flat, user[jumps]) - user[jumps] * n_clusters
    j_ring = _sample_segmented(rng, item_cum_flat, j_cluster)  # position in the global ring
    j_offset = j_ring - cluster_start[j_cluster]

    # Follows: 1..K steps along the ring, summed since the last jump (segmented cumsum).
    step_cdf = np.cumsum(k.step_probs) / np.sum(k.step_probs)
    step_cdf[-1] = 1.0
    # Inverse-CDF draw: several times faster than Generator.choice(p=...) on millions of rows.
    steps = np.searchsorted(step_cdf, rng.random(n_interactions), side="right") + 1
    steps[jumps] = j_offset
    segment = np.cumsum(jump) - 1
    cs = np.cumsum(steps)
    base = cs[jumps] - steps[jumps]
    offset = cs - base[segment]
    cluster = j_cluster[segment]
    item = ring[cluster_start[cluster] + offset % cluster_size[cluster]]

    # Ratings: liking the cluster lifts the rating.
    affinity = taste[user, cluster] / taste.max(axis=1)[user]
    mu = 2.4 + 2.0 * affinity
    rating = np.clip(np.round((mu + rng.normal(0.0, 0.7, n_interactions)) * 2) / 2, 0.5, 5.0)

    # Timestamps: gaps inside and between sessions, squeezed into the window when too long.
    window = days * 86_400
    gaps = np.where(new_session, 3_600 + rng.exponential(k.session_gap_s, n_interactions),
                    30 + rng.exponential(k.intra_gap_s, n_interactions))
    gaps[first] = 0.0
    # Per-user sums via bincount: robust to users with no events (tiny totals).
    span = np.bincount(user, weights=gaps, minlength=n_users)
    scale = np.minimum(1.0, (window - 1) / np.maximum(span, 1.0))
    # At least one second apart, so a user's order never rests on a timestamp tie.
    gaps = np.maximum(np.where(first, 0, 1), np.floor(gaps * scale[user])).astype(np.int64)
    cum_gap = np.cumsum(gaps)
    rel = cum_gap - cum_gap[starts[user]]  # seconds since the user's first event
    user_span = np.zeros(n_users, dtype=np.int64)
    last = np.flatnonzero(np.r_[user[1:] != user[:-1], True])
    user_span[user[last]] = rel[last]
    slack = np.maximum(0, window - 1 - user_span)
    offset0 = np.floor(rng.random(n_users) * (slack + 1)).astype(np.int64)
    seconds = offset0[user] + rel
    return {"user": user, "item": item, "rating": rating.astype(np.float32), "seconds": seconds,
            "item_cluster": item_cluster, "popularity": popularity, "taste": taste}


def _items_frame(rng: np.random.Generator, item_cluster: np.ndarray, n_clusters: int,
                 ) -> pd.DataFrame:
    """Titles, genres and theme tags per item; genres and themes follow the cluster."""
    n_items = len(item_cluster)
    g1 = rng.permutation(len(GENRES))[np.arange(n_clusters) % len(GENRES)]
    g2 = rng.integers(0, len(GENRES), n_clusters)
    themes = rng.permutation(len(THEMES))[np.arange(n_clusters) % len(THEMES)]
    adj = rng.integers(0, len(ADJECTIVES), n_items)
    noun = rng.integers(0, len(NOUNS), n_items)
    year = rng.integers(1950, 2026, n_items)
    ids = np.arange(1, n_items + 1)
    titles, genres, texts = [], [], []
    for i in range(n_items):
        c = item_cluster[i]
        title = f"The {ADJECTIVES[adj[i]]} {NOUNS[noun[i]]} {ids[i]} ({year[i]})"
        gs = [GENRES[g1[c]]] + ([GENRES[g2[c]]] if g2[c] != g1[c] else [])
        g = schema.GENRE_SEPARATOR.join(gs)
        titles.append(title)
        genres.append(g)
        texts.append(item_text(title, g, THEMES[themes[c]]))
    return pd.DataFrame({schema.ITEM_ID: ids, schema.TITLE: titles, schema.GENRES: genres,
                         schema.TEXT: texts})


def generate(n_users: int = 1_000, n_items: int = 2_000, n_interactions: int = 100_000,
             n_clusters: int = 8, days: int = 60, seed: int = 42,
             start: datetime = datetime(2026, 1, 1), knobs: Knobs = Knobs()) -> Tables:
    """Canonical tables of a synthetic catalogue; ids are 1-based like MovieLens."""
    a = generate_arrays(n_users, n_items, n_interactions, n_clusters, days, seed, knobs)
    start_utc = start if start.tzinfo else start.replace(tzinfo=UTC)
    t0 = np.datetime64(start_utc.astimezone(UTC).replace(tzinfo=None), "us")
    interactions = pd.DataFrame({
        schema.USER_ID: a["user"] + 1,
        schema.ITEM_ID: a["item"] + 1,
        schema.RATING: a["rating"],
        schema.EVENT_TYPE: pd.Categorical.from_codes(np.zeros(len(a["user"]), dtype=np.int8),
                                                     categories=["rating"]),
        schema.EVENT_TIMESTAMP: pd.DatetimeIndex(t0 + a["seconds"].astype("timedelta64[s]"))
                                  .tz_localize("UTC"),
    })
    # Seeded apart from the interactions so catalogue text never shifts the event stream.
    items = _items_frame(np.random.default_rng([seed, 1]), a["item_cluster"],
                         min(n_clusters, n_items))
    users = pd.DataFrame({schema.USER_ID: np.arange(1, n_users + 1)})
    source = (f"synthetic:seed={seed},users={n_users},items={n_items},"
              f"interactions={n_interactions},clusters={n_clusters},days={days}")
    return Tables(interactions, items, users, source=source)


def generate_from_settings(settings: Settings) -> Tables:
    """:func:`generate` with ``settings.data.synthetic`` and ``settings.seed``."""
    s = settings.data.synthetic
    return generate(s.n_users, s.n_items, s.n_interactions, s.n_clusters, s.days,
                    settings.seed, s.start)
