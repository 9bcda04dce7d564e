"""The one reader of user files: CSV, Parquet or JSON lines, by path or fsspec URL, to a frame."""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator, Mapping
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
from recops.data.contract import Column, Contract, Tally, conform_chunk, infer_text_columns
from recops.errors import DataError

CHUNK_BYTES = 16 << 20  # text is parsed this many bytes at a time, Parquet ~this / 64 rows
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
    """Read ``source`` (a path or fsspec URL) chunk by chunk into one frame.

    The format is the extension's (.csv, .tsv, .parquet, .jsonl) unless ``text`` lays out a
    delimited file. ``rename`` maps the file's column names to canonical ones; ``columns`` is
    the contract: each named column is converted to its type and checked. ``others`` keeps the
    file's other columns (numbers in text become numbers, nothing else changes). Every problem
    is a :class:`DataError`, one line naming the file, the column and how many rows.
    """
    src = _Source.find(source)
    if src.size == 0:
        raise DataError(f"{src.name}: the file is empty (0 bytes)")
    contract = dict(columns or {})
    names_map = dict(rename or {})
    fmt = "delimited" if text is not None else _format(src)
    tally = Tally("row" if fmt == "parquet" else "line")
    with ExitStack() as stack:
        f = src.open(stack)
        meta = None
        if fmt == "parquet":
            pf = _parquet_file(src, f)
            header: list[str] | None = pf.schema_arrow.names
            meta = pf.schema_arrow.metadata
            chunks = _parquet_chunks(src, pf, chunk_bytes)
        elif fmt == "jsonl":
            header, chunks = None, _jsonl_chunks(src, f, chunk_bytes)
        else:
            layout = text or Delimited(sep="\t" if fmt == "tsv" else ",")
            header = _delimited_header(src, f, layout)
            chunks = _delimited_chunks(src, f, layout, header, chunk_bytes, tally)
        if header is not None:
            _check_columns(src, header, contract, names_map)
        seen: dict[str, None] = dict.fromkeys(header or [])
        parts: list[pa.Table] = []
        for table, lines in chunks:
            seen.update(dict.fromkeys(table.column_names))
            table = table.rename_columns([names_map.get(c, c) for c in table.column_names])
            table = conform_chunk(table, contract, lines, tally, names_map,
                                  fill_missing=fmt == "jsonl")
            if not tally.problems:  # once one is found, keep counting but stop collecting
                parts.append(table if others else
                             table.select([c for c in contract if c in table.column_names]))
    if tally.rows == 0 and not empty_ok:
        has = "has a header but" if fmt != "parquet" and header else "holds"
        raise DataError(f"{src.name}: the file {has} no rows")
    if header is None:
        _check_columns(src, list(seen), contract, names_map)
    tally.raise_any(src.name)
    table = _concat(src, parts)
    if fmt in ("delimited", "csv", "tsv"):
        table = infer_text_columns(table, contract)
    if fmt == "parquet" and not contract:  # as stored: pandas' own index and dtypes come back
        table = table.replace_schema_metadata(meta)
    else:
        table = table.drop_columns([c for c in table.column_names
                                    if c.startswith("__index_level_")])
    return table.to_pandas()


def _format(src: _Source) -> str:
    suffix = PurePosixPath(src.path).suffix.lower()
    if suffix not in FORMATS:
        raise DataError(f"{src.name}: unsupported file type '{suffix}'; give a .csv, .tsv, "
                        ".parquet or .jsonl (JSON lines) file")
    return FORMATS[suffix]


def _check_columns(src: _Source, header: list[str], contract: Contract,
                   rename: Mapping[str, str]) -> None:
    mapped = [rename.get(c, c) for c in header]
    dup = sorted({c for c in mapped if mapped.count(c) > 1})
    if dup:
        raise DataError(f"{src.name}: column(s) {dup} appear more than once once renamed "
                        f"(header {header}, mapping {dict(rename)})")
    back = {v: k for k, v in rename.items()}
    missing = [back.get(c, c) for c, spec in contract.items() if spec.required and c not in mapped]
    if missing:
        hint = "" if rename else "; map your own names to these with a column mapping"
        raise DataError(f"{src.name}: missing column(s) {missing}: the file lacks columns the "
                        f"reader needs; it has {header}{hint}")


def _concat(src: _Source, parts: list[pa.Table]) -> pa.Table:
    if not parts:
        return pa.table({})
    try:
        return pa.concat_tables(parts, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"{src.name}: a column holds values of different types in different "
                        f"rows ({exc})") from None


# ----------------------------------------------------------------------------- Parquet

def _parquet_file(src: _Source, f: IO[bytes]) -> pq.ParquetFile:
    magic = f.read(4)
    f.seek(0)
    if magic != b"PAR1":
        raise DataError(f"{src.name}: not a Parquet file (it does not start with 'PAR1'; it "
                        f"looks like {_looks_like(magic)})")
    try:
        return pq.ParquetFile(f)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{src.name}: not a readable Parquet file ({exc}): truncated or "
                        "corrupt?") from None


def _parquet_chunks(src: _Source, pf: pq.ParquetFile, chunk_bytes: int,
                    ) -> Iterator[tuple[pa.Table, np.ndarray]]:
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=max(1, chunk_bytes // 64)):
            yield pa.Table.from_batches([batch]), np.arange(row, row + batch.num_rows) + 1
            row += batch.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{src.name}: not a readable Parquet file ({exc}): truncated or "
                        "corrupt?") from None
    if row == 0:
        yield pf.schema_arrow.empty_table(), np.arange(0)


def _looks_like(head: bytes) -> str:
    if head.startswith(b"PAR1"):
        return "a Parquet file"
    if head.lstrip().startswith(b"{"):
        return "JSON"
    return "binary data" if b"\x00" in head else "text"


# ----------------------------------------------------------------------------- JSON lines

def _jsonl_chunks(src: _Source, f: IO[bytes], chunk_bytes: int,
                  ) -> Iterator[tuple[pa.Table, np.ndarray]]:
    line_no, tail, any_rows = 0, b"", False
    while True:
        block = f.read(chunk_bytes)
        data = tail + block
        cut = (data.rfind(b"\n") + 1) if block else len(data)
        if block and cut == 0:
            tail = data  # a line longer than a chunk: read on
            continue
        records: list[dict[str, Any]] = []
        lines: list[int] = []
        for raw in data[:cut].splitlines():
            line_no += 1
            if raw.strip():
                records.append(_json_object(src, raw, line_no))
                lines.append(line_no)
        tail = data[cut:]
        if records:
            any_rows = True
            yield _records_table(src, records, lines), np.asarray(lines)
        if not block:
            break
    if not any_rows:
        yield pa.table({}), np.arange(0)


def _json_object(src: _Source, raw: bytes, line_no: int) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{src.name}: not JSON lines: line {line_no} is not JSON ({exc}); it "
                        f"looks like {_looks_like(raw[:64])}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{src.name}: not JSON lines: line {line_no} is a JSON "
                        f"{type(obj).__name__}, not an object of columns")
    return obj


def _records_table(src: _Source, records: list[dict[str, Any]], lines: list[int]) -> pa.Table:
    names = list(dict.fromkeys(k for r in records for k in r))
    arrays = []
    for name in names:
        values = [r.get(name) for r in records]
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # Mixed JSON types (1 and "1"): as text, for the contract's conversion to judge.
            arrays.append(pa.array([v if v is None or isinstance(v, str) else json.dumps(v)
                                    for v in values], pa.string()))
    return pa.table(arrays, names=names)


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
                                           block_size=chunk_bytes, use_threads=False,
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
