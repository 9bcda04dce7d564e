"""Validation cost: the interactions suite on 100k, 1M, 10M synthetic rows vs reading the Parquet.

    .venv/bin/python benchmarks/bench_validation.py [--quick] [--seed N]

Each size runs in fresh processes (so peak RSS belongs to one size): one only reads the Parquet
file; one reads it and runs the gate's validation (timestamp parsing, history from the lake,
the Great Expectations checkpoint with Data Docs) against a lake holding the items and an earlier
100k-row batch (so referential and drift checks run). Ratio = validation time / read time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = {  # rows: (users, items)
    100_000: (1_000, 2_000),
    1_000_000: (10_000, 20_000),
    10_000_000: (100_000, 50_000),
}
REFERENCE_ROWS = 100_000


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _settings(home: Path):  # noqa: ANN202 - recops.config.Settings
    from recops.config import load_settings

    return load_settings(overrides={"home": home})


def _prepare(rows: int, seed: int, work: Path) -> dict:
    """Write the batch to Parquet and fill the lake with items and an earlier reference batch."""
    from recops import schema
    from recops.core.lake import Lake
    from recops.data.synthetic import generate

    users, items = SIZES[rows]
    tables = generate(users, items, rows, 8, 60, seed)
    tables.interactions.to_parquet(work / "interactions.parquet", index=False)
    ref = generate(users, items, REFERENCE_ROWS, 8, 60, seed)  # same world: no real drift
    lake = Lake(_settings(work / "home").paths.lake)
    lake.append(schema.ITEMS, tables.items, "bench-reference")
    lake.append(schema.INTERACTIONS, ref.interactions, "bench-reference")
    return {"bytes": (work / "interactions.parquet").stat().st_size}


def _read(work: Path) -> dict:
    import pandas as pd

    t0 = time.perf_counter()
    df = pd.read_parquet(work / "interactions.parquet")
    return {"read_s": time.perf_counter() - t0, "rows": len(df), "peak_rss_mb": _peak_rss_mb()}


def _validate(work: Path) -> dict:
    import pandas as pd

    from validation.gate import validate_frames
    from validation.runner import run_table  # noqa: F401 - import GX before the clock starts

    settings = _settings(work / "home")
    t0 = time.perf_counter()
    df = pd.read_parquet(work / "interactions.parquet")
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    v, _ = validate_frames(settings, {"interactions": df}, source="bench")
    t_val = time.perf_counter() - t0
    res = v.tables["interactions"]
    ordered = sorted(res.checks, key=lambda c: c.check)  # stable output
    return {"read_s": t_read, "validate_s": t_val, "passed": v.passed,
            "failed": [f"{c.check}({c.column})" for c in ordered if not c.success],
            "evaluated": len(res.checks), "peak_rss_mb": _peak_rss_mb()}


def _child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="100k rows only")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, work = args.child[0], Path(args.child[1])
        if kind == "prepare":
            res = _prepare(int(args.child[2]), args.seed, work)
        else:
            res = _read(work) if kind == "read" else _validate(work)
        print(json.dumps(res))
        return

    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 150))
    table = Table(title="validation of interactions vs reading the same Parquet "
                        f"(load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    for col in ("rows", "parquet MB", "read s", "validate s", "ratio", "peak RSS read MB",
                "peak RSS validate MB", "checks", "not passed"):
        table.add_column(col, justify="right")
    sizes = [s for s in SIZES if not args.quick or s <= 100_000]
    for rows in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-validation-") as tmp:
            work = Path(tmp)
            prep = _child("prepare", str(work), str(rows))
            r = _child("read", str(work))
            v = _child("validate", str(work))
        table.add_row(f"{rows:,}", f"{prep['bytes'] / 2**20:,.1f}", f"{r['read_s']:.2f}",
                      f"{v['validate_s']:.2f}", f"{v['validate_s'] / r['read_s']:.1f}x",
                      f"{r['peak_rss_mb']:,.0f}", f"{v['peak_rss_mb']:,.0f}",
                      str(v["evaluated"]), ", ".join(v["failed"]) or "-")
        console.print(f"{rows:,} rows done", style="dim")
    console.print(table)


if __name__ == "__main__":
    main()
