"""Erasure by a team's text id reaches the id map, and the lake's rows go as for integer ids."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from recops import schema
from recops.core.idmap import IdMap, internal_id
from recops.core.lake import Lake
from recops.data.team import Sources, load_files
from tests.conftest import run_cli_text


def test_erasing_a_text_id_removes_its_rows_and_its_map_entry(monkeypatch, capsys, settings,
                                                               tmp_path: Path) -> None:
    items = tmp_path / "items.csv"
    pd.DataFrame({"item_id": ["SKU-1", "SKU-2"], "title": ["a", "b"]}).to_csv(items, index=False)
    events = tmp_path / "events.csv"
    pd.DataFrame({"user_id": ["c-gone", "c-stay", "c-gone"],
                  "item_id": ["SKU-1", "SKU-2", "SKU-2"], "event_type": "view",
                  "timestamp": ["2025-10-09T08:00:00Z", "2025-10-09T08:01:00Z",
                                "2025-10-09T08:02:00Z"]}).to_csv(events, index=False)
    lake = Lake(settings.paths.lake)
    for name, df in load_files(settings, sources=Sources(str(events), str(items))).as_dict(
            ).items():
        lake.append(name, df, "test")
    users = IdMap(settings.paths.lake, "users")
    assert set(users.read()["external_id"]) == {"c-gone", "c-stay"}

    code, text = run_cli_text(monkeypatch, capsys, "subject", "erase", "--yes", "c-gone")
    assert code == 0, text
    assert users.read()["external_id"].tolist() == ["c-stay"]
    left = lake.read(schema.INTERACTIONS)[schema.USER_ID].tolist()
    assert left == [internal_id("c-stay")]
    assert internal_id("c-gone") not in set(lake.read_latest(schema.USERS)[schema.USER_ID])
