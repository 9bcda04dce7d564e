"""Ingest and validation at scale: seconds and peak RSS per stage, at 1M and 10M events.

    nice -n 10 .venv/bin/python benchmarks/bench_ingest.py [--sizes 1000000,10000000]
        [--formats csv,parquet] [--work /tmp/recops-bench-ingest] [--keep]

Synthetic events in a shop's shape (columns customer, sku, event, ts; view/click/like/
purchase/dislike; 100k customers, 50k SKUs whatever the size, so only the number of events
changes) are written under --work as CSV (ISO-8601 times) and Parquet (timestamps). Each stage
runs as the real command in a child process of its own, and its peak RSS is the child's VmHWM
(read as it exits):

- ingest:   ``recops ingest --file F --map ...``: read, typed and checked by the contract,
            written as the staged batch (Parquet);
- validate: ``recops validate STAGED``: the Great Expectations suites over the staged batch,
            then the lake write of the accepted tables;
- with --postgres URL, ingest once more from a PostgreSQL table holding the same events;
- with --team, a team's first batch instead: customers and SKUs as text ids (``c-17``,
  ``SKU-100042``), ISO-8601 times in both formats, ingested with ``recops ingest --events F
  --items CATALOGUE --columns ...`` into an empty lake (ids hashed into the id map, events of
  unknown SKUs set aside), the catalogue a CSV of the 50k SKUs with text and a category.

Without --team, the lake of each run already holds the 50k-SKU catalogue and an earlier
100k-event batch (so the referential and drift checks have something to compare with).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
N_USERS, N_ITEMS, CHUNK = 100_000, 50_000, 1_000_000
EVENTS = ["view", "click", "like", "purchase", "dislike"]
WEIGHTS = [0.70, 0.18, 0.05, 0.04, 0.03]
MAP = ["--map", "customer=user_id", "--map", "sku=item_id", "--map", "event=event_type",
       "--map", "ts=event_timestamp"]
T0, SPAN = 1_735_689_600, 365 * 86_400  # 2025-01-01, one year of seconds


def _chunks(rows: int, seed: int, team: bool = False):  # noqa: ANN202 - yields pandas frames
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    done, step = 0, max(1, SPAN // rows)
    while done < rows:
        n = min(CHUNK, rows - done)
        # One event every `step` seconds: (customer, sku, ts) is unique, as the suite demands.
        ts = T0 + (done + np.arange(n)) * step
        df = pd.DataFrame({
            "customer": rng.integers(1, N_USERS + 1, n),
            "sku": 100_000 + rng.zipf(1.3, n) % N_ITEMS,
            "event": rng.choice(EVENTS, n, p=WEIGHTS),
            "ts": pd.to_datetime(ts, unit="s", utc=True),
        })
        if team:  # a team's ids: customer and SKU codes as text
            df["customer"] = "c-" + df["customer"].astype(str)
            df["sku"] = "SKU-" + df["sku"].astype(str)
        yield df
        done += n


def generate(rows: int, fmt: str, path: Path, seed: int, team: bool = False) -> None:
    """Write ``rows`` events to ``path`` a million at a time (bounded memory)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    writer = None
    for df in _chunks(rows, seed, team):
        if fmt == "csv" or team:  # a team's times as ISO-8601 text, in Parquet too
            df["ts"] = df["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        table = pa.Table.from_pandas(df, preserve_index=False)
        if writer is None:
            writer = (pacsv.CSVWriter(str(path), table.schema) if fmt == "csv"
                      else pq.ParquetWriter(str(path), table.schema))
        writer.write_table(table)
    assert writer is not None
    writer.close()


def prepare_home(home: Path, seed: int) -> None:
    """A lake with the catalogue, the customers and an earlier batch of 100k events."""
    import numpy as np
    import pandas as pd

    from recops import schema
    from recops.config import load_settings
    from recops.core.lake import Lake

    lake = Lake(load_settings(overrides={"home": home}).paths.lake)
    skus = np.arange(100_000, 100_000 + N_ITEMS)
    titles = [f"product {s}" for s in skus]
    lake.append(schema.ITEMS, pd.DataFrame({
        schema.ITEM_ID: skus, schema.TITLE: titles, schema.GENRES: "shop",
        schema.TEXT: titles}), "bench-catalogue")
    lake.append(schema.USERS, pd.DataFrame({schema.USER_ID: np.arange(1, N_USERS + 1)}),
                "bench-catalogue")
    first = next(_chunks(100_000, seed + 1)).rename(columns={
        "customer": schema.USER_ID, "sku": schema.ITEM_ID, "event": schema.EVENT_TYPE,
        "ts": schema.EVENT_TIMESTAMP})
    first[schema.RATING] = np.float32("nan")
    lake.append(schema.INTERACTIONS, first, "bench-history")


def write_catalogue(path: Path) -> None:
    """A team's catalogue of the N_ITEMS SKUs: a title, a description and a category each."""
    import pandas as pd

    skus = range(100_000, 100_000 + N_ITEMS)
    pd.DataFrame({"sku": [f"SKU-{s}" for s in skus],
                  "title": [f"product {s}" for s in skus],
                  "description": [f"a product of line {s % 97}" for s in skus],
                  "category": [f"cat-{s % 40}" for s in skus]}).to_csv(path, index=False)


TEAM = ["--columns", "customer=user_id,sku=item_id,event=event_type,ts=timestamp",
        "--item-attributes", "category"]


# The child's own peak: VmHWM of the process after its exec. (ru_maxrss from wait4 is not: Linux
# carries the forking parent's resident size into the child's maxrss at exec, so a parent that
# generated 10M events would be counted in every stage it starts.)
_HWM = """
import atexit, os, runpy, sys
def _hwm():
    with open("/proc/self/status") as f:
        kb = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    with open(os.environ["RECOPS_BENCH_HWM"], "w") as out:
        out.write(kb)
atexit.register(_hwm)
sys.argv = ["recops", *sys.argv[1:]]
runpy.run_module("recops.cli", run_name="__main__", alter_sys=True)
"""


def run_stage(args: list[str], home: Path) -> tuple[float, float, str]:
    """Run ``recops ARGS`` in a child; (seconds, its peak RSS in MB, its stdout)."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.NamedTemporaryFile("r") as hwm:
        env = {**os.environ, "RECOPS_HOME": str(home), "COLUMNS": "200",
               "RECOPS_BENCH_HWM": hwm.name}
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-c", _HWM, *args], cwd=REPO, env=env,
                           stdout=out, stderr=err, check=False)
        seconds = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        text = out.read()
        if p.returncode != 0:
            raise SystemExit(f"recops {' '.join(args)} failed ({p.returncode}):\n{text}\n"
                             f"{err.read()}")
        kb = hwm.read().strip()
    if not kb:
        raise SystemExit(f"recops {' '.join(args)}: no peak RSS recorded")
    return seconds, int(kb) / 1024, text


def ingest_from_postgres(admin: str, csv: Path, home: Path) -> tuple[float, float]:
    """``recops ingest`` from a table holding the CSV's events; (seconds, peak RSS in MB)."""
    import psycopg

    db = "recops_bench_ingest"
    url = admin.rsplit("/", 1)[0] + "/" + db
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {db}")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE events (customer bigint, sku bigint, event text, "
                         "ts timestamptz)")
            with conn.cursor() as cur, cur.copy("COPY events FROM STDIN (FORMAT csv, HEADER)") \
                    as copy, open(csv, "rb") as f:
                while block := f.read(1 << 20):
                    copy.write(block)
        seconds, rss, _ = run_stage(["ingest", "--file", f"{url}?table=events", *MAP], home)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    return seconds, rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--formats", default="csv,parquet")
    ap.add_argument("--work", type=Path, default=Path("/tmp/recops-bench-ingest"))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep the data files and homes")
    ap.add_argument("--team", action="store_true",
                    help="a team's first batch: text ids (c-17, SKU-100042), ingested with "
                         "--events/--items/--columns into an empty lake")
    ap.add_argument("--postgres", metavar="URL", help="also ingest each size from a PostgreSQL "
                    "table: a database recops_bench_ingest is created on this server "
                    "(e.g. postgresql://postgres@127.0.0.1:5432/postgres), filled from the CSV "
                    "file with COPY, read by `recops ingest --file postgresql://...?table=events`"
                    " and dropped")
    args = ap.parse_args()
    try:
        sizes = [int(float(x)) for x in args.sizes.split(",")]
    except ValueError:
        ap.error(f"--sizes {args.sizes!r}: expected numbers of events, e.g. 1000000,10000000")
    if min(sizes) < 1000:
        ap.error("--sizes: each size must be at least 1000 events")
    formats = args.formats.split(",")
    if args.team and args.postgres:
        ap.error("--team and --postgres: measure one at a time")
    if args.postgres and "csv" not in formats:
        formats.insert(0, "csv")  # the table is filled from the CSV file
    if not set(formats) <= {"csv", "parquet"}:
        ap.error(f"--formats {args.formats!r}: expected csv and/or parquet")
    if args.work.resolve().is_relative_to(REPO):
        ap.error(f"--work {args.work}: generated data goes outside the repository (e.g. /tmp)")
    sys.path.insert(0, str(REPO))

    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 140))
    table = Table(title=f"ingest and validation per stage ({os.cpu_count()} CPUs, "
                        f"load avg {os.getloadavg()[0]:.1f} at the start)")
    for col in ("events", "format", "file MB", "stage", "seconds", "peak RSS MB", "rows/s"):
        table.add_column(col, justify="right")
    args.work.mkdir(parents=True, exist_ok=True)
    for rows in sizes:
        for fmt in formats:
            kind = "team" if args.team else "events"
            data = args.work / f"{kind}-{rows}.{fmt}"
            if not data.exists():
                console.print(f"generating {data}", style="dim")
                generate(rows, fmt, data, args.seed, team=args.team)
            home = args.work / f"home-{rows}-{fmt}"
            shutil.rmtree(home, ignore_errors=True)
            mb = f"{data.stat().st_size / 2**20:,.0f}"
            if args.team:
                catalogue = args.work / "team-items.csv"
                write_catalogue(catalogue)
                ingest = ["ingest", "--events", str(data), "--items", str(catalogue), *TEAM]
            else:
                prepare_home(home, args.seed)
                ingest = ["ingest", "--file", str(data), *MAP]
            s, rss, out = run_stage(ingest, home)
            staged = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                          if line.startswith("staged id:"))
            fmt_shown = f"{fmt} (team ids)" if args.team else fmt
            table.add_row(f"{rows:,}", fmt_shown, mb, "ingest", f"{s:.1f}", f"{rss:,.0f}",
                          f"{rows / s:,.0f}")
            console.print(f"{rows:,} {fmt} ingest: {s:.1f} s, {rss:,.0f} MB", style="dim")
            s, rss, out = run_stage(["validate", staged], home)
            assert "landed" in out, out
            table.add_row(f"{rows:,}", fmt_shown, mb, "validate + land", f"{s:.1f}",
                          f"{rss:,.0f}", f"{rows / s:,.0f}")
            console.print(f"{rows:,} {fmt} validate + land: {s:.1f} s, {rss:,.0f} MB",
                          style="dim")
            if fmt == "csv" and args.postgres:
                s, rss = ingest_from_postgres(args.postgres, data, home)
                table.add_row(f"{rows:,}", "postgresql", mb, "ingest", f"{s:.1f}",
                              f"{rss:,.0f}", f"{rows / s:,.0f}")
                console.print(f"{rows:,} postgresql ingest: {s:.1f} s, {rss:,.0f} MB",
                              style="dim")
            if not args.keep:
                shutil.rmtree(home, ignore_errors=True)
        if not args.keep:
            for fmt in formats:
                (args.work / f"{kind}-{rows}.{fmt}").unlink(missing_ok=True)
    console.print(table)


if __name__ == "__main__":
    main()
