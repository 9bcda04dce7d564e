"""Staging and landing one chunk at a time: the same batch as whole frames, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recops import schema
from recops.core.lake import Lake
from recops.data.loaders import incremental_tables, stage_incremental
from recops.data.tables import read_staged, stage
from recops.errors import DataError

ROWS = 300


def _events_csv(path: Path, bad_line: int | None = None) -> Path:
    lines = ["customer,sku,ts"]
    for i in range(ROWS):
        sku = "x" if bad_line is not None and i + 2 == bad_line else str(1 + i % 2)
        lines.append(f"{1 + i % 17},{sku},2026-03-01T00:{i // 60:02d}:{i % 60:02d}Z")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    lk = Lake(tmp_path / "lake")
    lk.append(schema.ITEMS, pd.DataFrame({schema.ITEM_ID: [1, 2], schema.TITLE: ["a", "b"],
                                          schema.GENRES: ["", ""], schema.TEXT: ["a", "b"]}),
              source="test")
    lk.append(schema.USERS, pd.DataFrame({schema.USER_ID: [1, 2]}), source="test")
    return lk


MAP = {"customer": "user_id", "sku": "item_id", "ts": "event_timestamp"}


def test_staging_in_chunks_gives_the_whole_frames_batch(tmp_path: Path, lake: Lake) -> None:
    src = _events_csv(tmp_path / "events.csv")
    whole = stage(tmp_path / "whole", incremental_tables(src, lake, MAP))
    # ~200 bytes a chunk: a dozen chunks of a few lines each
    staged, rows = stage_incremental(src, lake, tmp_path / "chunked", MAP, chunk_bytes=200)
    assert staged == whole
    assert rows == {"interactions": ROWS, "items": 2, "users": 17}
    a, b = read_staged(tmp_path / "whole", whole), read_staged(tmp_path / "chunked", staged)
    for name, df in a.as_dict().items():
        pd.testing.assert_frame_equal(b.as_dict()[name], df)
    assert a.source == b.source == f"file:{src.resolve()}"


def test_a_bad_line_in_the_last_chunk_stages_nothing(tmp_path: Path, lake: Lake) -> None:
    src = _events_csv(tmp_path / "events.csv", bad_line=ROWS + 1)
    with pytest.raises(DataError, match=rf"line {ROWS + 1}: column 'sku' \(mapped to 'item_id'\)"
                                        r" has 'x', expected an integer \(1 of 300 row\(s\)\)"):
        stage_incremental(src, lake, tmp_path / "staging", MAP, chunk_bytes=200)
    assert list((tmp_path / "staging").iterdir()) == []


def test_lake_append_chunks_is_append_of_the_whole(tmp_path: Path) -> None:
    df = pd.DataFrame({schema.USER_ID: range(10), schema.ITEM_ID: range(10),
                       schema.RATING: [None] * 10, schema.EVENT_TYPE: "view",
                       schema.EVENT_TIMESTAMP: pd.Timestamp("2026-01-01", tz="UTC")})
    whole = Lake(tmp_path / "a").append(schema.INTERACTIONS, df, "s")
    lake = Lake(tmp_path / "b")
    chunked = lake.append_chunks(schema.INTERACTIONS, (df.iloc[i:i + 3] for i in range(0, 10, 3)),
                                 "s")
    assert (chunked.batch_id, chunked.rows) == (whole.batch_id, 10)
    pd.testing.assert_frame_equal(lake.read(schema.INTERACTIONS),
                                  Lake(tmp_path / "a").read(schema.INTERACTIONS))
    assert lake.append_chunks(schema.INTERACTIONS, [df], "s") == chunked  # idempotent

    def failing():  # noqa: ANN202
        yield df
        raise DataError("cut off")

    with pytest.raises(DataError, match="cut off"):
        lake.append_chunks(schema.INTERACTIONS, failing(), "s")
    files = sorted(p.name for p in (tmp_path / "b" / schema.INTERACTIONS / "batches").iterdir())
    assert files == [f"{chunked.batch_id}.json", f"{chunked.batch_id}.parquet"]
    assert len(lake.batches(schema.INTERACTIONS)) == 1
