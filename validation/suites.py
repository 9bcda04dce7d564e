"""Expectation suites as code: one per table (interactions, items, users) and for feedback batches.

Each expectation carries ``meta["check"]``, one of :data:`validation.results.CHECKS`; whether a
failed check blocks the batch comes from ``settings.validation.blocking`` and is recorded as the
expectation's GX severity (critical / warning). Values that depend on history (volume bounds, the
current item ids, the clock) are suite parameters filled at run time, so the stored suites stay
the same from run to run; drift expectations carry the reference distribution they compare to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import great_expectations.expectations as gxe
from great_expectations.core.expectation_suite import ExpectationSuite
from great_expectations.expectations.expectation import Expectation
from great_expectations.expectations.metadata_types import FailureSeverity
from great_expectations.expectations.row_conditions import Column

from recops import schema
from recops.config import Settings
from validation.expectations import (
    ExpectColumnPsiToBeLessThan,
    ExpectColumnValuesToBeInReference,
)
from validation.names import FEEDBACK, SUITE_TABLES

# Feedback events: what serving logs; extra columns (request id, offset, ...) are allowed.
FEEDBACK_REQUIRED = (schema.USER_ID, schema.ITEM_ID, schema.EVENT_TYPE, schema.EVENT_TIMESTAMP)

_INTS = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
         "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64", "int"]
_FLOATS = ["float16", "float32", "float64", "Float32", "Float64", "float", *_INTS]
_STRINGS = ["str", "string", "String", "StringDtype"]
_TYPES = {schema.USER_ID: _INTS, schema.ITEM_ID: _INTS, schema.RATING: _FLOATS,
          schema.EVENT_TYPE: _STRINGS,
          schema.TITLE: _STRINGS, schema.GENRES: _STRINGS, schema.TEXT: _STRINGS}

# Suite parameters (filled by validation.history at run time).
P_MIN_ROWS, P_MAX_ROWS, P_NOW, P_FLOOR, P_ITEM_IDS = (
    "min_rows", "max_rows", "now", "timestamp_floor", "item_ids")


@dataclass
class Reference:
    """A reference distribution for a drift check: buckets and their shares (+1 for "other")."""

    column: str
    categories: list[Any]
    expected: list[float]
    label: str


@dataclass
class History:
    """What the suites compare a batch with: built by :func:`validation.history.history_for`."""

    parameters: dict[str, Any] = field(default_factory=dict)
    references: list[Reference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _p(name: str) -> dict[str, str]:
    return {"$PARAMETER": name}


class _Builder:
    def __init__(self, settings: Settings) -> None:
        self.blocking = set(settings.validation.blocking)
        self.expectations: list[Expectation] = []

    def add(self, check: str, cls: type[Expectation], **kwargs: Any) -> None:
        severity = (FailureSeverity.CRITICAL if check in self.blocking
                    else FailureSeverity.WARNING)
        self.expectations.append(cls(meta={"check": check}, severity=severity, **kwargs))

    def types(self, columns: list[str]) -> None:
        # Event timestamps are parsed to UTC before validation (validation.readers.prepare);
        # GX cannot name a tz-aware dtype, and values that did not parse fail the not-null check.
        for col in columns:
            if col == schema.EVENT_TIMESTAMP:
                continue
            self.add("schema", gxe.ExpectColumnValuesToBeInTypeList, column=col,
                     type_list=_TYPES[col])

    def not_null(self, columns: list[str]) -> None:
        for col in columns:
            self.add("not_null", gxe.ExpectColumnValuesToNotBeNull, column=col)

    def volume(self) -> None:
        self.add("volume", gxe.ExpectTableRowCountToBeBetween, min_value=_p(P_MIN_ROWS),
                 max_value=_p(P_MAX_ROWS))

    def events(self, settings: Settings, with_rating: bool) -> None:
        v = settings.validation
        if with_rating:
            # Explicit ratings need a value; implicit events (view, click) carry none.
            self.add("not_null", gxe.ExpectColumnValuesToNotBeNull, column=schema.RATING,
                     row_condition=Column(schema.EVENT_TYPE) == "rating")
            self.add("range", gxe.ExpectColumnValuesToBeBetween, column=schema.RATING,
                     min_value=v.rating_min, max_value=v.rating_max)
        self.add("event_type", gxe.ExpectColumnValuesToBeInSet, column=schema.EVENT_TYPE,
                 value_set=list(schema.EVENT_TYPES))
        self.add("timestamps", gxe.ExpectColumnValuesToBeBetween, column=schema.EVENT_TIMESTAMP,
                 min_value=_p(P_FLOOR), max_value=_p(P_NOW))
        self.add("referential", ExpectColumnValuesToBeInReference, column=schema.ITEM_ID,
                 reference=_p(P_ITEM_IDS))


def build_suite(table: str, settings: Settings, history: History,
                columns: list[str] | None = None) -> ExpectationSuite:
    """The suite for ``table`` (see :data:`SUITE_TABLES`); ``columns`` matters for feedback."""
    b = _Builder(settings)
    required = list(schema.PANDAS_DTYPES.get(table, {}))
    if table == schema.INTERACTIONS:
        b.add("schema", gxe.ExpectTableColumnsToMatchSet, column_set=required, exact_match=True)
        b.types(required)
        b.not_null([schema.USER_ID, schema.ITEM_ID, schema.EVENT_TYPE, schema.EVENT_TIMESTAMP])
        b.events(settings, with_rating=True)
        # A view and a click of the same item in the same second are two events; the same
        # event twice is a duplicate.
        b.add("unique", gxe.ExpectCompoundColumnsToBeUnique,
              column_list=[schema.USER_ID, schema.ITEM_ID, schema.EVENT_TYPE,
                           schema.EVENT_TIMESTAMP])
        b.volume()
    elif table == schema.ITEMS:
        # A team's catalogue carries its attributes, numbers and availability window too.
        b.add("schema", gxe.ExpectTableColumnsToMatchSet, column_set=required, exact_match=False)
        b.types(required)
        b.not_null(required)
        b.add("unique", gxe.ExpectColumnValuesToBeUnique, column=schema.ITEM_ID)
        b.volume()
    elif table == schema.USERS:
        # Loaders may add the optional attributes (gender, age, ...): only the key is required.
        b.add("schema", gxe.ExpectTableColumnsToMatchSet, column_set=required, exact_match=False)
        b.types(required)
        b.not_null(required)
        b.add("unique", gxe.ExpectColumnValuesToBeUnique, column=schema.USER_ID)
        b.volume()
    elif table == FEEDBACK:
        present = set(columns or [])
        b.add("schema", gxe.ExpectTableColumnsToMatchSet, column_set=list(FEEDBACK_REQUIRED),
              exact_match=False)
        with_rating = schema.RATING in present
        b.types([*FEEDBACK_REQUIRED, *([schema.RATING] if with_rating else [])])
        b.not_null(list(FEEDBACK_REQUIRED))
        b.events(settings, with_rating=with_rating)
        b.add("unique", gxe.ExpectCompoundColumnsToBeUnique,
              column_list=[schema.USER_ID, schema.ITEM_ID, schema.EVENT_TYPE,
                           schema.EVENT_TIMESTAMP])
    else:
        raise ValueError(f"no suite for table '{table}'; expected one of {SUITE_TABLES}")
    for ref in history.references:
        b.add("drift", ExpectColumnPsiToBeLessThan, column=ref.column, categories=ref.categories,
              expected=ref.expected, threshold=settings.validation.drift_psi_threshold,
              notes=f"PSI of {ref.label} against the last accepted version")
    return ExpectationSuite(name=table, expectations=b.expectations)
