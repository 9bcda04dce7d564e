"""A Great Expectations expectation for distribution drift: the population stability index (PSI)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import ColumnAggregateExpectation
from great_expectations.expectations.metrics.column_aggregate_metric_provider import (
    ColumnAggregateMetricProvider,
    column_aggregate_value,
)

# A bucket empty on one side would make PSI infinite; clip shares to this floor (common practice).
PSI_FLOOR = 1e-4


def shares(values: pd.Series, categories: list[Any]) -> np.ndarray:
    """Share of ``values`` in each category, plus a last "other" bucket; empty input → all zeros."""
    n = len(values)
    counts = values.value_counts(sort=False)
    known = np.array([float(counts.get(c, 0)) for c in categories])
    out = np.append(known, n - known.sum())
    return out / n if n else out


def psi(actual: np.ndarray, expected: np.ndarray) -> float:
    """Population stability index sum((a - e) * ln(a / e)) over matching buckets."""
    a = np.clip(np.asarray(actual, dtype=float), PSI_FLOOR, None)
    e = np.clip(np.asarray(expected, dtype=float), PSI_FLOOR, None)
    return float(np.sum((a - e) * np.log(a / e)))


class ColumnPsi(ColumnAggregateMetricProvider):
    """PSI of a column's categorical distribution against reference shares (nulls excluded)."""

    metric_name = "column.recops_psi"
    value_keys = ("categories", "expected")

    @column_aggregate_value(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, categories: list[Any], expected: list[float],
                **kwargs: Any) -> float | None:
        if len(column) == 0:
            return None  # nothing to compare: not drift
        return psi(shares(column, list(categories)), np.asarray(expected))


class ExpectColumnPsiToBeLessThan(ColumnAggregateExpectation):
    """Expect a column's distribution to stay close to a reference: PSI below ``threshold``.

    ``categories`` are the reference's buckets and ``expected`` their shares, with one more
    share for everything else (so ``len(expected) == len(categories) + 1``).
    """

    categories: list
    expected: list
    threshold: float

    metric_dependencies = ("column.recops_psi",)
    success_keys = ("categories", "expected", "threshold")
    args_keys = ("column", "categories", "expected", "threshold")
    library_metadata: ClassVar[dict[str, Any]] = {"maturity": "experimental",
                                                  "tags": ["recops", "drift"]}

    def _validate(self, metrics: dict, runtime_configuration: dict | None = None,
                  execution_engine: Any = None) -> dict[str, Any]:
        value = metrics["column.recops_psi"]
        ok = value is None or value < self.threshold
        return {"success": ok, "result": {"observed_value": value}}
