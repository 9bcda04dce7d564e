"""A staged table of events bigger than validation.batch_rows: GX batch by batch, exact totals."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recops import schema
from recops.config import load_settings
from recops.core.hashing import sha256_frame
from recops.core.lake import Lake, conform
from recops.data.tables import Tables, stage
from recops.errors import ValidationFailed
from tests.validation.frames import SOURCE, make_interactions, make_items, make_users
from validation import gate, quarantine
from validation.batches import run_table_in_batches
from validation.history import history_for

pytestmark = pytest.mark.integration


def _defective() -> pd.DataFrame:
    """600 events with one of each row defect, and a duplicate whose twin is 3 batches away."""
    df = make_interactions(600, seed=4)
    df.loc[20, schema.ITEM_ID] = 99_999  # not in the catalogue
    df.loc[200, schema.RATING] = 9.0  # out of range
    df.loc[401, schema.EVENT_TYPE] = "purchased"  # unknown event type
    df.loc[599] = df.loc[10]  # the same event as row 10
    return df


def _summary(checks: list) -> list[tuple]:
    return sorted((c.check, c.column or "", c.success, c.unexpected_count or 0) for c in checks)


def test_batches_give_the_whole_frame_result(settings, lake: Lake, tmp_path: Path) -> None:
    df = _defective()
    path = tmp_path / "interactions.parquet"
    conform(df, schema.INTERACTIONS).to_parquet(path, index=False)

    whole, _ = gate.validate_frames(settings, {schema.INTERACTIONS: df}, source=SOURCE)
    history = history_for(settings, lake, schema.INTERACTIONS, source=SOURCE, rows=len(df))
    parts = run_table_in_batches(settings, schema.INTERACTIONS, path, history, batch_rows=150)

    expected = whole.tables[schema.INTERACTIONS]
    assert _summary(parts.checks) == _summary(expected.checks)
    assert {c.check for c in parts.failed} == {"referential", "range", "event_type", "unique"}
    dup = next(c for c in parts.checks if c.check == "unique")
    assert dup.unexpected_count == 2  # rows 10 and 599: in the first and the last batch
    volume = next(c for c in parts.checks if c.check == "volume")
    assert volume.observed == 600 and volume.success
    drift = {c.column: c.observed for c in expected.checks if c.check == "drift"}
    assert set(drift) == {schema.RATING, schema.ITEM_ID}
    for c in parts.checks:
        if c.check == "drift":
            assert c.observed == pytest.approx(drift[c.column], rel=1e-9), c.column
    assert parts.rows == 600 and "4 batch(es) of up to 150 rows" in parts.notes[-1]


def test_a_volume_out_of_bounds_is_judged_on_the_whole_table(settings, lake: Lake,
                                                              tmp_path: Path) -> None:
    path = tmp_path / "interactions.parquet"
    conform(make_interactions(2_000, seed=5), schema.INTERACTIONS).to_parquet(path, index=False)
    history = history_for(settings, lake, schema.INTERACTIONS, source=SOURCE, rows=2_000)
    res = run_table_in_batches(settings, schema.INTERACTIONS, path, history, batch_rows=1_000)
    volume = next(c for c in res.checks if c.check == "volume")
    # The last batch from SOURCE held 300 rows: at most 5x may follow, every batch is below.
    assert not volume.success and volume.observed == 2_000 and "1500" in volume.describe()


def test_gate_lands_a_large_staged_batch_from_its_file(home: Path, lake: Lake) -> None:
    settings = load_settings(overrides={"validation.batch_rows": 100})
    events = make_interactions(450, seed=6)
    tables = Tables(events, make_items().iloc[:0], make_users().iloc[:0], source=SOURCE)
    accepted = gate.accept_or_quarantine(settings, stage(settings.paths.staging, tables))
    assert "5 batch(es) of up to 100 rows" in accepted.results[schema.INTERACTIONS].notes[-1]
    landed = lake.batches(schema.INTERACTIONS)[-1]
    assert landed.rows == 450
    assert landed.content_hash == sha256_frame(conform(events, schema.INTERACTIONS))
    pd.testing.assert_frame_equal(pd.read_parquet(landed.path),
                                  conform(events, schema.INTERACTIONS))

    # A duplicate across batches fails the batch, which is quarantined whole.
    bad = make_interactions(450, seed=7)
    bad.loc[449] = bad.loc[0]
    bad_id = stage(settings.paths.staging, Tables(bad, make_items().iloc[:0],
                                                  make_users().iloc[:0], source=SOURCE))
    with pytest.raises(ValidationFailed, match="unique") as err:
        gate.accept_or_quarantine(settings, bad_id)
    assert len(lake.batches(schema.INTERACTIONS)) == 2
    meta = quarantine.read_meta(settings, bad_id)
    assert meta["rows"][schema.INTERACTIONS] == 450 and err.value.quarantine_path


def test_batches_gather_row_groups_up_to_batch_rows(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from validation.batches import batches

    df = conform(make_interactions(700, seed=2), schema.INTERACTIONS)
    path = tmp_path / "interactions.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=100)
    assert [len(b) for b in batches(path, 250)] == [200, 200, 200, 100]
    assert [len(b) for b in batches(path, 60)] == [60, 40] * 7
    pd.testing.assert_frame_equal(pd.concat(batches(path, 250), ignore_index=True), df)
