"""Distribution drift as the population stability index (PSI) over categorical buckets."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

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
