"""The lake: idempotent appends, content-hash versions, faithful read-back."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from recops import schema
from recops.core.lake import Lake
from recops.data.synthetic import generate
from recops.errors import DataError


@pytest.fixture(scope="module")
def tables():
    return generate(n_users=20, n_items=30, n_interactions=400, seed=9)


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path / "lake")


def test_empty_lake(lake: Lake) -> None:
    assert lake.version(schema.INTERACTIONS) is None
    assert lake.read(schema.INTERACTIONS).empty
    with pytest.raises(DataError, match="holds no interactions yet"):
        lake.dataset_version()


def test_append_is_idempotent(lake: Lake, tables) -> None:
    first = lake.append(schema.INTERACTIONS, tables.interactions, source="s1")
    v1 = lake.version(schema.INTERACTIONS)
    again = lake.append(schema.INTERACTIONS, tables.interactions.copy(), source="s2")
    assert again == first  # same content: the existing batch, not a new one
    assert len(lake.batches(schema.INTERACTIONS)) == 1
    assert lake.version(schema.INTERACTIONS) == v1
    assert len(lake.read(schema.INTERACTIONS)) == len(tables.interactions)


def test_versions_change_with_content(lake: Lake, tables) -> None:
    df = tables.interactions
    lake.append(schema.INTERACTIONS, df.iloc[:200], source="a")
    v1 = lake.version(schema.INTERACTIONS)
    lake.append(schema.ITEMS, tables.items, source="a")
    d1 = lake.dataset_version()
    lake.append(schema.INTERACTIONS, df.iloc[200:], source="b")
    v2 = lake.version(schema.INTERACTIONS)
    assert v2 != v1 and lake.dataset_version() != d1
    # One changed value is a new version too.
    other = Lake(lake.root.parent / "other")
    changed = df.iloc[:200].copy()
    changed.loc[changed.index[0], schema.RATING] = 0.5 if changed[schema.RATING].iloc[0] != 0.5 \
        else 1.0
    other.append(schema.INTERACTIONS, changed, source="a")
    assert other.version(schema.INTERACTIONS) != v1
    # The same batches in a fresh lake give the same version: names depend on content only.
    same = Lake(lake.root.parent / "same")
    same.append(schema.INTERACTIONS, df.iloc[:200], source="elsewhere")
    assert same.version(schema.INTERACTIONS) == v1


def test_read_back_equals_what_was_written(lake: Lake, tables) -> None:
    df = tables.interactions
    lake.append(schema.INTERACTIONS, df.iloc[:150], source="a")
    lake.append(schema.INTERACTIONS, df.iloc[150:], source="b")
    pd.testing.assert_frame_equal(Lake(lake.root).read(schema.INTERACTIONS), df)
    first = lake.batches(schema.INTERACTIONS)[0]
    pd.testing.assert_frame_equal(lake.read(schema.INTERACTIONS, [first.batch_id]),
                                  df.iloc[:150].reset_index(drop=True))


def test_manifest_records_rows_hash_source_time(lake: Lake, tables) -> None:
    m = lake.append(schema.USERS, tables.users, source="synthetic:test")
    on_disk = json.loads(Path(m.path).with_suffix(".json").read_text())
    assert on_disk["rows"] == len(tables.users) == m.rows
    assert on_disk["source"] == "synthetic:test" and on_disk["content_hash"] == m.content_hash
    assert m.batch_id == m.content_hash[:16] and on_disk["created_at"]


def test_read_latest_is_the_newest_snapshot_for_items(lake: Lake, tables) -> None:
    lake.append(schema.ITEMS, tables.items, source="v1")
    newer = tables.items.assign(title=tables.items[schema.TITLE] + " (remastered)")
    lake.append(schema.ITEMS, newer, source="v2")
    latest = lake.read_latest(schema.ITEMS)
    assert latest[schema.TITLE].str.endswith("(remastered)").all()
    assert len(lake.read(schema.ITEMS)) == 2 * len(tables.items)


def test_unknown_table_and_bad_frame(lake: Lake, tables) -> None:
    with pytest.raises(DataError, match="unknown lake table 'ratings'"):
        lake.append("ratings", tables.interactions, source="x")
    with pytest.raises(DataError, match="missing required column"):
        lake.append(schema.ITEMS, tables.interactions, source="x")
    assert lake.batches(schema.ITEMS) == []  # nothing half-written


def test_a_moved_lake_reads_from_its_new_place(tmp_path):
    import shutil

    import pandas as pd

    from recops.core.lake import Lake

    old = Lake(tmp_path / "old")
    df = pd.DataFrame({"user_id": [1, 2], "item_id": [3, 4], "rating": [4.0, 5.0],
                       "event_type": ["rating", "rating"],
                       "event_timestamp": pd.to_datetime([1, 2], unit="s", utc=True)})
    old.append("interactions", df, "t")
    shutil.move(tmp_path / "old", tmp_path / "new")
    moved = Lake(tmp_path / "new")
    assert moved.batches("interactions")[0].path.startswith(str(tmp_path / "new"))
    assert moved.read("interactions")["item_id"].tolist() == [3, 4]
