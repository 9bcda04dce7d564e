"""Our Great Expectations expectations: drift as PSI, and keys that must exist in a reference."""

from __future__ import annotations

import functools
from typing import Any, ClassVar, Union

import numpy as np
import pandas as pd
from great_expectations.core.suite_parameters import SuiteParameterDict
from great_expectations.execution_engine import ExecutionEngine, PandasExecutionEngine
from great_expectations.expectations.expectation import (
    ColumnAggregateExpectation,
    ColumnMapExpectation,
)
from great_expectations.expectations.metrics.column_aggregate_metric_provider import (
    ColumnAggregateMetricProvider,
    column_aggregate_value,
)
from great_expectations.expectations.metrics.map_metric_provider import (
    ColumnMapMetricProvider,
    column_condition_partial,
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

    categories: list[Any]
    expected: list[Any]
    threshold: float

    metric_dependencies = ("column.recops_psi",)
    success_keys = ("categories", "expected", "threshold")
    args_keys = ("column", "categories", "expected", "threshold")
    library_metadata: ClassVar[dict[str, Any]] = {"maturity": "experimental",
                                                  "tags": ["recops", "drift"]}

    def _validate(self, metrics: dict[str, Any],
                  runtime_configuration: dict[str, Any] | None = None,
                  execution_engine: ExecutionEngine[Any] | None = None) -> dict[str, Any]:
        value = metrics["column.recops_psi"]
        ok = value is None or value < self.threshold
        return {"success": ok, "result": {"observed_value": value}}


@functools.lru_cache(maxsize=8)
def _reference_ids(path: str) -> np.ndarray:
    ids: np.ndarray = np.load(path, allow_pickle=False)
    return ids


class ColumnValuesInReference(ColumnMapMetricProvider):
    """Row-wise: is the value one of the ids stored in a reference ``.npy`` file?"""

    condition_metric_name = "column_values.recops_in_reference"
    condition_value_keys = ("reference",)

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, reference: str, **kwargs: Any) -> pd.Series:
        return column.isin(_reference_ids(reference))


class ExpectColumnValuesToBeInReference(ColumnMapExpectation):
    """Expect every value to exist in a reference table's keys (referential integrity).

    ``reference`` names a content-addressed ``.npy`` file of the keys (e.g. the current item
    ids). A path, not the list itself: GX copies an expectation's arguments many times per run,
    which for tens of thousands of ids costs more than the check.
    """

    reference: Union[str, SuiteParameterDict[str, Any]]  # noqa: UP007 - GX's pydantic v1 needs Union

    map_metric = "column_values.recops_in_reference"
    success_keys = ("reference", "mostly")
    args_keys = ("column", "reference")
    library_metadata: ClassVar[dict[str, Any]] = {"maturity": "experimental",
                                                  "tags": ["recops", "referential"]}
