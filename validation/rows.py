"""Row-level verdicts for the feedback stream: which rows failed which blocking checks.

Feedback is a stream, not a delivered file: a few bad events (a retried duplicate, an item
the catalogue dropped) must not hold back the rest of the period. :func:`row_reasons` turns a
feedback validation run with ``row_index=True`` into a reason per row; the retraining cycle
quarantines those rows and lands the others. Delivered batches of files keep whole-batch
quarantine (:func:`validation.gate.accept_or_quarantine`).
"""

from __future__ import annotations

import pandas as pd

from validation.results import TableResult

# The checks whose failures are about single rows (the rest are about the batch as a whole).
ROW_CHECKS = ("not_null", "range", "event_type", "timestamps", "unique", "referential")


def row_reasons(result: TableResult, df: pd.DataFrame) -> pd.Series | None:
    """Per row of ``df``, the failed blocking checks it broke ("" for a good row).

    None when a blocking failure is not row-wise (the table's columns, an error evaluating a
    check, rows GX did not name): then the batch can only be judged whole. For a uniqueness
    check the first row of each duplicate group is kept; only the repeats fail it.
    """
    reasons = pd.Series("", index=df.index, dtype=object)
    for check in result.failed:
        if check.check not in ROW_CHECKS or check.error or check.rows is None:
            return None
        flagged = pd.Index(check.rows)
        if not flagged.isin(df.index).all():
            return None
        if check.check == "unique":
            cols = check.columns or ([check.column] if check.column else [])
            if not cols or not set(cols) <= set(df.columns):
                return None
            group = df.loc[flagged].sort_index()
            flagged = group.index[group.duplicated(subset=cols, keep="first")]
        label = f"{check.check}({check.column})" if check.column else check.check
        sep = reasons.loc[flagged].map(lambda r: "; " if r else "")
        reasons.loc[flagged] = reasons.loc[flagged] + sep + label
    return reasons
