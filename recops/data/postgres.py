"""A PostgreSQL table or query as a source of rows, read in chunks through a server-side cursor.

A source is a URL: ``postgresql://[user[:password]@]host[:port]/db?table=[schema.]name`` or
``...?query=SELECT ...`` (URL-encoded); libpq's own parameters (``sslmode``,
``connect_timeout``, ...) pass through. A password is better left to libpq's ``PGPASSWORD``
or ``~/.pgpass``; one written in the URL is masked (``***``) wherever the URL is shown.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import numpy as np
import pyarrow as pa

from recops.config_base import redact_url
from recops.errors import DataError

if TYPE_CHECKING:
    import psycopg

SCHEMES = ("postgresql", "postgres")
CONNECT_TIMEOUT_S = 10
_SOURCE_KEYS = ("table", "query")


def is_postgres(source: object) -> bool:
    """Whether ``source`` names a PostgreSQL table or query (by its URL scheme)."""
    return isinstance(source, str) and source.split("://", 1)[0].lower() in SCHEMES \
        and "://" in source


def redact(url: str) -> str:
    """``url`` with the password of its user part (``user:secret@``) replaced by ``***``."""
    return redact_url(url)


def _secret(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def split_url(url: str) -> tuple[str, str, str]:
    """(libpq connection URI, "table" or "query", the table name or query text)."""
    name = redact(url)
    try:
        parts = urlsplit(url)
        params = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise DataError(f"{name}: not a valid PostgreSQL URL ({exc})") from None
    given = [(k, v) for k, v in params if k in _SOURCE_KEYS]
    if len(given) != 1 or not given[0][1].strip():
        raise DataError(f"{name}: say what to read with exactly one of ?table=NAME or "
                        "?query=SELECT... (URL-encoded), e.g. "
                        "postgresql://user@host:5432/db?table=events")
    if not parts.path.strip("/"):
        raise DataError(f"{name}: no database named: postgresql://user@host:5432/DB?table=...")
    rest = urlencode([(k, v) for k, v in params if k not in _SOURCE_KEYS], quote_via=quote)
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, rest, ""))
    return conninfo, given[0][0], given[0][1].strip()


def _statement(kind: str, what: str, name: str) -> Any:
    from psycopg import sql

    if kind == "query":
        return sql.SQL(what)  # the user's own query: the connection is read-only
    parts = what.split(".")
    if len(parts) > 2 or not all(p.strip() for p in parts):
        raise DataError(f"{name}: ?table={what!r} is not a table name (NAME or SCHEMA.NAME)")
    return sql.SQL("SELECT * FROM {}").format(sql.Identifier(*[p.strip() for p in parts]))


def _fail(name: str, secret: str | None, exc: Exception, doing: str) -> DataError:
    diag = getattr(exc, "diag", None)
    primary = diag.message_primary if diag is not None else None
    lines = str(exc).strip().splitlines()
    # The server's own words, without the statement it echoes (LINE 1: DECLARE ...).
    text = (primary or (lines[0] if lines else "") or type(exc).__name__).strip()
    text = text.removeprefix("connection failed: ")
    if secret:
        text = text.replace(secret, "***")
    return DataError(f"{name}: {doing}: {text}")


def _connect(conninfo: str, name: str, secret: str | None) -> psycopg.Connection[Any]:
    import psycopg

    try:
        conn = psycopg.connect(conninfo, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as exc:
        raise _fail(name, secret, exc, "cannot connect to PostgreSQL") from None
    conn.read_only = True  # a query source reads: it can never change the team's data
    conn.execute("SET TIME ZONE 'UTC'")  # timestamptz values come back in UTC
    return conn


def open_rows(url: str, stack: ExitStack, chunk_rows: int,
              ) -> tuple[str, list[str], Iterator[tuple[pa.Table, np.ndarray]]]:
    """Open ``url``'s table or query: (its masked name, its column names, its chunks).

    Each chunk is an Arrow table of at most ``chunk_rows`` rows (the database's types: integers,
    numerics, text, timestamps) with each row's 1-based number in the result. Connection,
    statement and cursor are closed when ``stack`` closes.
    """
    import psycopg
    from psycopg import errors as pgerr

    name, secret = redact(url), _secret(url)
    conninfo, kind, what = split_url(url)
    statement = _statement(kind, what, name)
    conn = stack.enter_context(_connect(conninfo, name, secret))
    cur = stack.enter_context(conn.cursor(name="recops_read"))  # server-side: rows stay there
    try:
        cur.execute(statement)
    except pgerr.UndefinedTable as exc:
        raise _fail(name, secret, exc, f"no table {what!r} in this database") from None
    except psycopg.Error as exc:
        doing = ("the query failed (it must be one SELECT or VALUES statement)"
                 if kind == "query" else f"cannot read table {what!r}")
        raise _fail(name, secret, exc, doing) from None
    header = [d.name for d in cur.description or []]
    return name, header, _chunks(cur, header, chunk_rows, name, secret)


def _chunks(cur: psycopg.ServerCursor[Any], header: list[str], chunk_rows: int, name: str,
            secret: str | None) -> Iterator[tuple[pa.Table, np.ndarray]]:
    import psycopg

    row = 0
    while True:
        try:
            rows = cur.fetchmany(chunk_rows)
        except psycopg.Error as exc:
            raise _fail(name, secret, exc, f"reading failed at row {row + 1}") from None
        if not rows:
            break
        columns = list(zip(*rows, strict=True))
        yield (pa.table([_array(c) for c in columns], names=header),
               np.arange(row, row + len(rows)) + 1)
        row += len(rows)
    if row == 0:
        yield pa.table({h: pa.array([], pa.string()) for h in header}), np.arange(0)


def _array(values: tuple[Any, ...]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Values of several Python types in one column (a json column, say): as text, for
        # the contract's conversion to judge.
        return pa.array([v if v is None else str(v) for v in values], pa.string())
