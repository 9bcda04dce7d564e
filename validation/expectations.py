"""A Great Expectations expectation for distribution drift: PSI against a reference."""

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

from validation.drift import psi, shares


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
