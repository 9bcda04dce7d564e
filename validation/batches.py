"""A table too big for memory, validated batch by batch with exact checks over the whole table.

Great Expectations' pandas engine validates a frame held in memory. A staged table of more than
``validation.batch_rows`` rows is therefore read from its Parquet file ``batch_rows`` rows at a
time and each batch goes through the table's suite in a GX checkpoint: every row-wise check
(types, missing values, ranges, event types, timestamps, known items) is exact when its
per-batch counts are added up. The three checks about the table as a whole are computed over
all batches while they stream past, exactly, and reported in the same result:

- volume: the table's row count against the bounds the history gives;
- uniqueness of the events' key (the suite's compound check): GX finds duplicates inside a
  batch; across batches every
  row's key is hashed (8 bytes a row: the one part of memory that grows with the table) and a
  hash seen twice is confirmed on the real keys, so a hash collision never fails a batch;
- drift: the PSI of the streamed category counts against the reference shares.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recops.config import Settings
from validation import suites
from validation.drift import psi
from validation.readers import prepare
from validation.results import CheckResult, TableResult
from validation.runner import run_table
from validation.suites import History

_TABLE_WIDE = ("volume", "unique", "drift")


def row_count(path: Path) -> int:
    """Rows of a staged Parquet file, from its footer."""
    return int(pq.ParquetFile(path).metadata.num_rows)


LAND_ROWS = 1 << 18  # rows a chunk when a large table lands in the lake


def batches(path: Path, batch_rows: int) -> Iterator[pd.DataFrame]:
    """The file's rows, ``batch_rows`` at a time, as the frames the lake lands."""
    pf = pq.ParquetFile(path)
    # Whole row groups, gathered up to ``batch_rows`` (a reader of its own each: one
    # iter_batches over the whole file holds memory growing with the rows read).
    group: list[int] = []
    rows = 0
    for i in range(pf.num_row_groups):
        n = pf.metadata.row_group(i).num_rows
        if group and rows + n > batch_rows:
            yield pf.read_row_groups(group).to_pandas()
            group, rows = [], 0
        if n > batch_rows:
            for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[i]):
                yield batch.to_pandas()
            continue
        group.append(i)
        rows += n
    if group:
        yield pf.read_row_groups(group).to_pandas()


def run_table_in_batches(settings: Settings, table: str, path: Path, history: History,
                         batch_rows: int) -> TableResult:
    """The suite of ``table`` over the Parquet file ``path``, ``batch_rows`` rows in memory."""
    per_batch = History(parameters={**history.parameters, suites.P_MIN_ROWS: 1,
                                     suites.P_MAX_ROWS: None}, references=[])
    total, notes, gx = 0, list(history.notes), []
    merged: list[CheckResult] = []
    hashes: list[np.ndarray] = []
    counts = [np.zeros(len(r.categories) + 1) for r in history.references]
    for raw in batches(path, batch_rows):
        df, batch_notes = prepare(raw, table)
        offset = total
        total += len(df)
        res = run_table(settings, table, df, per_batch, batch_notes)
        notes += [f"rows {offset + 1}-{total}: {n}" for n in batch_notes]
        merged = res.checks if not merged else [_add(a, b) for a, b in zip(merged, res.checks,
                                                                          strict=True)]
        gx.append(res.gx_result)
        key = _unique_key(merged)
        if key and all(c in df.columns for c in key):
            hashes.append(pd.util.hash_pandas_object(df[key], index=False).to_numpy())
        for ref, acc in zip(history.references, counts, strict=True):
            acc += _counts(df[ref.column], ref.categories)
        # GX's run leaves reference cycles that hold this batch's frame: free it before the next
        # batch is read, or memory grows by a batch each time (measured: +140 MB a 1M-row batch).
        del raw, df, res
        gc.collect()
    checks = [_whole(c, total, history, path, batch_rows, hashes) for c in merged]
    checks += [_drift(settings, table, ref, acc)
               for ref, acc in zip(history.references, counts, strict=True)]
    n_batches = len(gx)
    notes.append(f"{table}: {total:,} rows validated in {n_batches} batch(es) of up to "
                 f"{batch_rows:,} rows (validation.batch_rows); volume, uniqueness and drift "
                 "computed over the whole table")
    return TableResult(table=table, suite=table, rows=total, checks=checks, notes=notes,
                       gx_result={"batches": gx})


def _add(a: CheckResult, b: CheckResult) -> CheckResult:
    """One check's results over two consecutive parts of the table."""
    count = None if a.unexpected_count is None and b.unexpected_count is None else \
        (a.unexpected_count or 0) + (b.unexpected_count or 0)
    return replace(a, success=a.success and b.success, unexpected_count=count,
                   sample=(a.sample + b.sample)[:20], error=a.error or b.error,
                   observed=a.observed if a.observed is not None else b.observed)


def _whole(c: CheckResult, total: int, history: History, path: Path, batch_rows: int,
           hashes: list[np.ndarray]) -> CheckResult:
    pct = None if c.unexpected_count is None or not total else 100 * c.unexpected_count / total
    c = replace(c, unexpected_percent=pct)
    if c.check == "volume":
        lo = history.parameters.get(suites.P_MIN_ROWS)
        hi = history.parameters.get(suites.P_MAX_ROWS)
        ok = (lo is None or total >= lo) and (hi is None or total <= hi)
        return replace(c, success=ok, observed=total, unexpected_count=None,
                       unexpected_percent=None, expected=f"between {lo} and {hi}")
    if c.check == "unique" and c.columns and c.columns == _unique_key([c]) and hashes:
        dup = _duplicate_rows(np.concatenate(hashes), path, batch_rows, c.columns)
        hashes.clear()
        return replace(c, success=dup == 0, unexpected_count=dup,
                       unexpected_percent=100 * dup / total if total else None)
    return c


def _unique_key(checks: list[CheckResult]) -> list[str] | None:
    """The columns of the suite's compound uniqueness check (the events' key), if it has one."""
    return next((c.columns for c in checks if c.check == "unique" and len(c.columns) > 1), None)


def _duplicate_rows(hashes: np.ndarray, path: Path, batch_rows: int, key: list[str]) -> int:
    """Rows whose key occurs more than once in the file, confirmed on the real keys."""
    hashes.sort()
    twice = hashes[1:][hashes[1:] == hashes[:-1]]
    if not len(twice):
        return 0
    suspects = np.unique(twice)
    keys = []
    for df in batches(path, batch_rows):  # a second pass, only when a hash repeats
        h = pd.util.hash_pandas_object(df[key], index=False).to_numpy()
        keys.append(df.loc[np.isin(h, suspects), key])
    found = pd.concat(keys, ignore_index=True)
    return int(found.duplicated(keep=False).sum())


def _counts(column: pd.Series, categories: list[Any]) -> np.ndarray:
    """Counts per category and "other", missing values left out (as GX leaves them out)."""
    column = column.dropna()
    vc = column.value_counts(sort=False)
    known = np.array([float(vc.get(c, 0)) for c in categories])
    return np.append(known, len(column) - known.sum())


def _drift(settings: Settings, table: str, ref: suites.Reference,
           counts: np.ndarray) -> CheckResult:
    n = counts.sum()
    value = psi(counts / n, np.asarray(ref.expected)) if n else None
    threshold = settings.validation.drift_psi_threshold
    return CheckResult(
        table=table, check="drift", expectation="expect_column_psi_to_be_less_than",
        column=ref.column, blocking="drift" in settings.validation.blocking,
        success=value is None or value < threshold, observed=value,
        expected=f"PSI < {threshold}")
