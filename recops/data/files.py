"""The one reader of user data: CSV, Parquet, JSON lines (path or fsspec URL) or PostgreSQL."""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Generator, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import IO, Any

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recops import schema
from recops.data import postgres
from recops.data.contract import Column, Contract, Tally, conform_chunk, infer_text_columns
from recops.data.jsonl import jsonl_chunks, looks_like
from recops.errors import DataError

CHUNK_BYTES = 16 << 20  # JSON lines are parsed this many bytes at a time, Parquet ~this / 64 rows
# pyarrow's streaming CSV reader reads ~16 blocks ahead of the one parsed, whatever use_threads
# says (measured: 16 MiB blocks, 500+ MB resident on a 400 MB file; 4 MiB, 270 MB; 1 MiB, 140 MB).
TEXT_BLOCK = 4 << 20
FORMATS = {".csv": "csv", ".txt": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet",
           ".jsonl": "jsonl", ".ndjson": "jsonl"}
_DELIMITERS = ("::", "\t", "|", ",", ";")
_UNIT_SEP = b"\x1f"  # stands in for a multi-byte separator: pyarrow parses one-byte ones

# What a file of interaction events must hold (``rating`` and ``event_type`` may be absent).
INTERACTIONS: Contract = {
    schema.USER_ID: Column("int64"),
    schema.ITEM_ID: Column("int64"),
    schema.RATING: Column("float32", required=False, nullable=True),
    schema.EVENT_TYPE: Column("string", required=False),
    schema.EVENT_TIMESTAMP: Column("timestamp"),
}


@dataclass(frozen=True)
class Delimited:
    """How a delimited text file is laid out; CSV is ``Delimited()``, TSV ``Delimited("\\t")``."""

    sep: str = ","
    header: bool = True
    names: tuple[str, ...] = ()  # without a header: every field's name, in order
    encoding: str = "utf-8"
    quoted: bool = True  # '"' quotes fields (off for files whose titles hold bare quotes)
    final_newline: bool = False  # a last line without one was cut off (a truncated copy)


@dataclass
class _Source:
    """A file named by a local path or an fsspec URL, opened for binary reads."""

    name: str
    fs: Any
    path: str
    size: int = field(default=0)

    @classmethod
    def find(cls, source: object) -> _Source:
        name = str(source)
        fs, path = fsspec.core.url_to_fs(name)
        if not fs.isfile(path):
            raise DataError(f"{name}: file not found")
        return cls(name, fs, path, int(fs.size(path)))

    def open(self, stack: ExitStack) -> IO[bytes]:
        return stack.enter_context(self.fs.open(self.path, "rb"))


def read_frame(source: object, columns: Contract | None = None, *,
               rename: Mapping[str, str] | None = None, text: Delimited | None = None,
               others: bool = True, empty_ok: bool = False,
               chunk_bytes: int = CHUNK_BYTES) -> pd.DataFrame:
    """Read ``source`` (a path, an fsspec URL or a PostgreSQL URL) chunk by chunk into one frame.

    The format is the extension's (.csv, .tsv, .parquet, .jsonl) unless ``text`` lays out a
    delimited file; a ``postgresql://`` URL reads a table or query (:mod:`recops.data.postgres`).
    ``rename`` maps the source's column names to canonical ones; ``columns`` is the contract:
    each named column is converted to its type and checked. ``others`` keeps the source's
    other columns (numbers in text become numbers, nothing else changes). Every problem is a
    :class:`DataError`, one line naming the source, the column and how many rows.
    """
    with ExitStack() as stack:
        r = _open(source, text, chunk_bytes, stack)
        parts = list(r.conformed(columns or {}, rename or {}, others, empty_ok))
    table = _concat(r.name, parts)
    if r.fmt in ("delimited", "csv", "tsv"):
        table = infer_text_columns(table, columns or {})
    if r.fmt == "parquet" and not columns:  # as stored: pandas' own index and dtypes come back
        table = table.replace_schema_metadata(r.meta)
    else:
        table = table.drop_columns([c for c in table.column_names
                                    if c.startswith("__index_level_")])
    return table.to_pandas()


def iter_chunks(source: object, columns: Contract, *, rename: Mapping[str, str] | None = None,
                empty_ok: bool = False, chunk_bytes: int = CHUNK_BYTES,
                ) -> Generator[pa.Table, None, None]:
    """The contract's columns of ``source``, typed, one Arrow table of a chunk at a time.

    Memory stays bounded by the chunk, whatever the source's size. The same checks as
    :func:`read_frame`; the whole source is read before its problems are raised, so a consumer
    must treat what it has received as provisional until the iterator ends without an error.
    """
    with ExitStack() as stack:
        r = _open(source, None, chunk_bytes, stack)
        yield from r.conformed(columns, rename or {}, False, empty_ok)


@dataclass
class _Reading:
    """A source opened for a chunked read: its chunks, and what is known before reading them."""

    name: str
    fmt: str
    header: list[str] | None
    chunks: Iterator[tuple[pa.Table, np.ndarray]]
    tally: Tally
    meta: Any = None

    def conformed(self, contract: Contract, names_map: Mapping[str, str], others: bool,
                  empty_ok: bool) -> Iterator[pa.Table]:
        tally = self.tally
        if self.header is not None:
            _check_columns(self.name, self.header, contract, names_map)
        seen: dict[str, None] = dict.fromkeys(self.header or [])
        for table, lines in self.chunks:
            seen.update(dict.fromkeys(table.column_names))
            table = table.rename_columns([names_map.get(c, c) for c in table.column_names])
            table = conform_chunk(table, contract, lines, tally, names_map,
                                  fill_missing=self.fmt == "jsonl")
            if not tally.problems:  # once one is found, keep counting but stop collecting
                yield (table if others else
                       table.select([c for c in contract if c in table.column_names]))
        if tally.rows == 0 and not empty_ok:
            if self.fmt == "postgresql":
                raise DataError(f"{self.name}: the table or query returned no rows")
            has = "has a header but" if self.fmt != "parquet" and self.header else "holds"
            raise DataError(f"{self.name}: the file {has} no rows")
        if self.header is None:
            _check_columns(self.name, list(seen), contract, names_map)
        tally.raise_any(self.name)


def _open(source: object, text: Delimited | None, chunk_bytes: int,
          stack: ExitStack) -> _Reading:
    if postgres.is_postgres(source):
        name, header, rows = postgres.open_rows(str(source), stack, max(1, chunk_bytes // 64))
        return _Reading(name, "postgresql", header, rows, Tally("row"))
    src = _Source.find(source)
    if src.size == 0:
        raise DataError(f"{src.name}: the file is empty (0 bytes)")
    fmt = "delimited" if text is not None else _format(src)
    f = src.open(stack)
    if fmt == "parquet":
        pf = _parquet_file(src, f)
        return _Reading(src.name, fmt, pf.schema_arrow.names,
                        _parquet_chunks(src, pf, chunk_bytes), Tally("row"),
                        pf.schema_arrow.metadata)
    if fmt == "jsonl":
        return _Reading(src.name, fmt, None, jsonl_chunks(src.name, f, chunk_bytes),
                        Tally("line"))
    layout = text or Delimited(sep="\t" if fmt == "tsv" else ",")
    header, tally = _delimited_header(src, f, layout), Tally("line")
    chunks = _delimited_chunks(src, f, layout, header, chunk_bytes, tally)
    return _Reading(src.name, fmt, header, chunks, tally)


def _format(src: _Source) -> str:
    suffix = PurePosixPath(src.path).suffix.lower()
    if suffix not in FORMATS:
        raise DataError(f"{src.name}: unsupported file type '{suffix}'; give a .csv, .tsv, "
                        ".parquet or .jsonl (JSON lines) file")
    return FORMATS[suffix]


def _check_columns(name: str, header: list[str], contract: Contract,
                   rename: Mapping[str, str]) -> None:
    mapped = [rename.get(c, c) for c in header]
    dup = sorted({c for c in mapped if mapped.count(c) > 1})
    if dup:
        raise DataError(f"{name}: column(s) {dup} appear more than once once renamed "
                        f"(header {header}, mapping {dict(rename)})")
    back = {v: k for k, v in rename.items()}
    missing = [back.get(c, c) for c, spec in contract.items() if spec.required and c not in mapped]
    if missing:
        hint = "" if rename else "; map your own names to these with a column mapping"
        raise DataError(f"{name}: missing column(s) {missing}: the source lacks columns the "
                        f"reader needs; it has {header}{hint}")


def _concat(name: str, parts: list[pa.Table]) -> pa.Table:
    if not parts:
        return pa.table({})
    try:
        return pa.concat_tables(parts, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"{name}: a column holds values of different types in different "
                        f"rows ({exc})") from None


# ----------------------------------------------------------------------------- Parquet

def _parquet_file(src: _Source, f: IO[bytes]) -> pq.ParquetFile:
    magic = f.read(4)
    f.seek(0)
    if magic != b"PAR1":
        raise DataError(f"{src.name}: not a Parquet file (it does not start with 'PAR1'; it "
                        f"looks like {looks_like(magic)})")
    try:
        return pq.ParquetFile(f)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{src.name}: not a readable Parquet file ({exc}): truncated or "
                        "corrupt?") from None


def _parquet_chunks(src: _Source, pf: pq.ParquetFile, chunk_bytes: int,
                    ) -> Iterator[tuple[pa.Table, np.ndarray]]:
    row = 0
    try:
        # One reader per row group: a single iter_batches over a whole file holds on to memory
        # growing with the rows read (measured: +100 MB over 10M rows, freed only at its end).
        for group in range(pf.num_row_groups):
            for batch in pf.iter_batches(batch_size=max(1, chunk_bytes // 64),
                                         row_groups=[group]):
                yield pa.Table.from_batches([batch]), np.arange(row, row + batch.num_rows) + 1
                row += batch.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{src.name}: not a readable Parquet file ({exc}): truncated or "
                        "corrupt?") from None
    if row == 0:
        yield pf.schema_arrow.empty_table(), np.arange(0)


# ----------------------------------------------------------------------------- delimited text

def _delimited_header(src: _Source, f: IO[bytes], layout: Delimited) -> list[str]:
    """The column names, once line 1 shows the file is text laid out as ``layout`` says."""
    raw = f.readline(1 << 16)
    if raw.startswith(b"PAR1"):
        raise DataError(f"{src.name}: not delimited text: it is a Parquet file")
    enc = "utf-8-sig" if codecs.lookup(layout.encoding).name == "utf-8" else layout.encoding
    try:
        line = raw.decode(enc).rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise _encoding_error(src, layout.encoding, exc.start, raw[exc.start]) from None
    if "\x00" in line:
        raise DataError(f"{src.name}: not delimited text: line 1 holds binary data (NUL bytes)")
    if line.lstrip().startswith("{") and _is_json(line):
        raise DataError(f"{src.name}: not delimited text: line 1 is a JSON object (a JSON "
                        "lines file? name it .jsonl)")
    if layout.final_newline:
        f.seek(src.size - 1)
        if f.read(1) != b"\n":
            raise DataError(f"{src.name}: the last line is incomplete (no final newline): "
                            "truncated download or copy? Fetch the file again")
    f.seek(0)
    if not layout.header:
        got = len(line.split(layout.sep))
        if got != len(layout.names):
            raise DataError(f"{src.name}: line 1 has {got} field(s), expected "
                            f"{len(layout.names)} separated by {layout.sep!r}"
                            f"{_delimiter_hint(line, layout.sep)}")
        return list(layout.names)
    if len(layout.sep) == 1:
        names = [n.strip() for n in next(csv.reader([line], delimiter=layout.sep,
                                                    quoting=csv.QUOTE_MINIMAL if layout.quoted
                                                    else csv.QUOTE_NONE))]
    else:
        names = [n.strip() for n in line.split(layout.sep)]
    if len(names) == 1 and _delimiter_hint(line, layout.sep):
        raise DataError(f"{src.name}: wrong delimiter? the header {line[:80]!r} is one column"
                        f"{_delimiter_hint(line, layout.sep)}")
    return names


def _delimiter_hint(line: str, sep: str) -> str:
    for cand in _DELIMITERS:
        if cand != sep and cand not in sep and cand in line:
            return f"; the file seems to be separated by {cand!r}, not {sep!r}"
    return ""


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


def _encoding_error(src: _Source, encoding: str, offset: int, byte: int) -> DataError:
    return DataError(f"{src.name}: not {encoding.upper()} text (byte 0x{byte:02x} at offset "
                     f"{offset} is not valid {encoding.upper()}): bad encoding? re-save the "
                     f"file as {encoding.upper()}")


def _locate_bad_text(src: _Source, encoding: str) -> DataError:
    """The first byte that does not decode, found by streaming the file once more."""
    decoder = codecs.getincrementaldecoder(encoding)()
    with src.fs.open(src.path, "rb") as f:
        pos = 0
        for block in iter(lambda: f.read(1 << 20), b""):
            pending = decoder.getstate()[0]
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                data = pending + block
                return _encoding_error(src, encoding, pos - len(pending) + exc.start,
                                       data[exc.start])
            pos += len(block)
    return DataError(f"{src.name}: not valid {encoding} text")


def _delimited_chunks(src: _Source, f: IO[bytes], layout: Delimited, names: list[str],
                      chunk_bytes: int, tally: Tally) -> Iterator[tuple[pa.Table, np.ndarray]]:
    one_byte = len(layout.sep.encode()) == 1
    stream: Any = f if one_byte else io.BufferedReader(_Resep(f, layout.sep.encode()))
    first_line = 2 if layout.header else 1
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=int(layout.header),
                                           block_size=min(chunk_bytes, TEXT_BLOCK),
                                           use_threads=False,
                                           encoding=layout.encoding),
            parse_options=pacsv.ParseOptions(
                delimiter=layout.sep if one_byte else _UNIT_SEP.decode(),
                quote_char='"' if layout.quoted else False,
                invalid_row_handler=lambda row: tally.bad_line(row, names, layout.sep)),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()),
                                                 null_values=[""], strings_can_be_null=True))
        row = 0
        for batch in reader:
            yield pa.Table.from_batches([batch]), np.arange(row, row + batch.num_rows) + first_line
            row += batch.num_rows
        if row == 0:
            yield reader.schema.empty_table(), np.arange(0)
    except pa.ArrowInvalid as exc:
        if "UTF8" in str(exc):
            raise _locate_bad_text(src, layout.encoding) from None
        raise DataError(f"{src.name}: not readable as {layout.sep!r}-separated text "
                        f"({str(exc).strip()})") from None


class _Resep(io.RawIOBase):
    """A byte stream with a multi-byte separator turned into one byte, whole lines at a time."""

    def __init__(self, raw: IO[bytes], sep: bytes) -> None:
        self._raw, self._sep = raw, sep
        self._out, self._pos, self._tail, self._eof = b"", 0, b"", False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while self._pos >= len(self._out) and not self._eof:
            block = self._raw.read(1 << 20)
            data = self._tail + block
            # Cut after the last newline: a separator never spans lines, so each piece is
            # replaced exactly as the whole file would be.
            cut = (data.rfind(b"\n") + 1) if block else len(data)
            self._out, self._pos, self._tail = data[:cut].replace(self._sep, _UNIT_SEP), 0, \
                data[cut:]
            self._eof = not block
        n = min(len(b), len(self._out) - self._pos)
        b[:n] = self._out[self._pos:self._pos + n]
        self._pos += n
        return n
