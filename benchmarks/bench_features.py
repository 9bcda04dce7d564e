"""Feature store figures: online read latency (SQLite vs Redis vs raw redis-py), push-to-visible,
materialisation throughput, historical retrieval time, DuckDB vs Feast's file (dask) offline store.

    .venv/bin/python benchmarks/bench_features.py [--quick] [--skip-historical] [--seed N]

Full: 1M synthetic interactions, historical retrieval of 100k and 1M labels through the DuckDB
offline store (the default), and of --file-labels labels through both offline stores on the
same sources (the file store needs minutes per 10k labels, so not 1M). --quick: 100k
interactions, 10k and 100k labels. Needs Redis at 127.0.0.1:6379 (else SQLite only).
Everything lives in a temporary home; the Redis keys of its projects are removed at the end.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

console = Console()


def _pct(xs: list[float]) -> tuple[float, float]:
    a = np.asarray(xs) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


def _settings(home: Path, online: str, offline: str = "duckdb"):
    from recops.config import load_settings

    for key in [k for k in os.environ if k.startswith("RECOPS_")]:
        del os.environ[key]
    return load_settings(overrides={"home": str(home), "stores.online": online,
                                    "stores.offline": offline,
                                    "stores.feast_project": f"bench_{uuid.uuid4().hex[:8]}"})


def _time(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def online_latency(store, users: np.ndarray, reps: int, rng) -> dict[str, tuple[float, float]]:
    from recops.features.feast_online import USER_FEATURE_REFS

    out = {}
    for batch in (1, 100):
        times = []
        for i in range(reps + 20):
            ids = rng.choice(users, batch, replace=False).tolist()
            t0 = time.perf_counter()
            store.get_online_features(features=USER_FEATURE_REFS,
                                      entity_rows=[{"user_id": u} for u in ids]).to_dict()
            if i >= 20:  # warm-up: registry cache, connections
                times.append(time.perf_counter() - t0)
        out[f"feast {batch}"] = _pct(times)
    return out


def raw_redis_latency(project: str, users: np.ndarray, reps: int, rng) -> dict:
    """The floor: redis-py reading the very hash Feast reads, no decoding."""
    import redis
    from feast.infra.online_stores.redis import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    client = redis.Redis(host="127.0.0.1", port=6379)

    def key(u: int) -> bytes:
        ek = EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=int(u))])
        return _redis_key(project, ek, entity_key_serialization_version=3)

    out = {}
    for batch in (1, 100):
        times = []
        for i in range(reps + 20):
            keys = [key(u) for u in rng.choice(users, batch, replace=False)]
            t0 = time.perf_counter()
            with client.pipeline(transaction=False) as pipe:
                for k in keys:
                    pipe.hgetall(k)
                res = pipe.execute()
            if i >= 20:
                times.append(time.perf_counter() - t0)
        assert all(res), "raw redis read found no hash: key layout changed?"
        out[f"raw {batch}"] = _pct(times)
    return out


def push_to_visible(store, users: np.ndarray, reps: int, rng) -> tuple[tuple[float, float], float]:
    from recops.features.feast_online import online_features, push_event

    times, reads = [], []
    base = pd.Timestamp.now(tz="UTC")
    for i in range(reps):
        u = int(rng.choice(users))
        item = 10_000_000 + i
        t0 = time.perf_counter()
        push_event(store, {"user_id": u, "item_id": item,
                           "event_timestamp": base + pd.Timedelta(milliseconds=i)})
        n = 0
        while True:
            n += 1
            if online_features(store, [u]).recent_items.iloc[0][-1] == item:
                break
        times.append(time.perf_counter() - t0)
        reads.append(n)
    return _pct(times), float(np.mean(reads))


def print_latency(latency: dict[str, dict]) -> None:
    lat = Table(title="online read latency through Feast's Python API (ms), "
                      "ratio to the raw redis-py read of the same key")
    for col in ("store", "1 user p50", "1 user p99", "100 users p50", "100 users p99"):
        lat.add_column(col, justify="right")
    floor = latency.get("redis-py")
    for name, d in latency.items():
        cells = []
        for batch in (1, 100):
            key = f"{'raw' if name == 'redis-py' else 'feast'} {batch}"
            for i in (0, 1):
                v = d[key][i]
                ratio = f" ({v / floor[f'raw {batch}'][i]:.1f}x)" if floor else ""
                cells.append(f"{v:.2f}{ratio}")
        lat.add_row(name, *cells)
    console.print(lat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100k interactions, 10k/100k labels")
    ap.add_argument("--skip-historical", action="store_true")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--reps", type=int, default=300, help="online reads per measurement")
    ap.add_argument("--file-labels", type=int, default=10_000,
                    help="labels for the DuckDB vs file offline store comparison (0: skip)")
    args = ap.parse_args()

    import feast.infra.offline_stores.duckdb  # noqa: F401  (import once, outside the timings)

    from recops.core.lake import Lake
    from recops.data.synthetic import generate
    from recops.features import feast_store
    from recops.features.featurize import build_sources

    n_inter, n_users, n_items = (100_000, 1_000, 2_000) if args.quick else (1_000_000, 10_000,
                                                                            20_000)
    label_sizes = (10_000, 100_000) if args.quick else (100_000, 1_000_000)
    rng = np.random.default_rng(args.seed)
    tables = generate(n_users, n_items, n_inter, seed=args.seed)
    stores = ["sqlite"] + (["redis"] if _redis_up() else [])
    offline_settings = None
    class _Rows(list):  # print each figure as it lands, so a long run shows progress
        def append(self, r: tuple[str, str, str]) -> None:
            console.log(" | ".join(r))
            super().append(r)

    rows = _Rows()
    latency: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_features_") as tmp:
        for online in stores:
            settings = _settings(Path(tmp) / online, online)
            lake = Lake(settings.paths.lake)
            for name, df in tables.as_dict().items():
                lake.append(name, df, tables.source)
            manifest, t_build = _time(build_sources, settings, lake, text_vectors=False)
            user_rows = manifest["sources"]["user_events.parquet"]["rows"]
            rows.append((online, "build sources (featurize)",
                         f"{t_build:.1f} s = {n_inter / t_build:,.0f} interactions/s"))
            _, t_apply = _time(feast_store.apply, settings)
            rows.append((online, "feast apply (CLI subprocess)", f"{t_apply:.1f} s"))
            _, t_mat = _time(feast_store.materialize, settings)
            if online == "sqlite":
                t_mat_sqlite = t_mat
            rows.append((online, "materialise, first (4 views)",
                         f"{t_mat:.1f} s = {n_inter / t_mat:,.0f} interactions/s "
                         f"({user_rows:,} user rows scanned)"))
            _, t_mat2 = _time(feast_store.materialize, settings)
            rows.append((online, "materialise again (nothing new)", f"{t_mat2:.2f} s"))
            store = feast_store.get_store(settings)
            users = tables.interactions.user_id.unique()
            with console.status(f"online reads ({online})"):
                latency[online] = online_latency(store, users, args.reps, rng)
                if online == "redis":
                    latency["redis-py"] = raw_redis_latency(store.project, users, args.reps, rng)
            (p50, p99), reads = push_to_visible(store, users, min(args.reps, 200), rng)
            rows.append((online, "push -> visible (push_event + 1 online read)",
                         f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, {reads:.2f} reads"))
            if online == "redis":
                feast_store.teardown(settings)
            else:
                offline_settings = settings
        print_latency(latency)  # before the slowest part, so a cut-short run still shows it
        # Last, as it is the slowest. The DuckDB offline store (default) at every size.
        ev = tables.interactions

        def labels_of(n: int) -> pd.DataFrame:
            pick = rng.integers(0, len(ev), n)
            return ev.iloc[pick][["user_id", "item_id", "event_timestamp"]].reset_index(drop=True)

        def retrieve(settings, labels: pd.DataFrame, store_name: str) -> float:
            got, t_hist = _time(feast_store.historical_sequences, settings, labels)
            assert len(got) == len(labels)
            rows.append((store_name, f"historical retrieval, {len(labels):,} labels",
                         f"{t_hist:.1f} s = {len(labels) / t_hist:,.0f} labels/s"))
            return t_hist

        for n in () if args.skip_historical else label_sizes:
            retrieve(offline_settings, labels_of(n), "duckdb offline")
        if args.file_labels and not args.skip_historical:
            # The same sources through Feast's file (dask) offline store, for the ratio.
            # Same home, so the same source files; a project of its own in the same registry.
            fs = _settings(offline_settings.paths.home, "sqlite", "file")
            feast_store.apply(fs)
            _, t_mat_file = _time(feast_store.materialize, fs)
            rows.append(("file offline", "materialise, first (4 views, SQLite)",
                         f"{t_mat_file:.1f} s = {n_inter / t_mat_file:,.0f} interactions/s "
                         f"({t_mat_file / t_mat_sqlite:.1f}x DuckDB's)"))
            labels = labels_of(args.file_labels)
            t_duck = retrieve(offline_settings, labels, "duckdb offline")
            t_file = retrieve(fs, labels, "file offline")
            rows.append(("file / duckdb", f"historical retrieval, {len(labels):,} labels",
                         f"{t_file / t_duck:.1f}x"))

    table = Table(title=f"features: {n_inter:,} interactions, {n_users:,} users")
    for col in ("store", "figure", "value"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    console.print(table)


if __name__ == "__main__":
    main()
