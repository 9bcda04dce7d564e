"""A PostgreSQL table or query as a source, against the real server (tests/conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import psycopg
import pytest

from recops import schema
from recops.config import load_settings
from recops.core.lake import Lake
from recops.data.files import INTERACTIONS, iter_chunks, read_frame
from recops.data.postgres import redact
from recops.errors import DataError
from tests.conftest import run_cli
from tests.data.conftest import lake_with_items

pytestmark = pytest.mark.integration

MAP = {"customer": "user_id", "sku": "item_id", "kind": "event_type", "ts": "event_timestamp"}
ROWS = [  # customer, sku (text, as a shop keeps it), kind, stars, ts
    (1, "2", "rating", 4.5, "2026-03-01T00:00:00Z"),
    (7, "1", "view", None, "2026-03-01T02:01:00+02:00"),
    (1, "1", "click", None, "2026-03-01T00:02:30Z"),
    (9, "2", "purchase", None, "2026-03-01T00:03:00Z"),
    (7, "2", "rating", 3.0, "2026-03-01T00:04:00Z"),
]
CSV = ("customer,sku,kind,stars,ts\n" + "".join(
    f"{c},{s},{k},{'' if r is None else r},{t}\n" for c, s, k, r, t in ROWS))


@pytest.fixture
def db(fresh_database: str) -> Iterator[str]:
    """A database holding table ``events`` (ROWS, the shop's own names and types)."""
    url = fresh_database.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (customer bigint, sku text, kind text, "
                     "stars numeric(3, 1), ts timestamptz)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO events VALUES (%s, %s, %s, %s, %s)", ROWS)
        conn.execute("CREATE TABLE no_rows (customer bigint, sku text, kind text, ts "
                     "timestamptz)")
    yield url


def _mapped(**extra: str) -> dict[str, str]:
    return {**MAP, "stars": "rating", **extra}


def test_table_reads_as_the_same_frame_as_its_csv(db: str, tmp_path: Path) -> None:
    csv = tmp_path / "events.csv"
    csv.write_text(CSV)
    from_csv = read_frame(csv, INTERACTIONS, rename=_mapped(), others=False)
    from_pg = read_frame(f"{db}?table=events", INTERACTIONS, rename=_mapped(), others=False)
    pd.testing.assert_frame_equal(from_pg, from_csv)
    assert str(from_pg[schema.EVENT_TIMESTAMP].dtype) == "datetime64[us, UTC]"
    assert from_pg[schema.EVENT_TIMESTAMP][1] == pd.Timestamp("2026-03-01T00:01:00Z")
    # A chunk of 2 rows at a time (chunk_bytes // 64) gives the same frame.
    chunked = read_frame(f"{db}?table=public.events", INTERACTIONS, rename=_mapped(),
                         others=False, chunk_bytes=128)
    pd.testing.assert_frame_equal(chunked, from_csv)
    sizes = [t.num_rows for t in iter_chunks(f"{db}?table=events", INTERACTIONS,
                                             rename=_mapped(), chunk_bytes=128)]
    assert sizes == [2, 2, 1]


def test_query_with_canonical_names_and_epoch_seconds(db: str) -> None:
    query = ("SELECT customer AS user_id, sku::bigint AS item_id, "
             "extract(epoch FROM ts)::bigint AS event_timestamp FROM events "
             "WHERE kind <> 'rating' ORDER BY ts")
    df = read_frame(f"{db}?query={quote(query)}", INTERACTIONS, others=False)
    assert df[schema.USER_ID].tolist() == [7, 1, 9]
    assert df[schema.EVENT_TIMESTAMP].tolist() == [
        pd.Timestamp(t) for t in ("2026-03-01T00:01:00Z", "2026-03-01T00:02:30Z",
                                  "2026-03-01T00:03:00Z")]


def _bad_type_query() -> str:
    return quote("SELECT customer, sku || 'x' AS sku, kind, ts FROM events")


@pytest.mark.parametrize("suffix, rename, expect", [
    ("?table=events", {}, "missing column(s) ['user_id', 'item_id', 'event_timestamp']: the "
     "source lacks columns the reader needs; it has ['customer', 'sku', 'kind', 'stars', 'ts']"),
    (f"?query={_bad_type_query()}", MAP,
     "row 1: column 'sku' (mapped to 'item_id') has '2x', expected an integer (5 of 5 row(s))"),
    ("?table=no_rows", MAP, "the table or query returned no rows"),
    ("?query=" + quote("SELECT * FROM events WHERE false"), MAP,
     "the table or query returned no rows"),
    ("?table=evnts", MAP, "no table 'evnts' in this database: relation \"evnts\" does not exist"),
    ("?query=" + quote("DELETE FROM events RETURNING *"), MAP,
     "the query failed (it must be one SELECT or VALUES statement): syntax error"),
    ("?query=" + quote("SELECT nope FROM events"), MAP, 'column "nope" does not exist'),
    ("", MAP, "say what to read with exactly one of ?table=NAME or ?query=SELECT..."),
    ("?table=events&query=x", MAP, "exactly one of ?table=NAME or ?query="),
    ("?table=a.b.c", MAP, "?table='a.b.c' is not a table name"),
    ("?table=events&bogus=1", MAP, 'invalid URI query parameter: "bogus"'),
])
def test_bad_sources_are_one_line_naming_the_source(db: str, suffix: str,
                                                    rename: dict[str, str], expect: str) -> None:
    with pytest.raises(DataError) as err:
        read_frame(db + suffix, INTERACTIONS, rename=rename, others=False)
    msg = str(err.value)
    assert msg.startswith(db + suffix.split("&bogus")[0].split("?query")[0])
    assert expect in msg and "\n" not in msg and "LINE 1" not in msg


def test_a_query_cannot_change_the_data(db: str) -> None:
    # A SELECT can still write through a function: the read-only session refuses it.
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION wipe() RETURNS bigint LANGUAGE sql AS "
                     "'DELETE FROM events; SELECT 0::bigint'")
    query = quote("SELECT *, wipe() AS w FROM events")
    with pytest.raises(DataError, match="read-only transaction"):
        read_frame(f"{db}?query={query}", INTERACTIONS, rename=MAP)
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (len(ROWS),)


@pytest.mark.parametrize("url, expect", [
    ("postgresql://postgres:hunter2@127.0.0.1:1/db?table=events", "cannot connect to PostgreSQL:"
     " connection to server at \"127.0.0.1\", port 1 failed: Connection refused"),
    ("postgresql://nobody:hunter2@127.0.0.1:5432/postgres?table=events",
     'role "nobody" does not exist'),
    ("postgres://postgres:hunter2@127.0.0.1:5432/no_such_db?table=events",
     'database "no_such_db" does not exist'),
])
def test_bad_server_user_or_database_never_shows_the_password(db: str, url: str,
                                                             expect: str) -> None:
    with pytest.raises(DataError) as err:
        read_frame(url, INTERACTIONS, rename=MAP)
    msg = str(err.value)
    assert expect in msg and "hunter2" not in msg and "\n" not in msg
    assert msg.startswith(url.replace(":hunter2@", ":***@"))


def test_redact_masks_only_the_password() -> None:
    assert redact("postgresql://u:p%40ss@h:5432/d?table=t") == "postgresql://u:***@h:5432/d?table=t"
    assert redact("postgresql://u@h/d?query=a:b@c") == "postgresql://u@h/d?query=a:b@c"
    assert redact("postgresql://h/d?table=t") == "postgresql://h/d?table=t"


# ----------------------------------------------------------------------------- the CLI flow

def _home_with_items(monkeypatch: pytest.MonkeyPatch, home: Path) -> Lake:
    monkeypatch.setenv("RECOPS_HOME", str(home))
    return lake_with_items(load_settings().paths.lake)


def _ingest_and_land(monkeypatch, capsys, source: str) -> tuple[str, str]:
    maps = [a for k, v in _mapped().items() for a in ("--map", f"{k}={v}")]
    code, out, err = run_cli(monkeypatch, capsys, "ingest", "--file", source, *maps)
    assert code == 0, err
    staged = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                  if line.startswith("staged id:"))
    code, out2, err2 = run_cli(monkeypatch, capsys, "validate", staged)
    assert code == 0, out2 + err2
    return out + err + out2 + err2, staged


def test_ingest_from_a_table_lands_the_same_batch_as_from_its_csv(
        db: str, tmp_path: Path, monkeypatch, capsys) -> None:
    csv = tmp_path / "events.csv"
    csv.write_text(CSV)
    lake_csv = _home_with_items(monkeypatch, tmp_path / "home_csv")
    _, staged_csv = _ingest_and_land(monkeypatch, capsys, str(csv))

    # trust auth ignores the password: it is there to show that it is never written anywhere
    url = db.replace("postgresql://postgres@", "postgresql://postgres:hunter2@") + "?table=events"
    lake_pg = _home_with_items(monkeypatch, tmp_path / "home_pg")
    printed, staged_pg = _ingest_and_land(monkeypatch, capsys, url)

    assert staged_pg == staged_csv  # the staged batch is content-addressed: same content
    for table in schema.TABLES:
        (b_csv,), (b_pg,) = lake_csv.batches(table)[-1:], lake_pg.batches(table)[-1:]
        assert b_pg.content_hash == b_csv.content_hash, table
        pd.testing.assert_frame_equal(pd.read_parquet(b_pg.path), pd.read_parquet(b_csv.path))
    landed = lake_pg.read(schema.INTERACTIONS)
    assert len(landed) == len(ROWS) and sorted(landed[schema.USER_ID].unique()) == [1, 7, 9]
    assert lake_pg.batches(schema.INTERACTIONS)[0].source == redact(url)
    assert "hunter2" not in printed
    for f in (tmp_path / "home_pg").rglob("*"):
        if f.is_file() and f.suffix in (".json", ".jsonl", ".txt", ".log"):
            assert "hunter2" not in f.read_text(errors="replace"), f
    audit = (tmp_path / "home_pg").rglob("audit*")
    assert any(json.dumps(redact(url))[1:-1] in p.read_text() for p in audit if p.is_file())


def test_ingest_from_an_unreachable_server_is_one_line(tmp_path: Path, monkeypatch,
                                                       capsys) -> None:
    _home_with_items(monkeypatch, tmp_path / "home")
    url = "postgresql://postgres:hunter2@127.0.0.1:1/shop?table=events"
    code, out, err = run_cli(monkeypatch, capsys, "ingest", "--file", url)
    assert code == 2 and "Traceback" not in err and "hunter2" not in out + err
    assert err.strip().startswith("error: postgresql://postgres:***@127.0.0.1:1/shop")
    assert "cannot connect to PostgreSQL" in err


def test_team_events_from_a_table_stage_as_from_their_csv(db: str, tmp_path: Path,
                                                         monkeypatch, capsys) -> None:
    """`recops ingest --events postgresql://...` (a team's events, string ids) = the CSV's."""
    retail = Path(__file__).resolve().parents[2] / "examples" / "retail"
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CREATE TABLE shop_events (user_id text, item_id text, event_type text, "
                     "timestamp timestamptz)")
        with conn.cursor() as cur, cur.copy("COPY shop_events FROM STDIN (FORMAT csv, HEADER)") \
                as copy:
            copy.write((retail / "events.csv").read_bytes())
    url = db.replace("postgresql://postgres@", "postgresql://postgres:hunter2@") + \
        "?table=shop_events"
    staged = {}
    for name, events in (("csv", str(retail / "events.csv")), ("pg", url)):
        monkeypatch.setenv("RECOPS_HOME", str(tmp_path / name))
        code, out, err = run_cli(monkeypatch, capsys, "ingest", "--events", events, "--items",
                                 str(retail / "items.csv"))
        assert code == 0, err
        assert "hunter2" not in out + err
        staged[name] = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                            if line.startswith("staged id:"))
    assert staged["pg"] == staged["csv"]
    for f in (tmp_path / "pg").rglob("*"):
        if f.is_file() and f.suffix in (".json", ".jsonl", ".yaml", ".txt"):
            assert "hunter2" not in f.read_text(errors="replace"), f
