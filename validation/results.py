"""Typed validation results: per check, per table, per batch (what the gate and the CLI report)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# The checks a suite is made of; ``settings.validation.blocking`` names those that fail a batch.
CHECKS = ("schema", "not_null", "range", "event_type", "timestamps", "unique", "referential",
          "volume", "drift")


@dataclass
class CheckResult:
    """One expectation's outcome, reduced to what a user needs to see."""

    table: str
    check: str
    expectation: str
    column: str | None
    blocking: bool
    success: bool
    observed: Any = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    sample: list[Any] = field(default_factory=list)
    error: str | None = None
    expected: str = ""
    # Index labels of the failing rows (row-wise checks run with ``row_index``); None: not known.
    rows: list[int] | None = None
    columns: list[str] = field(default_factory=list)  # a multi-column check's columns

    @property
    def name(self) -> str:
        target = f"({self.column})" if self.column else ""
        return f"{self.table}.{self.check}: {self.expectation}{target}"

    def describe(self) -> str:
        """One line: which expectation failed, on what, and an example."""
        if self.error:
            return f"{self.name} could not be evaluated: {self.error}"
        parts = [self.name]
        if self.unexpected_count:
            pct = self.unexpected_percent
            pct_text = f" ({pct:.2f}%)" if pct is not None else ""
            parts.append(f"{self.unexpected_count} unexpected value(s){pct_text}")
            if self.sample:
                parts.append(f"e.g. {self.sample[:5]}")
        elif self.observed is not None:
            parts.append(f"observed {_short(self.observed)}")
        if self.expected:
            parts.append(f"expected {self.expected}")
        return " — ".join(parts)


def _short(value: Any, limit: int = 120) -> str:
    text = f"{value:.4f}" if isinstance(value, float) else str(value)
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass
class TableResult:
    """A suite run over one table of a batch."""

    table: str
    suite: str
    rows: int
    checks: list[CheckResult]
    notes: list[str] = field(default_factory=list)
    gx_result: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success and c.blocking]

    @property
    def warned(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success and not c.blocking]

    @property
    def passed(self) -> bool:
        return not self.failed

    def summary(self) -> dict[str, Any]:
        """JSON-able summary (no raw GX result): for the audit log, the run dir and reports."""
        return {
            "table": self.table, "suite": self.suite, "rows": self.rows, "passed": self.passed,
            "evaluated": len(self.checks),
            "failed": [c.describe() for c in self.failed],
            "warnings": [c.describe() for c in self.warned],
            "notes": list(self.notes),
        }


@dataclass
class BatchValidation:
    """All tables of one batch; ``passed`` is False when any blocking check failed."""

    tables: dict[str, TableResult]
    data_docs: Path | None = None
    problems: list[str] = field(default_factory=list)  # batch-level blocking problems

    @property
    def passed(self) -> bool:
        return not self.problems and all(t.passed for t in self.tables.values())

    @property
    def failed(self) -> list[str]:
        return self.problems + [c.describe() for t in self.tables.values() for c in t.failed]

    @property
    def notes(self) -> list[str]:
        return [n for t in self.tables.values() for n in t.notes]

    @property
    def warnings(self) -> list[str]:
        return [w for t in self.tables.values() for w in t.summary()["warnings"]]

    def summary(self) -> dict[str, Any]:
        return {
            "passed": self.passed, "failed": self.failed, "warnings": self.warnings,
            "notes": self.notes,
            "tables": {n: t.summary() for n, t in self.tables.items()},
            "data_docs": str(self.data_docs) if self.data_docs else None,
        }

    def gx_results(self) -> dict[str, Any]:
        """The raw GX results per table (JSON-able), kept with a quarantined batch."""
        return {n: t.gx_result for n, t in self.tables.items()}


@dataclass
class AcceptedBatch:
    """What the gate returns when a batch landed in the lake."""

    dataset_version: str
    staged_id: str
    results: dict[str, TableResult]
    data_docs: Path | None
    warnings: list[str]
    landed: dict[str, dict[str, Any]] = field(default_factory=dict)  # table -> lake manifest

    def summary(self) -> dict[str, Any]:
        return {
            "dataset_version": self.dataset_version, "staged_id": self.staged_id,
            "tables": {n: t.summary() for n, t in self.results.items()},
            "data_docs": str(self.data_docs) if self.data_docs else None,
            "warnings": self.warnings, "landed": self.landed,
        }


def manifest_dict(manifest: Any) -> dict[str, Any]:
    return asdict(manifest)
