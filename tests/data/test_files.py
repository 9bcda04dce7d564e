"""The one reader of user files: formats, URLs, column mapping, chunks, and one error policy."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from recops import schema
from recops.data.files import INTERACTIONS, read_frame
from recops.errors import DataError

ROWS = [(1, 10, 4.5, "rating", "2026-02-01T10:00:00Z"),
        (2, 11, None, "view", "2026-02-01T10:05:00Z"),
        (3, 12, 3.0, "click", "2026-02-01T11:00:00Z")]
COLS = [schema.USER_ID, schema.ITEM_ID, schema.RATING, schema.EVENT_TYPE, schema.EVENT_TIMESTAMP]


def _frame(n: int = 3) -> pd.DataFrame:
    rows = [ROWS[i % len(ROWS)] for i in range(n)]
    df = pd.DataFrame(rows, columns=COLS)
    df[schema.USER_ID] = range(1, n + 1)
    return df


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(DataError) as err:
        read_frame(path, INTERACTIONS, **kwargs)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg, msg  # one line, naming the file
    return msg


def test_the_three_formats_give_the_same_canonical_frame(tmp_path: Path) -> None:
    df = _frame()
    df.to_csv(tmp_path / "e.csv", index=False)
    df.to_parquet(tmp_path / "e.parquet")
    df.to_json(tmp_path / "e.jsonl", orient="records", lines=True)
    frames = [read_frame(tmp_path / f"e.{ext}", INTERACTIONS) for ext in ("csv", "parquet",
                                                                           "jsonl")]
    for got in frames:
        assert list(got.columns) == COLS
        assert str(got[schema.USER_ID].dtype) == "int64"
        assert str(got[schema.RATING].dtype) == "float32"
        assert str(got[schema.EVENT_TIMESTAMP].dtype) == "datetime64[us, UTC]"
        assert got[schema.EVENT_TIMESTAMP].iloc[1] == pd.Timestamp("2026-02-01 10:05", tz="UTC")
        pd.testing.assert_frame_equal(got, frames[0])


def test_user_column_names_map_to_canonical_ones(tmp_path: Path) -> None:
    p = _write(tmp_path, "shop.csv", "customer,sku,when,store\n7,42,1769940000,north\n")
    df = read_frame(p, INTERACTIONS, rename={"customer": schema.USER_ID, "sku": schema.ITEM_ID,
                                             "when": schema.EVENT_TIMESTAMP})
    assert df[schema.USER_ID].tolist() == [7] and df[schema.ITEM_ID].tolist() == [42]
    assert df[schema.EVENT_TIMESTAMP].iloc[0] == pd.Timestamp(1769940000, unit="s", tz="UTC")
    assert df["store"].tolist() == ["north"]  # other columns kept as they are
    only = read_frame(p, INTERACTIONS, rename={"customer": schema.USER_ID, "sku": "item_id",
                                               "when": schema.EVENT_TIMESTAMP}, others=False)
    assert list(only.columns) == [schema.USER_ID, schema.ITEM_ID, schema.EVENT_TIMESTAMP]


def test_a_file_url_reads_like_its_path(tmp_path: Path) -> None:
    p = tmp_path / "events.csv"
    _frame().to_csv(p, index=False)
    by_url = read_frame(p.as_uri(), INTERACTIONS)
    assert p.as_uri().startswith("file://")
    pd.testing.assert_frame_equal(by_url, read_frame(p, INTERACTIONS))


@pytest.mark.parametrize("ext", ["csv", "jsonl", "parquet"])
def test_a_chunked_read_equals_a_whole_read(tmp_path: Path, ext: str) -> None:
    p = tmp_path / f"big.{ext}"
    df = _frame(2000)
    if ext == "csv":
        df.to_csv(p, index=False)
    elif ext == "jsonl":
        df.to_json(p, orient="records", lines=True)
    else:
        df.to_parquet(p, row_group_size=300)
    chunk = 1024
    assert p.stat().st_size > 20 * chunk
    whole = read_frame(p, INTERACTIONS)
    chunked = read_frame(p, INTERACTIONS, chunk_bytes=chunk)
    assert len(whole) == 2000
    pd.testing.assert_frame_equal(chunked, whole)
    # As-is reads (no contract) agree too: the same columns, types and values.
    pd.testing.assert_frame_equal(read_frame(p, chunk_bytes=chunk), read_frame(p))


def test_a_bad_value_is_counted_over_every_chunk(tmp_path: Path) -> None:
    df = _frame(500).astype({schema.ITEM_ID: object})
    df.loc[[100, 300, 450], schema.ITEM_ID] = "n/a"
    p = tmp_path / "big.csv"
    df.to_csv(p, index=False)
    msg = _error(p, chunk_bytes=512)
    assert "line 102: column 'item_id' has 'n/a', expected an integer (3 of 500 row(s))" in msg


BAD = {
    "missing column": ("e.csv", "user_id,when\n1,2026-01-01\n",
                       "missing column(s) ['item_id', 'event_timestamp']"),
    "wrong type": ("e.csv", "user_id,item_id,event_timestamp\n1,2,2026-01-01\nx,3,2026-01-02\n"
                   "y,4,2026-01-03\n", "line 3: column 'user_id' has 'x', expected an integer "
                   "(2 of 3 row(s))"),
    "missing value": ("e.csv", "user_id,item_id,event_timestamp\n1,,2026-01-01\n",
                      "line 2: missing value for 'item_id' (1 of 1 row(s))"),
    "empty": ("e.csv", "", "the file is empty (0 bytes)"),
    "header only": ("e.csv", "user_id,item_id,event_timestamp\n",
                    "the file has a header but no rows"),
    "empty jsonl": ("e.jsonl", "\n\n", "the file holds no rows"),
    "parquet that is csv": ("e.parquet", "user_id,item_id\n1,2\n",
                            "not a Parquet file (it does not start with 'PAR1'; it looks like "
                            "text)"),
    "csv that is parquet": ("e.csv", b"PAR1\x15\x04\x15\x00", "not delimited text: it is a "
                            "Parquet file"),
    "csv that is jsonl": ("e.csv", '{"user_id": 1, "item_id": 2}\n',
                          "not delimited text: line 1 is a JSON object"),
    "jsonl that is csv": ("e.jsonl", "user_id,item_id\n1,2\n", "not JSON lines: line 1 is not "
                          "JSON"),
    "jsonl with a bad line": ("e.jsonl", '{"user_id": 1}\n{"user_id": 2,\n',
                              "not JSON lines: line 2 is not JSON"),
    "jsonl array": ("e.jsonl", "[1, 2]\n", "line 1 is a JSON list, not an object"),
    "wrong type in jsonl": ("e.jsonl", '{"user_id": 1, "item_id": 2, "event_timestamp": 0}\n'
                            '{"user_id": "abc", "item_id": 3, "event_timestamp": 0}\n',
                            "line 2: column 'user_id' has 'abc', expected an integer (1 of 2"),
    "key left out in jsonl": ("e.jsonl", '{"user_id": 1, "item_id": 2, "event_timestamp": 0}\n'
                              '{"user_id": 2, "event_timestamp": 0}\n',
                              "line 2: missing value for 'item_id' (1 of 2 row(s))"),
    "not utf-8": ("e.csv", "user_id,item_id,event_timestamp,title\n1,2,0,caf\xe9\n".encode(
        "latin-1"), "not UTF-8 text (byte 0xe9 at offset"),
    "wrong delimiter": ("e.csv", "user_id;item_id;event_timestamp\n1;2;0\n",
                        "wrong delimiter? the header 'user_id;item_id;event_timestamp' is one "
                        "column; the file seems to be separated by ';', not ','"),
    "unsupported": ("e.xlsx", "a,b\n1,2\n", "unsupported file type '.xlsx'"),
    "short line": ("e.csv", "user_id,item_id,event_timestamp\n1,2,0\n3,4\n",
                   "line 3: missing value for 'event_timestamp' (the line has 2 of 3 fields"),
    "long line": ("e.csv", "user_id,item_id,event_timestamp\n1,2,0,9\n",
                  "line 2: malformed line: 4 fields, expected 3"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_naming_file_column_and_rows(tmp_path: Path, case: str) -> None:
    name, content, expect = BAD[case]
    msg = _error(_write(tmp_path, name, content))
    assert expect in msg, msg


def test_a_missing_mapped_column_names_the_users_name(tmp_path: Path) -> None:
    p = _write(tmp_path, "shop.csv", "client,sku,when\n7,42,0\n")
    msg = _error(p, rename={"customer": schema.USER_ID, "sku": schema.ITEM_ID,
                            "when": schema.EVENT_TIMESTAMP})
    assert "missing column(s) ['customer']" in msg
    bad = _write(tmp_path, "typed.csv", "customer,sku,when\n7,x,0\n")
    msg = _error(bad, rename={"customer": schema.USER_ID, "sku": schema.ITEM_ID,
                              "when": schema.EVENT_TIMESTAMP})
    assert "column 'sku' (mapped to 'item_id') has 'x'" in msg


def test_truncated_parquet_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "e.parquet"
    _frame().to_parquet(p)
    p.write_bytes(p.read_bytes()[:200])
    assert "not a readable Parquet file" in _error(p)
    gone = tmp_path / "gone.csv"
    assert _error(gone) == f"{gone}: file not found"
    with pytest.raises(DataError, match="file not found"):
        read_frame((tmp_path / "gone.jsonl").as_uri())


def test_as_is_reads_change_no_value(tmp_path: Path) -> None:
    p = _write(tmp_path, "x.csv", "a,b,c,d\n1,2.5,x,\n2,3,y,NA\n")
    df = read_frame(p)
    assert str(df["a"].dtype) == "int64" and str(df["b"].dtype) == "float64"
    assert df["c"].tolist() == ["x", "y"]
    assert df["d"].tolist() == [None, "NA"]  # only an empty field is missing
    rows = [json.loads(line) for line in ['{"a": 1, "b": [1, 2]}', '{"a": 2.5}']]
    j = tmp_path / "x.jsonl"
    j.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_frame(j)["a"].tolist() == [1.0, 2.5]
