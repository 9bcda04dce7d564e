"""Unreadable input is refused with a DataError naming the file; readable input is not altered."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recops import schema
from recops.errors import DataError
from tests.validation.frames import make_interactions
from validation.readers import infer_table, prepare, read_file


def _csv(tmp_path: Path, text: str | bytes, name: str = "interactions.csv") -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def test_empty_file(tmp_path: Path) -> None:
    p = _csv(tmp_path, b"")
    with pytest.raises(DataError, match=r"interactions\.csv: the file is empty"):
        read_file(p)


def test_header_only_csv(tmp_path: Path) -> None:
    p = _csv(tmp_path, "user_id,item_id,rating,event_type,event_timestamp\n")
    with pytest.raises(DataError, match=r"interactions\.csv: .*header .*but no rows"):
        read_file(p)


def test_truncated_parquet(tmp_path: Path) -> None:
    good = tmp_path / "full.parquet"
    make_interactions(50).to_parquet(good)
    p = tmp_path / "interactions.parquet"
    p.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=r"interactions\.parquet: not a readable Parquet file"):
        read_file(p)


def test_wrong_delimiter(tmp_path: Path) -> None:
    p = _csv(tmp_path, "user_id;item_id;rating;event_type;event_timestamp\n1;2;4.0;rating;0\n")
    with pytest.raises(DataError, match=r"interactions\.csv: .*separated by ';'"):
        read_file(p)


def test_non_utf8_text(tmp_path: Path) -> None:
    text = "item_id,title,genres,text\n1,Amélie,Comedy,Amélie comedy\n".encode("latin-1")
    p = _csv(tmp_path, text, "items.csv")
    with pytest.raises(DataError, match=r"items\.csv: not UTF-8 text .*offset \d+"):
        read_file(p)


def test_unsupported_extension(tmp_path: Path) -> None:
    p = _csv(tmp_path, "a,b\n1,2\n", "data.xlsx")
    with pytest.raises(DataError, match=r"data\.xlsx: unsupported file type"):
        read_file(p)


def test_table_told_by_name_then_columns(tmp_path: Path) -> None:
    assert infer_table(tmp_path / "items.csv", ["x"]) == schema.ITEMS
    assert infer_table(tmp_path / "batch.csv", ["user_id", "item_id", "rating"]) == "interactions"
    assert infer_table(tmp_path / "batch.csv", ["item_id", "title"]) == schema.ITEMS
    assert infer_table(tmp_path / "batch.csv", ["user_id", "gender"]) == schema.USERS
    with pytest.raises(DataError, match=r"batch\.csv: cannot tell which table.*--table"):
        infer_table(tmp_path / "batch.csv", ["foo", "bar"])


def test_csv_values_are_read_as_written(tmp_path: Path) -> None:
    p = _csv(tmp_path, "user_id,item_id,rating,event_type,event_timestamp\n"
                       "1,2,four,rating,2024-01-01T00:00:00Z\n3,4,,view,1700000000\n")
    df, table = read_file(p)
    assert table == schema.INTERACTIONS
    assert df[schema.RATING].tolist()[0] == "four"  # not coerced: the suite must see it


def test_prepare_parses_epoch_and_iso_and_reports_garbage() -> None:
    df = pd.DataFrame({schema.EVENT_TIMESTAMP: ["2024-01-01T00:00:00Z", "yesterday", None]})
    out, notes = prepare(df, schema.INTERACTIONS)
    assert out[schema.EVENT_TIMESTAMP].iloc[0] == pd.Timestamp("2024-01-01", tz="UTC")
    assert out[schema.EVENT_TIMESTAMP].isna().tolist() == [False, True, True]
    assert len(notes) == 1 and "1 value(s) are not timestamps" in notes[0]
    assert "yesterday" in notes[0]
    assert df[schema.EVENT_TIMESTAMP].tolist()[1] == "yesterday"  # the input frame is untouched
    epoch, _ = prepare(pd.DataFrame({schema.EVENT_TIMESTAMP: [1_700_000_000]}), "interactions")
    assert epoch[schema.EVENT_TIMESTAMP].iloc[0] == pd.Timestamp(1_700_000_000, unit="s", tz="UTC")


def test_prepare_uncategorises_without_changing_values() -> None:
    df = make_interactions(20).astype({schema.EVENT_TYPE: "category"})
    out, _ = prepare(df, schema.INTERACTIONS)
    assert not isinstance(out[schema.EVENT_TYPE].dtype, pd.CategoricalDtype)
    assert out[schema.EVENT_TYPE].tolist() == df[schema.EVENT_TYPE].tolist()
    assert isinstance(df[schema.EVENT_TYPE].dtype, pd.CategoricalDtype)  # input untouched
    assert (out[schema.RATING].to_numpy() == df[schema.RATING].to_numpy()).all()
    assert out[schema.RATING].astype("float32").equals(df[schema.RATING])  # exact round trip
