"""Synthetic generator (and MovieLens loader) throughput: rows/s and peak RSS, one process per size.

    .venv/bin/python benchmarks/bench_generator.py [--quick] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # local_data, also when imported
from local_data import movielens_dir  # noqa: E402

SIZES = {  # rows: (users, items)
    100_000: (1_000, 2_000),
    1_000_000: (10_000, 20_000),
    10_000_000: (100_000, 50_000),
}
MOVIELENS = movielens_dir()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _one(rows: int, seed: int) -> dict:
    """Run in a fresh process so peak RSS belongs to this size alone."""
    from recops.data.synthetic import generate, generate_arrays

    users, items = SIZES[rows]
    t0 = time.perf_counter()
    generate_arrays(users, items, rows, 8, 60, seed)
    t_arrays = time.perf_counter() - t0
    t0 = time.perf_counter()
    tables = generate(users, items, rows, 8, 60, seed)
    t_tables = time.perf_counter() - t0
    assert len(tables.interactions) == rows
    return {"rows": rows, "users": users, "items": items, "arrays_s": t_arrays,
            "tables_s": t_tables, "peak_rss_mb": _peak_rss_mb()}


def _movielens() -> dict:
    from recops.data.movielens import read_movielens

    t0 = time.perf_counter()
    t = read_movielens(MOVIELENS, "ml-latest-small")
    return {"rows": len(t.interactions), "load_s": time.perf_counter() - t0,
            "peak_rss_mb": _peak_rss_mb()}


def _child(arg: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", arg], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="100k and 1M rows only")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        res = _movielens() if args.child == "movielens" else _one(int(args.child), args.seed)
        print(json.dumps(res))
        return

    from rich.console import Console
    from rich.table import Table

    table = Table(title="synthetic generator (one process per size)")
    for col in ("rows", "users", "items", "arrays s", "tables s", "rows/s (tables)",
                "peak RSS MB"):
        table.add_column(col, justify="right")
    sizes = [s for s in SIZES if not args.quick or s <= 1_000_000]
    for rows in sizes:
        r = _child(str(rows))
        table.add_row(f"{rows:,}", f"{r['users']:,}", f"{r['items']:,}", f"{r['arrays_s']:.2f}",
                      f"{r['tables_s']:.2f}", f"{rows / r['tables_s']:,.0f}",
                      f"{r['peak_rss_mb']:,.0f}")
    Console().print(table)
    if (MOVIELENS / "ratings.csv").exists():
        r = _child("movielens")
        Console().print(f"ml-latest-small load: {r['rows']:,} ratings in {r['load_s']:.2f} s "
                        f"({r['rows'] / r['load_s']:,.0f} rows/s), peak RSS "
                        f"{r['peak_rss_mb']:,.0f} MB")


if __name__ == "__main__":
    main()
