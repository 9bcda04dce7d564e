"""The retail example a team can copy: string SKUs and customer ids, view/click/purchase/dislike
events, a catalogue with descriptions, categories and brands, written as the files a team has.

    python -m recops.data.retail_example examples/retail

writes ``events.csv``, ``items.csv`` and ``users.csv`` there (seeded: the same files every time;
the repository ships its output under ``examples/retail/``). Shoppers follow their category's
product line in order (a jacket, then its liner, then the gloves...), so the next item depends
on the last ones: a sequence model has something to learn that popularity does not know.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

CATEGORIES = {
    "outerwear": ("jacket", "parka", "raincoat", "fleece", "vest", "liner"),
    "footwear": ("trail shoe", "running shoe", "boot", "sandal", "insole", "sock"),
    "camping": ("tent", "sleeping bag", "mat", "stove", "lantern", "cookset"),
    "cycling": ("helmet", "bike light", "lock", "pump", "bottle", "saddle bag"),
    "climbing": ("harness", "chalk bag", "rope", "carabiner", "belay device", "helmet"),
}
BRANDS = ("Northpeak", "Ridgeline", "Alder & Co", "Kestrel", "Summitry")
ADJECTIVES = ("lightweight", "waterproof", "recycled", "packable", "insulated", "durable")
START = datetime(2026, 9, 1, tzinfo=UTC)


def catalogue(rng: np.random.Generator, per_category: int = 40) -> pd.DataFrame:
    rows = []
    for c, (category, kinds) in enumerate(CATEGORIES.items()):
        for k in range(per_category):
            kind = kinds[k % len(kinds)]
            brand = BRANDS[int(rng.integers(len(BRANDS)))]
            adj = ADJECTIVES[int(rng.integers(len(ADJECTIVES)))]
            rows.append({"item_id": f"SKU-{c + 1}{k:03d}",
                         "title": f"{brand} {adj} {kind}",
                         "description": f"A {adj} {kind} for {category}, line {k // 6 + 1}.",
                         "category": category, "brand": brand,
                         "price": round(float(rng.uniform(9, 400)), 2)})
    items = pd.DataFrame(rows)
    # One item is withdrawn: its window ended before the events' last day.
    items["available_until"] = ""
    items.loc[7, "available_until"] = "2026-10-15T00:00:00Z"
    return items


def shoppers(rng: np.random.Generator, n_users: int) -> pd.DataFrame:
    ids = [f"c-{v:08x}" for v in rng.choice(1 << 32, size=n_users, replace=False)]
    return pd.DataFrame({"user_id": ids,
                         "region": rng.choice(["north", "south", "east", "west"], n_users),
                         "member": rng.choice(["yes", "no"], n_users, p=[0.3, 0.7])})


def events(rng: np.random.Generator, items: pd.DataFrame, users: pd.DataFrame,
           mean_len: int = 16) -> pd.DataFrame:
    """Each shopper walks their favourite category's line in order, mostly viewing; clicks,
    purchases and the odd dislike of a stray item from another category."""
    by_cat = {c: g["item_id"].tolist() for c, g in items.groupby("category", sort=False)}
    cats = list(by_cat)
    rows = []
    for uid in users["user_id"]:
        cat = cats[int(rng.integers(len(cats)))]
        line = by_cat[cat]
        pos = int(rng.integers(len(line)))
        t = START + timedelta(minutes=int(rng.integers(0, 60 * 24 * 60)))
        for _ in range(max(3, int(rng.poisson(mean_len)))):
            t += timedelta(seconds=int(rng.integers(30, 4 * 3600)))
            if rng.random() < 0.06:  # a stray item from elsewhere, disliked
                other = by_cat[cats[(cats.index(cat) + 1 + int(rng.integers(len(cats) - 1)))
                                    % len(cats)]]
                rows.append((uid, other[int(rng.integers(len(other)))], "dislike", t))
                continue
            pos = (pos + 1 + int(rng.random() < 0.15)) % len(line)
            r = rng.random()
            kind = "purchase" if r < 0.12 else "click" if r < 0.40 else "view"
            rows.append((uid, line[pos], kind, t))
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp"])
    df["timestamp"] = df["timestamp"].map(lambda v: v.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return df


def write_example(out: Path, *, seed: int = 7, n_users: int = 300) -> dict[str, Path]:
    """Write the three files under ``out``; returns their paths."""
    rng = np.random.default_rng(seed)
    items = catalogue(rng)
    users = shoppers(rng, n_users)
    ev = events(rng, items, users)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"events": out / "events.csv", "items": out / "items.csv",
             "users": out / "users.csv"}
    ev.to_csv(paths["events"], index=False)
    items.to_csv(paths["items"], index=False)
    users.to_csv(paths["users"], index=False)
    return paths


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m recops.data.retail_example OUT_FOLDER", file=sys.stderr)
        return 2
    for name, path in write_example(Path(argv[0])).items():
        print(f"{name}: {path} ({path.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
