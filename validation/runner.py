"""Run suites with Great Expectations: file-backed Data Context, ValidationDefinitions, Checkpoints.

The context lives under ``settings.paths.gx``; each table has a dataframe asset, a validation
definition and a checkpoint whose action rebuilds the Data Docs site. Runs hold a file lock so
several processes (Airflow tasks, the CLI) can validate at once without racing on GX's stores.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from recops.config import Settings
from validation.results import CheckResult, TableResult
from validation.suites import History, build_suite

DATASOURCE = "recops"
BATCH_DEFINITION = "whole_batch"
DOCS_INDEX = Path("uncommitted", "data_docs", "local_site", "index.html")


@contextlib.contextmanager
def _locked(gx_dir: Path) -> Iterator[None]:
    gx_dir.mkdir(parents=True, exist_ok=True)
    with open(gx_dir / "recops.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _context(settings: Settings) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GX logs a warning per expectation it cannot evaluate; the result carries it already.
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    ctx = gx.get_context(mode="file", context_root_dir=settings.paths.gx)
    raw = ctx.variables.progress_bars
    bars: dict[str, Any] = (raw if isinstance(raw, dict) else vars(raw) if raw is not None
                            else {})
    if bars.get("globally", True) or bars.get("metric_calculations", True):
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        ctx.variables.save()
    return ctx


def _batch_definition(ctx: Any, table: str) -> Any:
    try:
        ds = ctx.data_sources.get(DATASOURCE)
    except (KeyError, ValueError, LookupError):
        ds = ctx.data_sources.add_pandas(DATASOURCE)
    try:
        asset = ds.get_asset(table)
    except LookupError:
        asset = ds.add_dataframe_asset(table)
    try:
        return asset.get_batch_definition(BATCH_DEFINITION)
    except (KeyError, LookupError):
        return asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION)


def docs_index(settings: Settings) -> Path:
    """Where the Data Docs site's index page is (built by every checkpoint run)."""
    return settings.paths.gx / DOCS_INDEX


def run_table(settings: Settings, table: str, df: pd.DataFrame, history: History,
              notes: list[str] | None = None, *, row_index: bool = False) -> TableResult:
    """Validate one table's frame with its suite through a GX Checkpoint; returns a typed result.

    ``row_index`` asks GX for the index of every failing row of row-wise checks
    (``CheckResult.rows``), so a caller can set those rows apart; it costs a fuller result.
    """
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    with _locked(settings.paths.gx):
        ctx = _context(settings)
        suite = ctx.suites.add_or_update(build_suite(table, settings, history, list(df.columns)))
        vd = ctx.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=table, data=_batch_definition(ctx, table), suite=suite))
        checkpoint = ctx.checkpoints.add_or_update(gx.Checkpoint(
            name=f"recops_{table}", validation_definitions=[vd],
            actions=[UpdateDataDocsAction(name="update_data_docs")],
            result_format={"result_format": "COMPLETE" if row_index else "BASIC"}))
        run = checkpoint.run(batch_parameters={"dataframe": df},
                             expectation_parameters=history.parameters)
    (suite_result,) = run.run_results.values()
    checks = [_check(table, r) for r in suite_result.results]
    return TableResult(table=table, suite=suite.name, rows=len(df), checks=checks,
                       notes=[*history.notes, *(notes or [])],
                       gx_result=_jsonable(suite_result.describe_dict()))


def _check(table: str, r: Any) -> CheckResult:
    cfg = r.expectation_config
    res = r.result or {}
    return CheckResult(
        table=table,
        check=(cfg.meta or {}).get("check", "other"),
        expectation=cfg.type,
        column=cfg.kwargs.get("column") or _columns(cfg.kwargs),
        blocking=str(getattr(cfg.severity, "value", cfg.severity)) == "critical",
        success=bool(r.success),
        observed=_jsonable(res.get("observed_value")),
        unexpected_count=res.get("unexpected_count"),
        unexpected_percent=res.get("unexpected_percent"),
        sample=_jsonable(res.get("partial_unexpected_list") or [])[:10],
        error=_error(r.exception_info),
        expected=_expected(cfg.type, cfg.kwargs),
        rows=_rows(res.get("unexpected_index_list")),
        columns=list(cfg.kwargs.get("column_list") or []),
    )


def _rows(index: Any) -> list[int] | None:
    """The failing rows' index labels (COMPLETE results of row-wise checks), else None."""
    if not isinstance(index, list) or not all(isinstance(i, int) for i in index):
        return None
    return index


def _columns(kwargs: dict[str, Any]) -> str | None:
    cols = kwargs.get("column_list")
    return ", ".join(cols) if cols else None


def _error(info: Any) -> str | None:
    if not info:
        return None
    if "raised_exception" in info:
        return info.get("exception_message") if info.get("raised_exception") else None
    for sub in info.values():  # keyed by metric id when a metric failed
        if isinstance(sub, dict) and sub.get("raised_exception"):
            return str(sub.get("exception_message"))
    return None


def _expected(kind: str, kwargs: dict[str, Any]) -> str:
    if "column_set" in kwargs:
        exact = "exactly" if kwargs.get("exact_match") else "at least"
        return f"{exact} the columns {sorted(kwargs['column_set'])}"
    if "reference" in kwargs:
        return f"an id of the current items ({Path(str(kwargs['reference'])).name})"
    if "value_set" in kwargs:
        return f"one of {kwargs['value_set']}"
    if "min_value" in kwargs or "max_value" in kwargs:
        return f"between {kwargs.get('min_value')} and {kwargs.get('max_value')}"
    if "type_list" in kwargs:
        return "a type in " + ", ".join(kwargs["type_list"][:4]) + ", …"
    if "threshold" in kwargs:
        return f"PSI < {kwargs['threshold']}"
    if kind.endswith("not_be_null"):
        return "no missing values"
    if kind.endswith("unique"):
        return "no duplicates"
    return ""


def _jsonable(value: Any) -> Any:
    """Plain JSON types only (timestamps and numpy scalars become strings/numbers)."""
    return json.loads(json.dumps(value, default=_default, allow_nan=True),
                      parse_constant=lambda c: None)


def _default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        v = obj.item()
        return None if isinstance(v, float) and math.isnan(v) else v
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=str)
    return str(obj)
