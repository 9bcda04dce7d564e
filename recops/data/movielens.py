"""MovieLens loaders (ml-latest-small, ml-100k, ml-1m, ml-25m): local copy or verified download."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recops import schema
from recops.data.tables import Tables
from recops.errors import DataError, DownloadError

BASE_URL = "https://files.grouplens.org/datasets/movielens"


@dataclass(frozen=True)
class MovieLensFormat:
    """What one MovieLens release looks like on disk and where it comes from."""

    name: str
    marker: str  # the file whose presence says "this folder is the dataset"
    files: tuple[str, ...]  # files the loader reads (tags.csv is optional)
    # Published MD5 of <name>.zip (GroupLens' <name>.zip.md5). None: the release changes over
    # time ("latest"), so it is checked against the .md5 file fetched next to the zip.
    md5: str | None
    approx_mb: float


# MD5 values: GroupLens' published ml-100k.zip.md5 / ml-1m.zip.md5 / ml-25m.zip.md5, the same
# values the widely used loaders (TFDS, RecBole, torchrec) pin for these frozen releases.
FORMATS: dict[str, MovieLensFormat] = {
    "ml-latest-small": MovieLensFormat("ml-latest-small", "ratings.csv",
                                       ("ratings.csv", "movies.csv"), None, 1.0),
    "ml-100k": MovieLensFormat("ml-100k", "u.data", ("u.data", "u.item", "u.user"),
                               "0e33842e24a9c977be4e0107933c0723", 4.9),
    "ml-1m": MovieLensFormat("ml-1m", "ratings.dat", ("ratings.dat", "movies.dat", "users.dat"),
                             "c4d9eecfca2ab87c1945afe126590906", 5.9),
    "ml-25m": MovieLensFormat("ml-25m", "ratings.csv", ("ratings.csv", "movies.csv"),
                              "6b51fb2759a8657d3bfcbfc42b592ada", 262.0),
}

# ml-100k's u.genre, in flag order (used when u.genre is absent).
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western")
# ml-1m README: occupation codes.
ML1M_OCCUPATIONS = ("other", "academic/educator", "artist", "clerical/admin",
                    "college/grad student", "customer service", "doctor/health care",
                    "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
                    "programmer", "retired", "sales/marketing", "scientist", "self-employed",
                    "technician/engineer", "tradesman/craftsman", "unemployed", "writer")
NO_GENRES = "(no genres listed)"
MAX_TAGS_PER_ITEM = 20  # the text encoder truncates long inputs anyway; keep the most used tags

ProgressFn = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)

_POINT_AT_LOCAL = ("point recops at a local copy with --data-root PATH or RECOPS_DATA__ROOT=PATH "
                   "(the folder holding '{name}/' or the '{name}' folder itself)")


# ----------------------------------------------------------------------------- locating

def fmt(name: str) -> MovieLensFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise DataError(f"unknown MovieLens dataset '{name}'; supported: "
                        f"{', '.join(FORMATS)}") from None


def candidate_dirs(name: str, root: Path | None, datasets_dir: Path) -> list[Path]:
    """Where a dataset may live, in the order they are tried."""
    out: list[Path] = []
    if root is not None:
        root = Path(root).expanduser()
        out += [root / name, root]
    out.append(Path(datasets_dir) / name)
    return out


def find_local(name: str, root: Path | None, datasets_dir: Path) -> Path | None:
    """The first candidate folder holding the dataset's marker file, or None."""
    spec = fmt(name)
    for d in candidate_dirs(name, root, datasets_dir):
        if (d / spec.marker).is_file():
            # ml-latest-small and ml-25m share a layout: refuse a folder named for the other one.
            other = d.name in FORMATS and d.name != name
            if other and FORMATS[d.name].marker == spec.marker:
                if d == (Path(root).expanduser() if root else None):
                    raise DataError(f"--data-root {d} holds '{d.name}', but the dataset asked for "
                                    f"is '{name}': point at the folder that holds '{name}/'")
                continue
            return d
    return None


def resolve(name: str, root: Path | None, datasets_dir: Path, *, download: bool,
            base_url: str = BASE_URL, progress: ProgressFn | None = None) -> Path:
    """The dataset folder: found locally, else downloaded into ``datasets_dir`` when allowed."""
    found = find_local(name, root, datasets_dir)
    if found is not None:
        return found
    looked = ", ".join(str(d) for d in candidate_dirs(name, root, datasets_dir))
    if not download:
        raise DataError(f"{name} not found (looked in {looked}) and download is off "
                        f"(--no-download / data.download=false); "
                        + _POINT_AT_LOCAL.format(name=name))
    return download_dataset(name, datasets_dir, base_url=base_url, progress=progress)


# ----------------------------------------------------------------------------- download

def _fetch(resp: Any, dest: Path, *, url: str, progress: ProgressFn | None) -> str:
    """Stream an open response to ``dest``; returns the MD5 of what was written."""
    md5 = hashlib.md5(usedforsecurity=False)
    total = resp.headers.get("Content-Length")
    total_n = int(total) if total and total.isdigit() else None
    done = 0
    with open(dest, "wb") as out:
        while block := resp.read(1 << 20):
            out.write(block)
            md5.update(block)
            done += len(block)
            if progress:
                progress(done, total_n)
    if total_n is not None and done != total_n:
        raise DownloadError(f"download of {url} stopped at {done} of {total_n} bytes")
    return md5.hexdigest()


def _get(url: str, name: str, timeout: float, hint: str, body: Callable[[Any], Any]) -> Any:
    """Open ``url`` and hand the response to ``body``; network failures become DownloadError."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return body(resp)
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        reason = str(exc.reason)
    except (TimeoutError, ConnectionError) as exc:
        reason = str(exc) or type(exc).__name__
    raise DownloadError(f"could not download {name} from {url} ({reason}); offline? {hint}")


def parse_md5_file(text: str, filename: str) -> str:
    """The digest from a ``.md5`` file: BSD style ``MD5 (f) = d`` or GNU style ``d  f``."""
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.upper().startswith("MD5 (") and "=" in line:
            digest = line.rsplit("=", 1)[1].strip().lower()
        else:
            digest = line.split()[0].lower()
        if len(digest) == 32 and all(c in "0123456789abcdef" for c in digest):
            return digest
    raise DownloadError(f"the checksum file for {filename} holds no MD5 digest: {text[:80]!r}")


MAX_UNPACKED_BYTES = 4 << 30  # ml-25m unpacks to ~1.1 GB; more than this is not MovieLens


def _safe_extract(zf: zipfile.ZipFile, dest: Path) -> None:
    """Extract refusing absolute paths, '..' escapes, symlinks (zip-slip) and zip bombs."""
    dest = dest.resolve()
    total = sum(info.file_size for info in zf.infolist())
    if total > MAX_UNPACKED_BYTES:
        raise DownloadError(f"archive would unpack to {total / 1e9:.1f} GB, more than the "
                            f"{MAX_UNPACKED_BYTES / 1e9:.1f} GB any MovieLens release needs")
    for info in zf.infolist():
        target = (dest / info.filename).resolve()
        if not target.is_relative_to(dest) or Path(info.filename).is_absolute():
            raise DownloadError(f"archive member '{info.filename}' would land outside {dest}")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DownloadError(f"archive member '{info.filename}' is a symbolic link")
    zf.extractall(dest)


def download_dataset(name: str, datasets_dir: Path, *, base_url: str = BASE_URL,
                     timeout: float = 60.0, progress: ProgressFn | None = None) -> Path:
    """Fetch ``<base_url>/<name>.zip``, verify its MD5, unzip to ``datasets_dir/<name>``."""
    spec = fmt(name)
    url = f"{base_url.rstrip('/')}/{name}.zip"
    datasets_dir = Path(datasets_dir)
    datasets_dir.mkdir(parents=True, exist_ok=True)
    hint = _POINT_AT_LOCAL.format(name=name)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=datasets_dir) as tmp:
        zpath = Path(tmp) / f"{name}.zip"
        expected = spec.md5
        if expected is None:
            text = _get(url + ".md5", name, timeout, hint, lambda r: r.read(4096))
            expected = parse_md5_file(text.decode("ascii", "replace"), f"{name}.zip")
        got = _get(url, name, timeout, hint,
                   lambda r: _fetch(r, zpath, url=url, progress=progress))
        if got != expected:
            raise DownloadError(f"checksum mismatch for {url}: MD5 {got}, expected {expected}; "
                                f"the file was discarded. Retry, or {hint}")
        unpacked = Path(tmp) / "unpacked"
        try:
            with zipfile.ZipFile(zpath) as zf:
                _safe_extract(zf, unpacked)
        except zipfile.BadZipFile as exc:
            raise DownloadError(f"{url} is not a valid zip ({exc}); {hint}") from None
        # GroupLens zips hold one top folder named after the dataset.
        src = unpacked / name if (unpacked / name / spec.marker).is_file() else unpacked
        if not (src / spec.marker).is_file():
            raise DownloadError(f"{url} does not contain {name}/{spec.marker}; {hint}")
        final = datasets_dir / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(src, final)  # same filesystem: atomic, no half-unpacked dataset is ever seen
    return final


# ----------------------------------------------------------------------------- reading files

def _check_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path}: file is empty")


def _check_complete(path: Path) -> None:
    size = path.stat().st_size
    # Every GroupLens file ends with a newline: a last line without one was cut off.
    with open(path, "rb") as f:
        f.seek(size - 1)
        if f.read(1) != b"\n":
            raise DataError(f"{path}: the last line is incomplete (no final newline): "
                            "truncated download or copy? Fetch the file again")


def _first_line(path: Path, encoding: str) -> str:
    with open(path, "rb") as f:
        raw = f.readline(1 << 16)
    try:
        return raw.decode(encoding).rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: line 1 is not valid {encoding} text ({exc.reason} at byte "
                        f"{exc.start}): bad encoding?") from None


def _delimiter_hint(line: str, sep: str) -> str:
    for cand in ("::", "\t", "|", ",", ";"):
        if cand != sep and cand in line:
            return f" (it looks {cand!r}-separated; expected {sep!r})"
    return ""


def _locate_bad_value(df: pd.DataFrame, path: Path, numeric: list[str], first_line_no: int) -> None:
    """Raise a DataError naming the first missing or non-numeric value of ``numeric`` columns."""
    for col in df.columns:
        miss = df[col].isna().to_numpy()
        if miss.any():
            i = int(np.argmax(miss))
            raise DataError(f"{path}: line {i + first_line_no}: missing value for '{col}' "
                            "(truncated file or short line?)")
    for col in numeric:
        bad = pd.to_numeric(df[col], errors="coerce").isna().to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{path}: line {i + first_line_no}: column '{col}' has "
                            f"{df[col].iloc[i]!r}, expected a number")


def read_delimited(path: Path, *, sep: str, columns: dict[str, str], header: bool,
                   encoding: str = "utf-8", n_fields: int | None = None) -> pd.DataFrame:
    """Read one MovieLens text table; every defect becomes a DataError naming the file.

    ``columns`` maps the names to keep to their dtypes ("int64", "float32", "str"). With
    ``header`` the file's header must hold them; without, they are the first fields in order
    and the file has ``n_fields`` fields a line.
    """
    path = Path(path)
    _check_file(path)
    line = _first_line(path, encoding)
    _check_complete(path)
    names = list(columns)
    if header:
        fields = [f.strip() for f in line.split(sep)]
        missing = [c for c in names if c not in fields]
        if missing:
            raise DataError(f"{path}: header {fields} lacks column(s) {missing}; expected "
                            f"{names}{_delimiter_hint(line, sep)}")
    else:
        n_fields = n_fields or len(names)
        got = len(line.split(sep))
        if got != n_fields:
            raise DataError(f"{path}: line 1 has {got} field(s), expected {n_fields} separated by "
                            f"{sep!r}{_delimiter_hint(line, sep)}")
    # pandas' fast C parser takes one-character separators only: map '::' to a control char.
    src: Any = path
    c_sep = sep
    if len(sep) > 1:
        src = io.BytesIO(path.read_bytes().replace(sep.encode(), b"\x1f"))
        c_sep = "\x1f"
    # Every field is read (no usecols, index_col=False) so a line with extra fields is an error,
    # not silently dropped or shifted into an index.
    kwargs: dict[str, Any] = dict(sep=c_sep, encoding=encoding, engine="c", index_col=False,
                                  quoting=0 if header else 3, keep_default_na=False,
                                  na_values=[""])
    if not header:
        all_names = names + [f"_f{i}" for i in range(len(names), n_fields or len(names))]
        kwargs.update(header=None, names=all_names)
    numeric = [c for c, t in columns.items() if t != "str"]
    first_line_no = 2 if header else 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(src, dtype={c: (t if t != "str" else object)
                                         for c, t in columns.items()}, **kwargs)
    except pd.errors.ParserWarning:
        raise DataError(f"{path}: line {first_line_no} has more fields than the header "
                        f"(separator {sep!r})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid {encoding} text ({exc.reason} at byte {exc.start}): "
                        "bad encoding?") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: malformed ({str(exc).strip()})") from None
    except (ValueError, OverflowError):
        # A non-numeric or missing value in a numeric column: read as text to name the line.
        if isinstance(src, io.BytesIO):
            src.seek(0)
        raw = pd.read_csv(src, dtype=object, **kwargs)
        _locate_bad_value(raw, path, numeric, first_line_no)
        raise DataError(f"{path}: values cannot be read as {columns}") from None
    if df.empty:
        raise DataError(f"{path}: holds a header but no rows")
    if df[names].isna().any().any():
        _locate_bad_value(df[names], path, numeric, first_line_no)
    return df[names]


def _epoch_to_utc(seconds: pd.Series) -> pd.Series:
    return pd.to_datetime(seconds.astype("int64"), unit="s", utc=True).astype("datetime64[us, UTC]")


def _interactions(users: pd.Series, items: pd.Series, ratings: pd.Series,
                  ts: pd.Series) -> pd.DataFrame:
    return pd.DataFrame({
        schema.USER_ID: users.astype("int64").to_numpy(),
        schema.ITEM_ID: items.astype("int64").to_numpy(),
        schema.RATING: ratings.astype("float32").to_numpy(),
        # One shared category, not a list of millions of strings (ml-25m has 25M rows).
        schema.EVENT_TYPE: pd.Categorical.from_codes(np.zeros(len(users), dtype=np.int8),
                                                     categories=["rating"]),
        schema.EVENT_TIMESTAMP: _epoch_to_utc(ts).to_numpy(),
    })


def item_text(title: str, genres: str, tags: str = "") -> str:
    """The text the encoder sees: ``"title. genres: a, b. tags: x, y"``."""
    parts = [title.strip()]
    if genres:
        parts.append("genres: " + ", ".join(genres.split(schema.GENRE_SEPARATOR)))
    if tags:
        parts.append("tags: " + tags)
    return ". ".join(p for p in parts if p)


def _items(ids: pd.Series, titles: pd.Series, genres: pd.Series,
           tags: dict[int, str] | None = None) -> pd.DataFrame:
    genres = genres.fillna("").astype(str).replace(NO_GENRES, "")
    titles = titles.fillna("").astype(str).str.strip()
    tags = tags or {}
    text = [item_text(t, g, tags.get(int(i), "")) for i, t, g in zip(ids, titles, genres,
                                                                      strict=True)]
    return pd.DataFrame({schema.ITEM_ID: ids.astype("int64").to_numpy(),
                         schema.TITLE: titles.to_numpy(), schema.GENRES: genres.to_numpy(),
                         schema.TEXT: text})


def _fold_tags(tags: pd.DataFrame) -> dict[int, str]:
    """Per item, its distinct tags (case-folded), most applied first, at most MAX_TAGS_PER_ITEM."""
    t = tags.assign(tag=tags["tag"].astype(str).str.strip().str.lower())
    t = t[t["tag"] != ""]
    counts = t.groupby(["movieId", "tag"]).size().rename("n").reset_index()
    counts = counts.sort_values(["movieId", "n", "tag"], ascending=[True, False, True])
    counts = counts.groupby("movieId").head(MAX_TAGS_PER_ITEM)
    return {int(k): ", ".join(v) for k, v in counts.groupby("movieId")["tag"]}


def _users(ids: pd.Series, attrs: pd.DataFrame | None = None) -> pd.DataFrame:
    users = pd.DataFrame({schema.USER_ID: np.sort(pd.unique(ids.astype("int64")))})
    if attrs is not None:
        users = users.merge(attrs, on=schema.USER_ID, how="left")
    return users


# ----------------------------------------------------------------------------- formats

def _read_csv_release(d: Path, name: str) -> Tables:
    """ml-latest-small and ml-25m: ratings.csv, movies.csv, optional tags.csv (UTF-8)."""
    r = read_delimited(d / "ratings.csv", sep=",", header=True, columns={
        "userId": "int64", "movieId": "int64", "rating": "float32", "timestamp": "int64"})
    m = read_delimited(d / "movies.csv", sep=",", header=True, columns={
        "movieId": "int64", "title": "str", "genres": "str"})
    tags: dict[int, str] = {}
    if (d / "tags.csv").exists():
        t = read_delimited(d / "tags.csv", sep=",", header=True, columns={
            "userId": "int64", "movieId": "int64", "tag": "str"})
        tags = _fold_tags(t)
    return Tables(_interactions(r["userId"], r["movieId"], r["rating"], r["timestamp"]),
                  _items(m["movieId"], m["title"], m["genres"], tags),
                  _users(r["userId"]), source=f"movielens:{name}")


def _read_100k(d: Path) -> Tables:
    r = read_delimited(d / "u.data", sep="\t", header=False, columns={
        "user": "int64", "item": "int64", "rating": "float32", "ts": "int64"})
    genre_names = list(ML100K_GENRES)
    if (d / "u.genre").exists():
        g = read_delimited(d / "u.genre", sep="|", header=False, encoding="latin-1",
                           columns={"name": "str", "idx": "int64"})
        genre_names = list(g.sort_values("idx")["name"])
    n_g = len(genre_names)
    flag_cols = {f"g{i}": "int64" for i in range(n_g)}
    cols = {"item": "int64", "title": "str", "release": "str", "video": "str", "url": "str",
            **flag_cols}
    # Empty release dates and URLs are legitimate here: only id, title and flags are required.
    it = _read_100k_items(d / "u.item", cols)
    flags = it[list(flag_cols)].to_numpy(dtype=bool)
    names = np.array(genre_names, dtype=object)
    genres = pd.Series([schema.GENRE_SEPARATOR.join(names[row]) for row in flags])
    u = read_delimited(d / "u.user", sep="|", header=False, encoding="latin-1", columns={
        "user_id": "int64", "age": "int64", "gender": "str", "occupation": "str",
        "zip_code": "str"})
    return Tables(_interactions(r["user"], r["item"], r["rating"], r["ts"]),
                  _items(it["item"], it["title"], genres),
                  _users(r["user"], u), source="movielens:ml-100k")


def _read_100k_items(path: Path, cols: dict[str, str]) -> pd.DataFrame:
    """u.item: dates and URL may be empty; id and genre flags are required."""
    _check_file(path)
    line = _first_line(path, "latin-1")
    _check_complete(path)
    got = len(line.split("|"))
    if got != len(cols):
        raise DataError(f"{path}: line 1 has {got} field(s), expected {len(cols)} separated by "
                        f"'|'{_delimiter_hint(line, '|')}")
    try:
        raw = pd.read_csv(path, sep="|", header=None, names=list(cols), dtype=object,
                          encoding="latin-1", keep_default_na=False, quoting=3)
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: malformed ({str(exc).strip()})") from None
    required = ["item"] + [c for c in cols if c.startswith("g")]
    blank = raw[required].isna() | (raw[required] == "")
    if blank.any().any():
        i = int(np.argmax(blank.any(axis=1).to_numpy()))
        col = blank.columns[blank.iloc[i].to_numpy()][0]
        raise DataError(f"{path}: line {i + 1}: missing value for '{col}' "
                        "(truncated file or short line?)")
    _locate_bad_value(raw[required], path, required, 1)
    out = raw.copy()
    for c in required:
        out[c] = out[c].astype("int64")
    return out


def _read_1m(d: Path) -> Tables:
    r = read_delimited(d / "ratings.dat", sep="::", header=False, encoding="latin-1", columns={
        "user": "int64", "item": "int64", "rating": "float32", "ts": "int64"})
    m = read_delimited(d / "movies.dat", sep="::", header=False, encoding="latin-1", columns={
        "item": "int64", "title": "str", "genres": "str"})
    u = read_delimited(d / "users.dat", sep="::", header=False, encoding="latin-1", columns={
        "user_id": "int64", "gender": "str", "age": "int64", "occupation": "int64",
        "zip_code": "str"})
    occ = u["occupation"]
    bad = ~occ.between(0, len(ML1M_OCCUPATIONS) - 1)
    if bad.any():
        i = int(np.argmax(bad.to_numpy()))
        raise DataError(f"{d / 'users.dat'}: line {i + 1}: occupation code {occ.iloc[i]} is not "
                        f"in 0..{len(ML1M_OCCUPATIONS) - 1}")
    u = u.assign(occupation=np.array(ML1M_OCCUPATIONS, dtype=object)[occ.to_numpy()])
    return Tables(_interactions(r["user"], r["item"], r["rating"], r["ts"]),
                  _items(m["item"], m["title"], m["genres"]),
                  _users(r["user"], u[["user_id", "age", "gender", "occupation", "zip_code"]]),
                  source="movielens:ml-1m")


def read_movielens(path: Path, name: str) -> Tables:
    """Read the dataset folder ``path`` in the format of ``name``.

    The source is ``movielens:<name>``, the same wherever the copy lives, so validation compares
    a batch's volume with earlier batches of the same dataset.
    """
    fmt(name)
    path = Path(path)
    if name == "ml-100k":
        tables = _read_100k(path)
    elif name == "ml-1m":
        tables = _read_1m(path)
    else:
        tables = _read_csv_release(path, name)
    _check_references(tables, path)
    return tables


def _check_references(tables: Tables, path: Path) -> None:
    """A rating of an item absent from the item file means the two files do not belong together."""
    known = pd.Index(tables.items[schema.ITEM_ID])
    rated = pd.Index(pd.unique(tables.interactions[schema.ITEM_ID]))
    unknown = rated.difference(known)
    if len(unknown):
        raise DataError(f"{path}: {len(unknown)} rated item id(s) are missing from the item file "
                        f"(e.g. {list(unknown[:5])}): mixed or truncated dataset files?")
    dup = tables.items[schema.ITEM_ID].duplicated()
    if dup.any():
        raise DataError(f"{path}: item id {tables.items[schema.ITEM_ID][dup].iloc[0]} appears "
                        "more than once in the item file")


def load_movielens(name: str, root: Path | None, datasets_dir: Path, *, download: bool = True,
                   base_url: str = BASE_URL, progress: ProgressFn | None = None) -> Tables:
    """Find (or download) MovieLens ``name`` and read it into canonical tables."""
    d = resolve(name, root, datasets_dir, download=download, base_url=base_url,
                progress=progress)
    return read_movielens(d, name)
