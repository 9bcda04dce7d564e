"""A team's own files: the contract, string ids, timestamps, bad input, the retail example."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recops import schema
from recops.config import load_settings
from recops.core.idmap import HASHED_FLOOR, IdMap, internal_id
from recops.core.lake import Lake
from recops.data.retail_example import write_example
from recops.data.tables import read_staged, stage
from recops.data.team import Sources, load_files
from recops.data.team_stage import stage_files
from recops.errors import ConfigError, DataError
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[2]
RETAIL = REPO / "examples" / "retail"


def _files(settings, events: str | None, items: str | None = None, **kw):
    return load_files(settings, sources=Sources(events, items, **kw))


def _write(path: Path, rows: list[dict]) -> str:
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


ITEMS = [{"sku": "SKU-1", "title": "Red shoe", "description": "A red shoe", "category": "shoes"},
         {"sku": "SKU-2", "title": "Blue coat", "description": "A warm coat", "category": "coats"},
         {"sku": "SKU-3", "title": "Tent", "description": "Two people", "category": "camping"}]
MAP = {"customer": "user_id", "sku": "item_id", "event": "event_type", "ts": "timestamp"}


def _events(ts: list, customers=("c-1", "c-2", "c-1"), skus=("SKU-1", "SKU-2", "SKU-3"),
            events=("view", "click", "purchase")) -> list[dict]:
    return [{"customer": c, "sku": s, "event": e, "ts": t}
            for c, s, e, t in zip(customers, skus, events, ts, strict=True)]


# ----------------------------------------------------------------------------- the example

def test_the_shipped_retail_example_is_what_the_generator_writes(tmp_path: Path) -> None:
    paths = write_example(tmp_path)
    for name, path in paths.items():
        assert path.read_bytes() == (RETAIL / path.name).read_bytes(), name
    assert sum(p.stat().st_size for p in RETAIL.glob("*.csv")) < 300_000
    events = pd.read_csv(RETAIL / "events.csv")
    assert set(events["event_type"]) == {"view", "click", "purchase", "dislike"}
    assert events["item_id"].str.startswith("SKU-").all()


def test_the_retail_example_loads_with_string_ids_text_and_attributes(settings) -> None:
    t = _files(settings, str(RETAIL / "events.csv"), str(RETAIL / "items.csv"),
               users=str(RETAIL / "users.csv"), item_attributes=("category", "brand"))
    raw_items = pd.read_csv(RETAIL / "items.csv")
    raw_events = pd.read_csv(RETAIL / "events.csv")
    assert (len(t.interactions), len(t.items), len(t.users)) == (len(raw_events), 200, 300)
    assert t.quarantined is None
    # Internal ids are int64 in the hashed range, and the lake's id map turns them back.
    assert (t.items[schema.ITEM_ID] >= HASHED_FLOOR).all()
    back = IdMap(settings.paths.lake, "items").external_ids(t.items[schema.ITEM_ID])
    assert back == raw_items["item_id"].tolist()
    users = IdMap(settings.paths.lake, "users").external_ids(t.interactions[schema.USER_ID][:5])
    assert users == raw_events["user_id"][:5].tolist()
    # The encoder's text: title, description and the attributes; attributes are categorical.
    first = t.items.iloc[0]
    assert first[schema.TITLE] == raw_items["title"][0]
    assert raw_items["description"][0].rstrip(".") in first[schema.TEXT]
    assert "category: outerwear" in first[schema.TEXT]
    assert first[schema.GENRES] == f"outerwear|{raw_items['brand'][0]}"
    assert first["category"] == "outerwear" and first["price"] == raw_items["price"][0]
    withdrawn = t.items[t.items["available_until"].notna()]
    assert len(withdrawn) == 1 and str(withdrawn["available_until"].iloc[0]) == \
        "2026-10-15 00:00:00+00:00"
    assert set(t.users.columns) >= {"region", "member"}


def test_integer_ids_stay_themselves_and_text_ids_never_move(tmp_path: Path) -> None:
    assert internal_id(42) == internal_id("42") == 42
    sku = internal_id("SKU-42")
    assert sku >= HASHED_FLOOR and sku == internal_id("SKU-42") != internal_id("SKU-43")
    assert internal_id("007") >= HASHED_FLOOR  # not a plain integer: "007" stays "007"
    m = IdMap(tmp_path, "items")
    pairs = pd.DataFrame({"external_id": ["SKU-42", "007"],
                          "internal_id": [sku, internal_id("007")]})
    assert m.add(pairs) == 2 and m.add(pairs) == 0
    v1 = m.version()
    assert m.add(pd.DataFrame({"external_id": ["SKU-9"], "internal_id": [internal_id("SKU-9")]}))
    assert m.version() != v1
    assert m.external_ids([sku, 42, internal_id("007")]) == ["SKU-42", 42, "007"]
    assert m.forget(sku) == 1 and m.external_ids([sku]) == [sku]
    assert m.read()["external_id"].tolist() == ["007", "SKU-9"]  # the others kept, in order
    for bad in ("", "x" * 257):
        with pytest.raises(DataError, match="not usable"):
            internal_id(bad)


# ----------------------------------------------------------------------------- names and times

@pytest.mark.parametrize("unit, stamps", [
    ("s", [1_760_000_000, 1_760_000_100, 1_760_000_200]),
    ("ms", [1_760_000_000_000, 1_760_000_100_000, 1_760_000_200_000]),
    ("auto", [1_760_000_000_000, 1_760_000_100_000, 1_760_000_200_000]),
    ("auto", ["2025-10-09T08:53:20Z", "2025-10-09T10:55:00+01:00", "2025-10-09T08:56:40Z"]),
])
def test_team_column_names_and_timestamp_units(settings, tmp_path: Path, unit, stamps) -> None:
    items = _write(tmp_path / "items.csv", ITEMS)
    events = _write(tmp_path / "events.csv", _events(stamps))
    t = _files(settings, events, items, columns=MAP, timestamp_unit=unit)
    assert t.interactions[schema.EVENT_TIMESTAMP].tolist() == [
        pd.Timestamp(s, tz="UTC") for s in
        ("2025-10-09 08:53:20", "2025-10-09 09:55:00" if isinstance(stamps[0], str)
         else "2025-10-09 08:55:00", "2025-10-09 08:56:40")]
    assert t.interactions[schema.USER_ID].tolist() == [internal_id(c) for c in ("c-1", "c-2",
                                                                                "c-1")]
    assert t.interactions[schema.EVENT_TYPE].tolist() == ["view", "click", "purchase"]
    assert t.interactions[schema.RATING].isna().all()  # implicit events carry no rating


@pytest.mark.parametrize("unit, stamps, hint", [
    ("s", [1_760_000_000_000] * 3, "read as seconds fall after 2100 .* milliseconds"),
    ("ms", [1_760_000_000] * 3, "read as milliseconds fall before 1995-01-01 .* seconds"),
    ("iso", [1_760_000_000] * 3, "are numbers .* but data.timestamp_unit is 'iso'"),
])
def test_a_timestamp_unit_that_cannot_be_right_is_one_line(settings, tmp_path: Path, unit,
                                                           stamps, hint) -> None:
    items = _write(tmp_path / "items.csv", ITEMS)
    events = _write(tmp_path / "events.csv", _events(stamps))
    with pytest.raises(DataError, match=rf"events.csv: column 'ts' \(mapped to 'timestamp'\): "
                                        rf"3 of 3 row\(s\) {hint}"):
        _files(settings, events, items, columns=MAP, timestamp_unit=unit)


# ----------------------------------------------------------------------------- bad input, CLI

def _bad_cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (the ingest flags, what the one line says)."""
    good_items = _write(tmp / "items.csv", ITEMS)
    ts = ["2025-10-09T08:53:20Z"] * 3
    cases: dict[str, tuple[list[str], str]] = {}
    no_type = [{k: v for k, v in r.items() if k != "event"} for r in _events(ts)]
    cases["missing column"] = (["--events", _write(tmp / "e1.csv", no_type), "--items",
                                good_items], r"e1.csv: missing column\(s\) \['event'\]")
    wrong = [{**r, "amount": v} for r, v in zip(_events(ts), ["3", "x", "y"], strict=True)]
    cases["wrong type"] = (["--events", _write(tmp / "e2.csv", wrong), "--items", good_items,
                            "--columns", "amount=value"],
                           r"e2.csv: line 3: column 'amount' \(mapped to 'value'\) has 'x', "
                           r"expected a number \(2 of 3 row\(s\)")
    odd = _events(ts, events=("view", "wishlist", "wishlist"))
    cases["unknown event type"] = (["--events", _write(tmp / "e3.csv", odd), "--items",
                                    good_items], r"e3.csv: column 'event' \(mapped to "
                                   r"'event_type'\): 2 of 3 row\(s\) have an unknown event type "
                                   r"\('wishlist' first\)")
    ms = _events([1_760_000_000_000] * 3)
    cases["timestamp unit"] = (["--events", _write(tmp / "e4.csv", ms), "--items", good_items,
                                "--timestamp-unit", "s"],
                               r"e4.csv: column 'ts' \(mapped to 'timestamp'\): 3 of 3 row\(s\)"
                               r" read as seconds")
    dup = [*ITEMS, {**ITEMS[0], "description": "Another text"}]
    cases["duplicate items"] = (["--events", _write(tmp / "e5.csv", _events(ts)), "--items",
                                 _write(tmp / "i5.csv", dup)],
                                r"i5.csv: column 'sku' \(mapped to 'item_id'\): 1 item id\(s\) "
                                r"appear more than once with different text \('SKU-1' first; 2 "
                                r"row\(s\)\)")
    (tmp / "e6.csv").write_bytes(b"")
    cases["empty file"] = (["--events", str(tmp / "e6.csv"), "--items", good_items],
                           r"e6.csv: the file is empty \(0 bytes\)")
    pd.DataFrame(_events(ts)).to_parquet(tmp / "e7.csv")
    cases["parquet named csv"] = (["--events", str(tmp / "e7.csv"), "--items", good_items],
                                  r"e7.csv: not delimited text: it is a Parquet file")
    (tmp / "i8.parquet").write_text("sku,title\nSKU-1,x\n")
    cases["csv named parquet"] = (["--events", _write(tmp / "e8.csv", _events(ts)), "--items",
                                   str(tmp / "i8.parquet")], r"i8.parquet: not a Parquet file")
    nowhere = _events(ts, skus=("SKU-7", "SKU-8", "SKU-9"))
    cases["no known item"] = (["--events", _write(tmp / "e9.csv", nowhere), "--items",
                               good_items], r"e9.csv: column 'item_id': none of the 3 row\(s\)")
    return cases


def test_every_bad_input_is_one_line_and_stages_nothing(monkeypatch, capsys, settings,
                                                        tmp_path: Path) -> None:
    import re

    cols = ["--columns", "customer=user_id,sku=item_id",
            "--columns", "event=event_type,ts=timestamp"]
    for name, (flags, message) in _bad_cases(tmp_path).items():
        code, out, err = run_cli(monkeypatch, capsys, "ingest", *flags, *cols)
        text = (out + err).strip()
        assert code == 2, (name, text)
        assert len(text.splitlines()) == 1 and "Traceback" not in text, (name, text)
        assert re.search(message, text), (name, message, text)
    assert not settings.paths.staging.exists() or not any(settings.paths.staging.iterdir())
    assert not (settings.paths.lake / "idmap").exists()  # no id was recorded either


def test_events_of_unknown_items_are_set_aside_by_row(monkeypatch, capsys, settings,
                                                      tmp_path: Path) -> None:
    items = _write(tmp_path / "items.csv", ITEMS)
    ts = ["2025-10-09T08:53:20Z", "2025-10-09T08:54:20Z", "2025-10-09T08:55:20Z"]
    events = _write(tmp_path / "events.csv", _events(ts, skus=("SKU-1", "SKU-404", "SKU-3")))
    code, out, err = run_cli(monkeypatch, capsys, "ingest", "--events", events, "--items", items,
                             "--map", "customer=user_id,sku=item_id,event=event_type,ts=timestamp")
    assert code == 0, err
    staged_id = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                     if line.startswith("staged id:"))
    assert "set aside: 1 event row(s)" in out
    t = read_staged(settings.paths.staging, staged_id)
    assert t.interactions[schema.ITEM_ID].tolist() == [internal_id("SKU-1"), internal_id("SKU-3")]
    q = pd.read_csv(settings.paths.staging / staged_id / "quarantine" / "interactions.csv")
    assert q["external_item_id"].tolist() == ["SKU-404"]
    assert q["quarantine_reason"].tolist() == ["item_id SKU-404 is not in the catalogue"]


def test_an_incremental_batch_joins_the_catalogue(settings, tmp_path: Path) -> None:
    lake = Lake(settings.paths.lake)
    items = _write(tmp_path / "items.csv", ITEMS)
    ts = ["2025-10-09T08:53:20Z", "2025-10-09T08:54:20Z", "2025-10-09T08:55:20Z"]
    first = _files(settings, _write(tmp_path / "e.csv", _events(ts)), items, columns=MAP)
    for name, df in first.as_dict().items():
        lake.append(name, df, "test")
    # A new item, a changed description, an item withdrawn; events on old and new items.
    batch = [{**ITEMS[0], "description": "A red running shoe"},
             {**ITEMS[2], "available": "false"},
             {"sku": "SKU-4", "title": "Lamp", "description": "Bright", "category": "camping"}]
    more = _events(["2025-10-10T08:00:00Z"] * 2, customers=("c-1", "c-new"),
                   skus=("SKU-4", "SKU-2"), events=("view", "dislike"))
    t = load_files(settings, lake, Sources(_write(tmp_path / "e2.csv", more),
                                           _write(tmp_path / "i2.csv", batch), columns=MAP))
    by_id = t.items.set_index(schema.ITEM_ID)
    assert len(by_id) == 4  # SKU-2 kept from the lake, SKU-4 joined
    assert "A red running shoe" in by_id.loc[internal_id("SKU-1"), schema.TEXT]
    assert by_id.loc[internal_id("SKU-3"), "available"] == False  # noqa: E712
    assert t.quarantined is None and len(t.interactions) == 2
    assert internal_id("c-new") in set(t.users[schema.USER_ID])
    assert len(t.users) == 3


# ----------------------------------------------------------------------------- settings

def test_files_settings(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(overrides={"data.events": "ev.csv", "data.items": "file:///x/items.csv"})
    assert s.data.dataset == "files" and s.data.events == str(tmp_path / "ev.csv")
    assert s.data.items == "file:///x/items.csv"  # URLs as given
    for bad, msg in (({"data.dataset": "files"}, "needs data.events"),
                     ({"data.dataset": "synthetic", "data.events": "e.csv"}, "not 'synthetic'"),
                     ({"data.timestamp_unit": "us"}, "timestamp_unit")):
        with pytest.raises(ConfigError, match=msg):
            load_settings(overrides=bad)


def test_pipeline_params_take_the_same_sources() -> None:
    from recops.orchestration.params import PIPELINE_PARAMS, dag_params, settings_from_params

    params = dag_params(PIPELINE_PARAMS)
    assert {"events", "items", "users", "columns", "item_attributes",
            "timestamp_unit"} <= set(params)
    assert params["events"].schema["type"] == ["null", "string"]
    s = settings_from_params({"events": "/d/e.csv", "items": "/d/i.csv",
                              "columns": {"sku": "item_id"}, "item_attributes": ["category"]})
    assert (s.data.dataset, s.data.events, s.data.columns, s.data.item_attributes) == (
        "files", "/d/e.csv", {"sku": "item_id"}, ["category"])


@pytest.mark.parametrize("flags, message", [
    (["--columns", "customer"], r"--columns 'customer': expected YOURS=CANONICAL"),
    (["--columns", "customer=buyer"], r"column mapping \{'customer': 'buyer'\}: the canonical "
                                      r"names are"),
    (["--columns", "a=user_id,a=item_id"], r"--columns: column 'a' is mapped twice"),
    (["--timestamp-unit", "us"], r"setting 'data.timestamp_unit' \(got 'us'\)"),
    (["--file", "x.csv"], r"--file .* and --events/--items/--users .* give one"),
])
def test_bad_flags_are_one_line(monkeypatch, capsys, settings, tmp_path: Path, flags,
                                message) -> None:
    import re

    items = _write(tmp_path / "items.csv", ITEMS)
    events = _write(tmp_path / "events.csv", _events(["2025-10-09T08:53:20Z"] * 3))
    code, out, err = run_cli(monkeypatch, capsys, "ingest", "--events", events, "--items",
                             items, *flags)
    text = (out + err).strip()
    assert code == 2 and len(text.splitlines()) == 1 and re.search(message, text), text
    assert not settings.paths.staging.exists()


def test_parquet_times_and_json_lines_through_a_file_url(settings, tmp_path: Path) -> None:
    import json

    pd.DataFrame({"item_id": ["A", "B"], "title": ["x", "y"]}).to_parquet(tmp_path / "i.parquet")
    pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["A", "B"], "event_type": "view",
                  "timestamp": pd.to_datetime(["2025-10-09T08:00:00Z",
                                               "2025-10-09T09:00:00+02:00"], utc=True)}
                 ).to_parquet(tmp_path / "e.parquet")
    t = _files(settings, str(tmp_path / "e.parquet"), str(tmp_path / "i.parquet"))
    assert t.interactions[schema.EVENT_TIMESTAMP].tolist() == [
        pd.Timestamp("2025-10-09 08:00", tz="UTC"), pd.Timestamp("2025-10-09 07:00", tz="UTC")]
    rows = [{"user_id": 1, "item_id": "A", "event_type": "view", "timestamp": 1760000000123},
            {"user_id": "u2", "item_id": "B", "event_type": "rating",
             "timestamp": 1760000001000, "value": 4.5}]
    (tmp_path / "e.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    t = _files(settings, f"file://{tmp_path}/e.jsonl", str(tmp_path / "i.parquet"))
    assert t.interactions[schema.USER_ID].tolist() == [1, internal_id("u2")]
    assert t.interactions[schema.EVENT_TIMESTAMP].iloc[0] == pd.Timestamp(
        "2025-10-09 08:53:20.123", tz="UTC")  # milliseconds kept exactly
    assert t.interactions[schema.RATING].isna().tolist() == [True, False]
    assert t.interactions[schema.RATING].iloc[1] == 4.5


# ----------------------------------------------------------------------------- streamed

def test_streamed_staging_is_the_whole_files_staging(settings, tmp_path: Path) -> None:
    """The events file read 16 KiB at a time (15 chunks) stages the very batch that
    reading it whole does: same id, rows, set-aside rows and id map."""
    events = pd.read_csv(RETAIL / "events.csv")
    events.loc[[7, 3000], "item_id"] = "SKU-404"  # set aside, in two different chunks
    path = _write(tmp_path / "events.csv", events.to_dict("records"))
    src = Sources(path, str(RETAIL / "items.csv"), users=str(RETAIL / "users.csv"),
                  item_attributes=("category", "brand"))
    whole = load_files(settings, sources=src)
    whole_id = stage(settings.paths.staging, whole)
    whole_map = IdMap(settings.paths.lake, "users").read()
    other = load_settings(overrides={"home": tmp_path / "other"})
    streamed = stage_files(other, sources=src, chunk_bytes=16 << 10)
    assert streamed.staged_id == whole_id
    assert streamed.rows == {name: len(df) for name, df in whole.as_dict().items()}
    assert streamed.set_aside == 2 == len(whole.quarantined)
    q = pd.read_csv(other.paths.staging / whole_id / "quarantine" / "interactions.csv")
    assert q["external_item_id"].tolist() == ["SKU-404", "SKU-404"]
    pd.testing.assert_frame_equal(IdMap(other.paths.lake, "users").read(), whole_map)


def test_a_bad_event_type_in_the_last_chunk_stages_nothing(settings, tmp_path: Path) -> None:
    events = pd.read_csv(RETAIL / "events.csv")
    events.loc[[100, len(events) - 1], "event_type"] = "wishlist"
    path = _write(tmp_path / "events.csv", events.to_dict("records"))
    src = Sources(path, str(RETAIL / "items.csv"))
    with pytest.raises(DataError, match=rf"events.csv: column 'event_type': 2 of {len(events)} "
                                        r"row\(s\) have an unknown event type \('wishlist'"):
        stage_files(settings, sources=src, chunk_bytes=16 << 10)
    assert not settings.paths.staging.exists() or not [
        p for p in settings.paths.staging.iterdir() if not p.name.startswith(".")]
    assert not (settings.paths.lake / "idmap").exists()
