"""load_dataset dispatch, dataset listing, and incremental files of interactions."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recops import schema
from recops.config import load_settings
from recops.core.lake import Lake
from recops.data.loaders import (
    dataset_status,
    incremental_tables,
    load_dataset,
    read_interactions_file,
)
from recops.errors import DataError
from tests.data.conftest import write_latest, write_ml1m


def test_dispatch_synthetic(home: Path) -> None:
    s = load_settings(overrides={"data.dataset": "synthetic", "data.synthetic.n_users": 20,
                                 "data.synthetic.n_items": 30,
                                 "data.synthetic.n_interactions": 200})
    t = load_dataset(s)
    assert len(t.interactions) == 200 and t.source.startswith("synthetic:")


def test_dispatch_movielens_from_root(tmp_path: Path, home: Path) -> None:
    write_ml1m(tmp_path / "mirror" / "ml-1m")
    s = load_settings(overrides={"data.dataset": "ml-1m", "data.root": tmp_path / "mirror",
                                 "data.download": False})
    t = load_dataset(s)
    assert t.source == "movielens:ml-1m"  # stable wherever the copy lives
    assert "occupation" in t.users.columns


def test_root_without_the_dataset_falls_back_to_the_home_cache(tmp_path: Path, home: Path) -> None:
    # The Makefile exports RECOPS_DATA__ROOT for ml-latest-small; other datasets must still load
    # from (or download into) <home>/datasets.
    write_latest(tmp_path / "mirror" / "ml-latest-small")
    s = load_settings(overrides={"data.dataset": "ml-1m", "data.root": tmp_path / "mirror",
                                 "data.download": False})
    write_ml1m(s.paths.datasets / "ml-1m")
    assert len(load_dataset(s).interactions) == 4


def test_dataset_status(tmp_path: Path, home: Path) -> None:
    write_latest(tmp_path / "mirror" / "ml-latest-small")
    s = load_settings(overrides={"data.root": tmp_path / "mirror", "data.download": False})
    rows = {r.name: r for r in dataset_status(s)}
    assert set(rows) == {"ml-latest-small", "ml-100k", "ml-1m", "ml-25m", "synthetic"}
    assert rows["ml-latest-small"].present
    assert rows["ml-latest-small"].path == str(tmp_path / "mirror" / "ml-latest-small")
    assert not rows["ml-1m"].present and "download is off" in rows["ml-1m"].note


# ----------------------------------------------------------------------------- incremental files

BATCH = pd.DataFrame({
    schema.USER_ID: [1, 2, 99],
    schema.ITEM_ID: [2, 3, 1],
    schema.RATING: [4.5, None, 3.0],
    schema.EVENT_TIMESTAMP: ["2026-02-01T10:00:00Z", "2026-02-01T10:05:00", "2026-02-01T11:00:00Z"],
})


def test_csv_batch(tmp_path: Path) -> None:
    p = tmp_path / "batch.csv"
    BATCH.to_csv(p, index=False)
    df = read_interactions_file(p)
    assert str(df[schema.EVENT_TIMESTAMP].dtype) == "datetime64[us, UTC]"
    assert df[schema.EVENT_TIMESTAMP].iloc[1] == pd.Timestamp("2026-02-01 10:05", tz="UTC")
    # No event_type column: a rating makes it a "rating", no rating an implicit "view".
    assert df[schema.EVENT_TYPE].tolist() == ["rating", "view", "rating"]
    assert df[schema.RATING].isna().tolist() == [False, True, False]


def test_parquet_batch_with_epoch_seconds(tmp_path: Path) -> None:
    p = tmp_path / "batch.parquet"
    BATCH.assign(event_timestamp=[1769940000, 1769940300, 1769943600],
                 event_type=["click", "view", "like"]).to_parquet(p)
    df = read_interactions_file(p)
    assert df[schema.EVENT_TYPE].tolist() == ["click", "view", "like"]
    assert df[schema.EVENT_TIMESTAMP].iloc[0] == pd.Timestamp(1769940000, unit="s", tz="UTC")


def _write(p: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content)
    return p


BAD_FILES = {
    "empty.csv": ("", "empty"),
    "cols.csv": ("user,item,when\n1,2,2026-01-01\n", "missing column(s)"),
    "delim.csv": ("user_id;item_id;event_timestamp\n1;2;2026-01-01\n", "wrong delimiter"),
    "enc.csv": ("user_id,item_id,event_timestamp,title\n1,2,2026-01-01,caf\xe9\n".encode("latin-1"),
                "not valid UTF-8"),
    "ts.csv": ("user_id,item_id,event_timestamp\n1,2,2026-01-01\n1,3,yesterday\n",
               "line 3: column 'event_timestamp' has 'yesterday'"),
    "id.csv": ("user_id,item_id,event_timestamp\n1,2.5,2026-01-01\n",
               "line 2: column 'item_id' has '2.5'"),
    "rating.csv": ("user_id,item_id,rating,event_timestamp\n1,2,good,2026-01-01\n",
                   "line 2: column 'rating' has 'good'"),
    "rows.csv": ("user_id,item_id,event_timestamp\n", "no rows"),
    "batch.json": ("{}", "unsupported file type"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_batch_files(tmp_path: Path, name: str) -> None:
    content, expect = BAD_FILES[name]
    p = _write(tmp_path / name, content)
    with pytest.raises(DataError) as err:
        read_interactions_file(p)
    assert str(p) in str(err.value) and expect in str(err.value), str(err.value)


def test_truncated_parquet(tmp_path: Path) -> None:
    p = tmp_path / "batch.parquet"
    BATCH.to_parquet(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="not a readable Parquet file") as err:
        read_interactions_file(p)
    assert str(p) in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_interactions_file(tmp_path / "nope.csv")


def test_incremental_needs_a_lake(tmp_path: Path) -> None:
    p = tmp_path / "batch.csv"
    BATCH.to_csv(p, index=False)
    with pytest.raises(DataError, match="holds no items yet"):
        incremental_tables(p, Lake(tmp_path / "lake"))


def test_incremental_takes_latest_items_and_adds_new_users(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    items = pd.DataFrame({schema.ITEM_ID: [1, 2, 3], schema.TITLE: ["a", "b", "c"],
                          schema.GENRES: ["", "", ""], schema.TEXT: ["a", "b", "c"]})
    lake.append(schema.ITEMS, items, source="test")
    lake.append(schema.USERS, pd.DataFrame({schema.USER_ID: [1, 2]}), source="test")
    p = tmp_path / "batch.csv"
    BATCH.to_csv(p, index=False)
    t = incremental_tables(p, lake)
    assert sorted(t.users[schema.USER_ID]) == [1, 2, 99]
    assert t.items[schema.ITEM_ID].tolist() == [1, 2, 3]
    assert len(t.interactions) == 3 and t.source.startswith("file:")
