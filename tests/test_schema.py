"""The one schema: constants agree with each other and with what loaders and the lake produce."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recops import schema
from recops.core.lake import conform
from recops.data.synthetic import generate
from recops.data.tables import Tables, read_staged, stage
from recops.errors import DataError


def test_arrow_and_pandas_schemas_name_the_same_columns() -> None:
    assert set(schema.SCHEMAS) == set(schema.PANDAS_DTYPES) == set(schema.TABLES)
    for table, arrow in schema.SCHEMAS.items():
        assert arrow.names == list(schema.PANDAS_DTYPES[table]), table
    assert schema.INTERACTIONS_SCHEMA.field(schema.EVENT_TIMESTAMP).type == schema.TIMESTAMP_TYPE
    assert "rating" in schema.EVENT_TYPES
    assert not set(schema.USER_OPTIONAL_COLUMNS) & set(schema.PANDAS_DTYPES[schema.USERS])


@pytest.fixture(scope="module")
def tables() -> Tables:
    return generate(n_users=20, n_items=30, n_interactions=300, seed=5)


def test_conformed_frames_match_the_schema(tables: Tables) -> None:
    for table, df in tables.as_dict().items():
        assert list(df.columns[: len(schema.PANDAS_DTYPES[table])]) == list(
            schema.PANDAS_DTYPES[table])
        assert {c: str(t) for c, t in df.dtypes.items() if c in schema.PANDAS_DTYPES[table]} == \
            schema.PANDAS_DTYPES[table]


def test_staged_parquet_matches_the_arrow_schema(tables: Tables, tmp_path: Path) -> None:
    staged_id = stage(tmp_path, tables)
    for table, arrow in schema.SCHEMAS.items():
        written = pq.read_schema(tmp_path / staged_id / f"{table}.parquet")
        for field in arrow:
            assert written.field(field.name).type == field.type, (table, field.name)
    back = read_staged(tmp_path, staged_id)
    pd.testing.assert_frame_equal(back.interactions, tables.interactions)


def test_conform_orders_required_columns_first_and_keeps_extras() -> None:
    df = pd.DataFrame({"age": [30], schema.USER_ID: ["7"]})
    out = conform(df, schema.USERS)
    assert list(out.columns) == [schema.USER_ID, "age"]
    assert out[schema.USER_ID].tolist() == [7] and str(out[schema.USER_ID].dtype) == "int64"


def test_conform_missing_column_names_table_and_column() -> None:
    df = pd.DataFrame({schema.USER_ID: [1], schema.ITEM_ID: [2]})
    with pytest.raises(DataError, match=r"interactions: missing required column\(s\) \['rating'"):
        conform(df, schema.INTERACTIONS)


def test_conform_bad_value_names_the_column() -> None:
    df = pd.DataFrame({schema.ITEM_ID: ["x1"], schema.TITLE: ["t"], schema.GENRES: [""],
                       schema.TEXT: ["t"]})
    with pytest.raises(DataError, match="items: column 'item_id' cannot be read as int64"):
        conform(df, schema.ITEMS)


def test_timestamps_become_utc_microseconds() -> None:
    df = pd.DataFrame({schema.USER_ID: [1], schema.ITEM_ID: [2], schema.RATING: [4.0],
                       schema.EVENT_TYPE: ["rating"],
                       schema.EVENT_TIMESTAMP: ["2026-01-01T12:00:00+02:00"]})
    out = conform(df, schema.INTERACTIONS)
    assert out[schema.EVENT_TIMESTAMP].iloc[0] == pd.Timestamp("2026-01-01 10:00", tz="UTC")
    assert pa.Table.from_pandas(out, preserve_index=False).schema.field(
        schema.EVENT_TIMESTAMP).type == schema.TIMESTAMP_TYPE
