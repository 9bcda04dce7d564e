"""recops_pipeline on Airflow's Celery executor: wall time on 1 worker against 2 workers.

For each worker count, `recops up --executor celery --workers N` starts the platform on a
private PostgreSQL database (metadata and Celery results) with a Redis broker; recops_pipeline
is triggered through Airflow's REST API ``--runs`` times (the first run is reported apart: it
pays for every worker's first imports) and each run is timed from trigger to end; `recops down`
stops everything. Tiny synthetic data and no promotion, so every run does the same work.

    .venv/bin/python benchmarks/bench_celery.py                    # 1 and 2 workers, 2 runs each
    .venv/bin/python benchmarks/bench_celery.py --workers 2 --runs 3

Needs PostgreSQL on 127.0.0.1:5432 (trust) and Redis on 6379 (`make services`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_DB = 12  # the benchmark's broker database on the shared Redis
TINY: dict[str, Any] = {
    "data.dataset": "synthetic", "data.synthetic.n_users": 60, "data.synthetic.n_items": 80,
    "data.synthetic.n_interactions": 3000, "data.synthetic.days": 20,
    "model.d_model": 16, "model.n_layers": 1, "model.n_heads": 1, "model.max_len": 20,
    "train.epochs": 10, "train.lr": 5e-3, "train.batch_size": 32, "train.num_threads": 1,
    "gate.floor": 1.0, "serving.workers": 1, "platform.parallelism": 2,
}


def _recops(config: Path, *args: Any) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOPS_")}
    return subprocess.run([sys.executable, "-m", "recops.cli", "--config", str(config),
                           *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=1800, check=False)


def _timed_runs(settings: Any, runs: int) -> list[float]:
    from recops.orchestration import platform_state
    from recops.orchestration.platform_health import AirflowClient

    state = platform_state.platform_state(settings)
    assert state is not None, "the platform is not up"
    client = AirflowClient(state, timeout=30)
    out = []
    try:
        for _ in range(runs):
            t0 = time.monotonic()
            run_id = client.request("POST", "dags/recops_pipeline/dagRuns",
                                    json={"logical_date": None, "conf": {}})["dag_run_id"]
            while True:
                run = client.request("GET", f"dags/recops_pipeline/dagRuns/{run_id}")
                if run["state"] in ("success", "failed"):
                    break
                time.sleep(1)
            if run["state"] != "success":
                raise SystemExit(f"run {run_id} ended {run['state']}")
            out.append(time.monotonic() - t0)
    finally:
        client.close()
    return out


def measure(workers: int, runs: int, root: Path) -> list[float]:
    import psycopg
    import redis

    from recops.config import load_settings
    from recops.orchestration.airflow_runner import free_port

    db = f"recops_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()
    home = root / f"w{workers}" / "home"
    settings = load_settings(overrides={
        "home": home, **TINY, "stores.airflow_db": "postgres",
        "stores.postgres_dsn": f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
        "platform.celery_broker": f"redis://127.0.0.1:6379/{REDIS_DB}"})
    config = settings.save(home.parent / "recops.yaml")
    try:
        up = _recops(config, "up", "--airflow-port", free_port(), "--executor", "celery",
                     "--workers", workers)
        if up.returncode != 0:
            raise SystemExit(f"recops up failed:\n{up.stdout}\n{up.stderr}")
        return _timed_runs(settings, runs)
    finally:
        _recops(config, "down")
        redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=2, help="runs per worker count (first apart)")
    args = ap.parse_args()
    if args.runs < 2 or min(args.workers) < 1:
        ap.error("--runs must be at least 2 and --workers at least 1")
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"recops_pipeline on Celery workers (tiny data; load "
                        f"{os.getloadavg()[0]:.1f} at start)")
    for col in ("workers", "first run (s)", "later runs, median (s)", "later runs (s)"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory(prefix="recops-bench-celery-") as tmp:
        for n in args.workers:
            times = measure(n, args.runs, Path(tmp))
            later = times[1:]
            table.add_row(str(n), f"{times[0]:.1f}", f"{statistics.median(later):.1f}",
                          ", ".join(f"{t:.1f}" for t in later))
    Console().print(table)


if __name__ == "__main__":
    main()
