"""Erasure on ml-latest-small: how long `recops subject erase` takes, and what it rewrites.

Builds a home the way the platform fills one: the download under ``<home>/datasets``, ingest
and Great Expectations validation into the lake (a staged copy stays), the feature sources,
`feast apply` and a full materialisation into the SQLite online store, a feedback log of
``--feedback`` events over all users, and a run directory with its leave-last-out labels. Then
erases each of ``--users`` (default: the most active user, and a median one) and prints, per
user, the places rewritten with their rows, the time of `erase()` in a warm process, and the
wall time of the whole `recops subject erase` command (Python start and Feast import included).

    .venv/bin/python benchmarks/bench_erasure.py [--data "$RECOPS_DATA__ROOT"] [--users 414 100]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # local_data, also when imported
from local_data import data_root  # noqa: E402

DATA = data_root()


def build_world(home: Path, data: Path, *, feedback: int = 2000) -> Any:
    """The home described above; returns its settings."""
    import pandas as pd

    from recops import schema
    from recops.config import load_settings
    from recops.core.feedback import open_log
    from recops.core.lake import Lake
    from recops.core.runs import RunDir
    from recops.features import feast_store
    from recops.features.featurize import build_sources
    from recops.orchestration import pipeline
    from recops.training.splits import leave_last_out_labels

    shutil.copytree(data / "ml-latest-small", home / "datasets" / "ml-latest-small")
    s = load_settings(overrides={"home": home, "data.dataset": "ml-latest-small",
                                 "data.download": False, "model.max_len": 50})
    staged = pipeline.ingest(s, "bench")
    version = pipeline.validate(s, "bench", staged["staged_id"])["dataset_version"]
    lake = Lake(s.paths.lake)
    build_sources(s, lake, text_vectors=False)
    feast_store.apply(s)
    feast_store.materialize(s)
    inter = lake.read(schema.INTERACTIONS)
    users = sorted(inter[schema.USER_ID].unique())
    t0 = inter[schema.EVENT_TIMESTAMP].max()
    open_log(s).append_many([
        {schema.USER_ID: int(users[n % len(users)]), schema.ITEM_ID: 1, schema.RATING: 4.0,
         schema.EVENT_TYPE: "rating",
         schema.EVENT_TIMESTAMP: (t0 + pd.Timedelta(seconds=n + 1)).isoformat()}
        for n in range(feedback)])
    run = RunDir.of(s, "bench-run")
    run.write_frame(RunDir.LABELS, leave_last_out_labels(inter))
    run.write_json(RunDir.TRAIN, {"dataset_version": version, "mode": "centralised"})
    return s


def default_users(settings: Any) -> list[int]:
    """The most active user and a median one."""
    from recops import schema
    from recops.core.lake import Lake

    counts = Lake(settings.paths.lake).read(schema.INTERACTIONS)[schema.USER_ID].value_counts()
    return [int(counts.index[0]), int(counts.index[len(counts) // 2])]


def measure(settings: Any, user: int) -> dict[str, Any]:
    """erase() of ``user`` in this (warm) process: seconds, places rewritten, rows removed."""
    from recops.compliance.subjects import erase

    t0 = time.perf_counter()
    res = erase(settings, user, reason="benchmark")
    seconds = time.perf_counter() - t0
    places = [{"where": f"lake {s['table']}", "path": s["old"], "rows": s["rows_removed"]}
              for s in res.superseded] + res.places
    return {"user": user, "seconds": seconds, "rows_removed": res.rows_removed,
            "online_rows": res.online_rows, "places": places}


def cli_seconds(settings: Any, user: int) -> float:
    """Wall time of the `recops subject erase` command, a fresh process."""
    config = settings.paths.home.parent / "bench-settings.yaml"
    settings.save(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOPS_")}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "recops.cli", "--config", str(config), "--home",
                    str(settings.paths.home), "subject", "erase", str(user), "--yes"],
                   check=True, capture_output=True, cwd=REPO, env=env, timeout=600)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA, help="holds ml-latest-small/")
    ap.add_argument("--users", type=int, nargs="*", help="user ids to erase (default: the "
                    "most active and a median user)")
    ap.add_argument("--feedback", type=int, default=2000, help="feedback events logged")
    args = ap.parse_args()
    if not (args.data / "ml-latest-small" / "ratings.csv").exists():
        sys.exit(f"ml-latest-small not found under {args.data}")
    for k, v in {"GX_ANALYTICS_ENABLED": "false", "BENTOML_DO_NOT_TRACK": "true",
                 "FEAST_USAGE": "False", "DO_NOT_TRACK": "1"}.items():
        os.environ.setdefault(k, v)
    with tempfile.TemporaryDirectory(prefix="bench-erasure-") as tmp:
        t0 = time.perf_counter()
        s = build_world(Path(tmp) / "home", args.data, feedback=args.feedback)
        print(f"world built in {time.perf_counter() - t0:.1f} s under {s.paths.home}")
        users = args.users or default_users(s)
        results = [measure(s, u) for u in users[:-1]]
        cli = cli_seconds(s, users[-1])
        last = measure(s, users[-1])  # a repeat: finds nothing left (idempotent)
        print(f"\nload: {subprocess.run(['uptime'], capture_output=True, text=True).stdout}")
        for r in results:
            print(f"erase user {r['user']}: {r['seconds']:.2f} s warm, {r['rows_removed']} "
                  f"row(s) removed, {r['online_rows']} online row(s)")
            print(f"  {'place':<22} {'rows':>6}  path")
            for p in r["places"]:
                print(f"  {p['where']:<22} {p['rows']:>6}  {p['path']}")
        print(f"erase user {users[-1]}: `recops subject erase` {cli:.1f} s wall (fresh "
              f"process); a repeat then took {last['seconds']:.2f} s and removed "
              f"{last['rows_removed']} row(s)")


if __name__ == "__main__":
    main()
