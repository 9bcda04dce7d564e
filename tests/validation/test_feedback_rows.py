"""Row-level quarantine of the feedback stream: bad events are set apart, the period goes on."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recops import schema
from recops.core.feedback import FeedbackLog
from recops.core.lake import Lake
from recops.errors import ValidationFailed
from recops.orchestration import continual
from tests.validation.frames import N_ITEMS, N_USERS
from validation.results import CheckResult, TableResult
from validation.rows import row_reasons


def _log(settings, n: int, start: str = "2025-03-01") -> list[dict]:
    """``n`` distinct good events, logged as serving logs them."""
    t0 = pd.Timestamp(start, tz="UTC")
    events = [{schema.USER_ID: 1 + i % N_USERS, schema.ITEM_ID: 1 + (i * 7) % N_ITEMS,
               schema.EVENT_TYPE: "view",
               schema.EVENT_TIMESTAMP: (t0 + pd.Timedelta(seconds=i)).isoformat()}
              for i in range(n)]
    FeedbackLog(settings.paths.feedback).append_many(events)
    return events


def _cycle_validate(settings, run_id: str) -> dict:
    col = continual.collect(settings, run_id)
    return continual.validate(settings, run_id, col["batch"])


def test_two_duplicates_among_1151_events_quarantine_two_rows_not_the_period(settings, lake):
    events = _log(settings, 1149)
    # A client that sent the same two events under new idempotency keys: the log keeps them
    # (the keys differ), the lake's uniqueness check must not.
    FeedbackLog(settings.paths.feedback).append_many(
        [{**events[10], "event_id": "retry-1"}, {**events[500], "event_id": "retry-2"}])
    rows_before = len(lake.read(schema.INTERACTIONS))
    out = _cycle_validate(settings, "r1")
    assert out["passed"] and out["rows"] == 1149 and out["quarantined_rows"] == 2
    assert len(Lake(settings.paths.lake).read(schema.INTERACTIONS)) == rows_before + 1149
    kept = pd.read_parquet(f"{out['rows_quarantine']}/feedback.parquet")
    assert sorted(kept[schema.EVENT_TIMESTAMP]) == [
        pd.Timestamp(events[i][schema.EVENT_TIMESTAMP]) for i in (10, 500)]
    assert kept.quarantine_reason.str.startswith("unique(").all()
    assert "went on to training" in Path(out["rows_quarantine"], "REASON.txt").read_text()
    # The watermark moved past the whole period: the next cycle has nothing to do.
    assert "skip" in continual.collect(settings, "r2")


def test_each_bad_row_carries_its_reasons(settings, lake):
    events = _log(settings, 40)
    FeedbackLog(settings.paths.feedback).append_many([
        {**events[0], schema.ITEM_ID: 99_999, schema.EVENT_TIMESTAMP: "2025-04-01T00:00:00Z"},
        {**events[1], schema.EVENT_TYPE: "rating", schema.RATING: 9.0,
         schema.EVENT_TIMESTAMP: "2025-04-01T00:00:01Z"},
        {**events[2], schema.ITEM_ID: 99_998, schema.EVENT_TYPE: "rating", schema.RATING: -1.0,
         schema.EVENT_TIMESTAMP: "2025-04-01T00:00:02Z"}])
    out = _cycle_validate(settings, "r1")
    assert out["rows"] == 40 and out["quarantined_rows"] == 3
    kept = pd.read_parquet(f"{out['rows_quarantine']}/feedback.parquet").sort_values(
        schema.EVENT_TIMESTAMP)
    reasons = kept.quarantine_reason.tolist()
    assert reasons[0] == f"referential({schema.ITEM_ID})"
    assert reasons[1] == f"range({schema.RATING})"
    assert set(reasons[2].split("; ")) == {f"referential({schema.ITEM_ID})",
                                           f"range({schema.RATING})"}
    meta = (pd.io.json.read_json(f"{out['rows_quarantine']}/meta.json", typ="series"))
    assert meta["kind"] == "feedback" and meta["rows"] == {"feedback": 3}


def test_a_period_with_no_good_row_is_quarantined_whole_and_stops_the_cycle(settings, lake):
    t0 = pd.Timestamp("2025-03-01", tz="UTC")
    FeedbackLog(settings.paths.feedback).append_many(
        [{schema.USER_ID: 1, schema.ITEM_ID: 99_999, schema.EVENT_TYPE: "view",
          schema.EVENT_TIMESTAMP: (t0 + pd.Timedelta(seconds=i)).isoformat()} for i in range(5)])
    lake_version = Lake(settings.paths.lake).dataset_version()
    with pytest.raises(ValidationFailed, match="quarantined at") as info:
        _cycle_validate(settings, "r1")
    assert len(pd.read_parquet(f"{info.value.quarantine_path}/feedback.parquet")) == 5
    assert Lake(settings.paths.lake).dataset_version() == lake_version
    assert "skip" in continual.collect(settings, "r2")  # nothing lost, nothing re-read


def test_a_batch_level_failure_cannot_be_split_into_rows():
    df = pd.DataFrame({schema.USER_ID: [1, 2]})
    schema_fail = CheckResult("feedback", "schema", "expect_table_columns_to_match_set", None,
                              blocking=True, success=False)
    assert row_reasons(TableResult("feedback", "feedback", 2, [schema_fail]), df) is None
    unnamed = CheckResult("feedback", "referential", "x", schema.ITEM_ID, blocking=True,
                          success=False, rows=None)
    assert row_reasons(TableResult("feedback", "feedback", 2, [unnamed]), df) is None
    named = CheckResult("feedback", "referential", "x", schema.ITEM_ID, blocking=True,
                        success=False, rows=[1])
    assert row_reasons(TableResult("feedback", "feedback", 2, [named]), df).tolist() == [
        "", f"referential({schema.ITEM_ID})"]
