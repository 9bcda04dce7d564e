"""/feedback load test: acknowledged events/s and latency at several concurrencies, over HTTP.

Builds a small world (synthetic lake -> Feast sources, apply, materialise -> a popularity
champion), starts `bentoml serve`, and drives /feedback from a separate client process (an
async httpx loop on loopback) at each concurrency. Every event is distinct (its own timestamp
and event_id), so every one is stored. Reports acknowledged events/s, p50/p99/p99.9 latency,
events per durable commit (group commit at work), and checks that the log holds exactly the
acknowledged events (wrk stops on time: up to one in-flight event per connection is stored but
not counted as answered). Load comes from wrk with benchmarks/feedback.lua when installed (a
Python client cannot drive more than a few hundred events/s on a busy machine), else an async
httpx client. ``--backend postgres`` runs the same against the shared PostgreSQL log.

    .venv/bin/python benchmarks/bench_feedback.py --quick
    .venv/bin/python benchmarks/bench_feedback.py --concurrency 1 8 32 --requests 3000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

PG_DSN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))] if s else float("nan")


# --- client process ---------------------------------------------------------------------------

async def _load(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    users = [int(u) for u in args.users.split(",")]
    items = [int(i) for i in args.items.split(",")]
    lat: list[float] = []
    errors: list[str] = []
    counter = iter(range(args.first, args.first + args.requests))
    t_base = 1_780_000_000  # 2026-05-28: inside the service's accepted window

    async def worker(c: httpx.AsyncClient) -> None:
        for n in counter:  # closed loop: each worker keeps one request in flight
            body = {"user_id": users[n % len(users)], "item_id": items[n % len(items)],
                    "event_type": "view", "event_id": f"{args.run}-{n}",
                    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                               time.gmtime(t_base + n))}
            t0 = time.perf_counter()
            try:
                r = await c.post("/feedback", json=body)
                ok = r.status_code == 200 and r.json()["accepted"]
                err = None if ok else f"{r.status_code} {r.text[:100]}"
            except httpx.HTTPError as exc:
                ok, err = False, repr(exc)
            if ok:
                lat.append(time.perf_counter() - t0)
            else:
                errors.append(err or "")

    conc = args.concurrency[0]
    limits = httpx.Limits(max_connections=conc)
    async with httpx.AsyncClient(base_url=args.client, timeout=60, limits=limits) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for _ in range(conc)))
        wall = time.perf_counter() - t0
    return {"concurrency": conc, "acked": len(lat), "errors": len(errors),
            "first_errors": errors[:3], "events_per_s": len(lat) / wall,
            "p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3,
            "p999_ms": pct(lat, 99.9) * 1e3, "wall_s": wall}


def run_client(url: str, concurrency: int, requests: int, first: int, run: str,
               users: list[int], items: list[int]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--client", url, "--concurrency", str(concurrency),
           "--requests", str(requests), "--first", str(first), "--run", run,
           "--users", ",".join(map(str, users)), "--items", ",".join(map(str, items))]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run_wrk(url: str, concurrency: int, seconds: int, run: str, users: list[int],
            items: list[int]) -> dict[str, Any]:
    """wrk (C, Debian's package) with benchmarks/feedback.lua: distinct events, closed loop."""
    cmd = ["wrk", "-t", str(min(2, concurrency)), "-c", str(concurrency), "-d", f"{seconds}s",
           "-s", str(REPO / "benchmarks" / "feedback.lua"), url, "--", run,
           ",".join(map(str, users)), ",".join(map(str, items))]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 120)
    w = json.loads(out.stdout.strip().splitlines()[-1])
    acked = w["completed"] - w["non_2xx"]
    return {"concurrency": concurrency, "acked": acked,
            "errors": w["non_2xx"] + w["socket_errors"], "first_errors": [],
            "events_per_s": acked / (w["duration_us"] / 1e6), "p50_ms": w["p50_us"] / 1e3,
            "p99_ms": w["p99_us"] / 1e3, "p999_ms": w["p999_us"] / 1e3,
            "wall_s": w["duration_us"] / 1e6, "tool": "wrk"}


# --- world and server -------------------------------------------------------------------------

def build_world(home: Path, backend: str) -> Any:
    """Synthetic lake -> Feast (SQLite online store) -> a popularity model as champion."""
    from recops import schema
    from recops.config import load_settings
    from recops.core.lake import Lake
    from recops.data.synthetic import generate
    from recops.features import feast_store
    from recops.features.featurize import build_sources
    from recops.release import registry
    from recops.training.models import create_model, make_checkpoint

    ov: dict[str, Any] = {"home": home, "stores.feast_project": "b" + uuid.uuid4().hex[:8]}
    if backend == "postgres":
        ov.update({"feedback.backend": "postgres", "stores.postgres_dsn": PG_DSN,
                   "feedback.table": "bench_feedback_" + uuid.uuid4().hex[:8]})
    settings = load_settings(overrides=ov)
    tables = generate(200, 500, 5_000, seed=3)
    lake = Lake(settings.paths.lake)
    for table, df in ((schema.ITEMS, tables.items), (schema.USERS, tables.users),
                      (schema.INTERACTIONS, tables.interactions)):
        lake.append(table, df, source="bench")
    build_sources(settings, lake, text_vectors=False)
    feast_store.apply(settings)
    feast_store.materialize(settings)
    ids = sorted(int(i) for i in tables.items[schema.ITEM_ID])
    args = {"max_len": settings.model.max_len}
    ckpt = make_checkpoint(create_model("pop", len(ids), args), ids, model_settings=args,
                           train_settings={})
    meta = {"run_id": "bench", "metrics": {"hr@10": 0, "ndcg@10": 0, "mrr": 0,
                                           "coverage@10": 0},
            "per_segment": {}, "privacy": None, "privacy_total": None, "data_version": "bench",
            "training_mode": "centralised", "federated": None,
            "validation": {"passed": True, "report": None}}
    registry.promote(settings, registry.register(settings, ckpt, meta))
    return settings, ids


def commits(url: str) -> float:
    import httpx

    text = httpx.get(url + "/metrics", timeout=30).text
    return sum(float(v) for v in re.findall(
        r"^recops_feedback_commits_total(?:\{[^}]*\})? (\S+)", text, re.M))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small run that proves it works")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--requests", type=int, default=3000, help="events per concurrency")
    ap.add_argument("--backend", choices=["file", "postgres"], default="file")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--tool", choices=["auto", "wrk", "python"], default="auto",
                    help="load generator (auto: wrk when installed; it runs --seconds per level)")
    ap.add_argument("--seconds", type=int, default=20, help="wrk: seconds per concurrency")
    # client-process arguments (internal)
    ap.add_argument("--client", help=argparse.SUPPRESS)
    ap.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--run", default="r", help=argparse.SUPPRESS)
    ap.add_argument("--users", help=argparse.SUPPRESS)
    ap.add_argument("--items", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        print(json.dumps(asyncio.run(_load(args))))
        return

    from bench_serving import Server  # the same `bentoml serve` wrapper as the serving bench

    from recops.core.feedback import open_log

    requests = 200 if args.quick else args.requests
    use_wrk = args.tool == "wrk" or (args.tool == "auto" and shutil.which("wrk") is not None)
    with tempfile.TemporaryDirectory(prefix="bench_feedback_") as tmp:
        t0 = time.perf_counter()
        settings, items = build_world(Path(tmp) / "home", args.backend)
        print(f"world built in {time.perf_counter() - t0:.0f} s; starting bentoml serve",
              file=sys.stderr)
        server = Server(settings, Path(tmp) / "bentoml.log")
        results = []
        try:
            log = open_log(settings)
            first = 0
            for c in args.concurrency:
                before_rows, before_commits = log.count(), commits(server.url)
                users = [900_000 + u for u in range(max(64, c * 4))]
                if use_wrk:
                    res = run_wrk(server.url, c, 5 if args.quick else args.seconds,
                                  uuid.uuid4().hex[:6], users, items[:200])
                    time.sleep(1)  # events wrk stopped waiting for still land: let them
                else:
                    res = run_client(server.url, c, requests, first, uuid.uuid4().hex[:6],
                                     users, items[:200])
                first += requests
                res["rows_written"] = log.count() - before_rows
                used = commits(server.url) - before_commits
                res["events_per_commit"] = res["acked"] / used if used else float("nan")
                res["rss_mb"] = server.rss_mb()
                results.append(res)
                print(json.dumps(res), file=sys.stderr)
        finally:
            server.stop()
            if args.backend == "postgres":
                import psycopg

                with psycopg.connect(PG_DSN.replace("+psycopg", ""), autocommit=True) as conn:
                    conn.execute(f"DROP TABLE IF EXISTS {settings.feedback.table}")
    # wrk stops on time: the requests in flight then are stored but not counted as answered.
    lost = [r["concurrency"] for r in results if not
            0 <= r["rows_written"] - r["acked"] <= (r["concurrency"] if use_wrk else 0)]
    print(f"{'conc':>5} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} "
          f"{'ev/commit':>9} {'errors':>6} {'rows-acked':>11}")
    for r in results:
        print(f"{r['concurrency']:>5} {r['events_per_s']:>9.0f} {r['p50_ms']:>8.1f} "
              f"{r['p99_ms']:>8.1f} {r['p999_ms']:>9.1f} {r['events_per_commit']:>9.1f} "
              f"{r['errors']:>6} {r['rows_written'] - r['acked']:>11}")
    if args.json:
        args.json.write_text(json.dumps({"backend": args.backend, "results": results}, indent=1))
    if lost:
        raise SystemExit(f"log rows != acknowledged events at concurrency {lost}")


if __name__ == "__main__":
    main()
