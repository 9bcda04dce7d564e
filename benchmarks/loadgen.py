"""Closed-loop HTTP load from a process of its own: `hey` (Go; Debian's `hey` package) when it
is installed, else this file run as a Python client. Both report p50/p99/p99.9 and req/s.

    python benchmarks/loadgen.py --url http://127.0.0.1:3000 --path /recommend \
        --concurrency 8 --requests 2000 --users 1,2,3
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import subprocess
import sys
import threading
import time
from typing import Any


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))] if s else float("nan")


def summary(lat: list[float], wall: float, errors: list[str], tool: str) -> dict[str, Any]:
    """Latencies (s) of the answered requests -> the figures every benchmark row shows."""
    return {"p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3,
            "p999_ms": pct(lat, 99.9) * 1e3, "max_ms": max(lat, default=float("nan")) * 1e3,
            "rps": len(lat) / wall if wall else float("nan"), "ok": len(lat),
            "errors": len(errors), "first_errors": errors[:3], "tool": tool}


def hey(url: str, body: dict[str, Any], concurrency: int, requests: int) -> dict[str, Any]:
    """One body, ``requests`` times, from ``concurrency`` connections; per-request CSV."""
    cmd = ["hey", "-n", str(max(requests, concurrency)), "-c", str(concurrency), "-m", "POST",
           "-T", "application/json", "-d", json.dumps(body), "-o", "csv", url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800)
    lat: list[float] = []
    errors: list[str] = []
    end = 0.0
    for row in csv.DictReader(io.StringIO(out.stdout)):
        took = float(row["response-time"])
        end = max(end, float(row["offset"]) + took)
        if row["status-code"] == "200":
            lat.append(took)
        else:
            errors.append(row["status-code"])
    return summary(lat, end, errors, "hey")


def python_client(url: str, bodies: list[dict[str, Any]], concurrency: int,
                  requests: int) -> dict[str, Any]:
    """``concurrency`` threads, each on its own connection, cycling through ``bodies``."""
    import httpx

    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker() -> None:
        with httpx.Client(timeout=60) as c:
            for n in counter:
                t0 = time.perf_counter()
                try:
                    r = c.post(url, json=bodies[n % len(bodies)])
                    err = None if r.status_code == 200 else f"{r.status_code} {r.text[:100]}"
                except httpx.HTTPError as exc:
                    err = repr(exc)
                dt = time.perf_counter() - t0
                with lock:
                    if err:
                        errors.append(err)
                    else:
                        lat.append(dt)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summary(lat, time.perf_counter() - t0, errors, "python")


def bodies_for(path: str, users: list[int], items: list[int]) -> list[dict[str, Any]]:
    if path == "/recommend":
        return [{"user_id": u, "k": 10} for u in users]
    # distinct events: repeats would be acknowledged without being stored (idempotency)
    return [{"user_id": users[n % len(users)], "item_id": items[n % len(items)],
             "event_type": "view", "event_id": f"bench-{time.time_ns()}-{n}"}
            for n in range(max(len(users), len(items)) * 20)]


def run(url: str, path: str, concurrency: int, requests: int, users: list[int],
        items: list[int] | None = None, tool: str = "auto") -> dict[str, Any]:
    """Load ``url + path`` from a separate process and return its summary.

    /recommend goes through hey when installed (one user per run: hey repeats one body);
    /feedback always through the Python client, since each event must be distinct.
    """
    use_hey = tool == "hey" or (tool == "auto" and path == "/recommend" and shutil.which("hey"))
    if use_hey:
        return hey(url + path, {"user_id": users[0], "k": 10}, concurrency, requests)
    cmd = [sys.executable, __file__, "--url", url, "--path", path, "--concurrency",
           str(concurrency), "--requests", str(requests), "--users", ",".join(map(str, users)),
           "--items", ",".join(map(str, items or [0]))]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--path", default="/recommend", choices=["/recommend", "/feedback"])
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--users", default="1")
    ap.add_argument("--items", default="0")
    args = ap.parse_args()
    users = [int(u) for u in args.users.split(",")]
    items = [int(i) for i in args.items.split(",")]
    print(json.dumps(python_client(args.url + args.path, bodies_for(args.path, users, items),
                                   args.concurrency, args.requests)))


if __name__ == "__main__":
    main()
