"""MovieLens releases (ml-latest-small, ml-100k, ml-1m, ml-25m) read into canonical tables."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from recops import schema
from recops.data.contract import Column, Dtype
from recops.data.files import Delimited, read_frame
from recops.data.movielens_fetch import BASE_URL, ProgressFn, fmt, resolve
from recops.data.tables import Tables
from recops.errors import DataError

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


# ----------------------------------------------------------------------------- conforming

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

def _read(path: Path, layout: Delimited, columns: dict[str, Dtype],
          nullable: tuple[str, ...] = ()) -> pd.DataFrame:
    """The named columns of one GroupLens table, every line complete (a cut copy is refused)."""
    if not layout.header:  # the names are the fields, in order; titles hold bare quotes
        layout = replace(layout, names=tuple(columns), quoted=False)
    contract = {c: Column(t, nullable=c in nullable) for c, t in columns.items()}
    return read_frame(path, contract, text=replace(layout, final_newline=True), others=False)


CSV = Delimited(",")
LATIN1 = "latin-1"


def _read_csv_release(d: Path, name: str) -> Tables:
    """ml-latest-small and ml-25m: ratings.csv, movies.csv, optional tags.csv (UTF-8)."""
    r = _read(d / "ratings.csv", CSV, {
        "userId": "int64", "movieId": "int64", "rating": "float32", "timestamp": "int64"})
    m = _read(d / "movies.csv", CSV, {"movieId": "int64", "title": "string", "genres": "string"})
    tags: dict[int, str] = {}
    if (d / "tags.csv").exists():
        t = _read(d / "tags.csv", CSV, {"userId": "int64", "movieId": "int64", "tag": "string"})
        tags = _fold_tags(t)
    return Tables(_interactions(r["userId"], r["movieId"], r["rating"], r["timestamp"]),
                  _items(m["movieId"], m["title"], m["genres"], tags),
                  _users(r["userId"]), source=f"movielens:{name}")


def _read_100k(d: Path) -> Tables:
    r = _read(d / "u.data", Delimited("\t", header=False), {
        "user": "int64", "item": "int64", "rating": "float32", "ts": "int64"})
    genre_names = list(ML100K_GENRES)
    if (d / "u.genre").exists():
        g = _read(d / "u.genre", Delimited("|", header=False, encoding=LATIN1),
                  {"name": "string", "idx": "int64"})
        genre_names = list(g.sort_values("idx")["name"])
    n_g = len(genre_names)
    flag_cols: dict[str, Dtype] = {f"g{i}": "int64" for i in range(n_g)}
    cols: dict[str, Dtype] = {"item": "int64", "title": "string", "release": "string",
                              "video": "string", "url": "string", **flag_cols}
    # Empty titles, release dates and URLs are legitimate here: id and flags are required.
    it = _read(d / "u.item", Delimited("|", header=False, encoding=LATIN1), cols,
               nullable=("title", "release", "video", "url"))
    flags = it[list(flag_cols)].to_numpy(dtype=bool)
    names = np.array(genre_names, dtype=object)
    genres = pd.Series([schema.GENRE_SEPARATOR.join(names[row]) for row in flags])
    u = _read(d / "u.user", Delimited("|", header=False, encoding=LATIN1), {
        "user_id": "int64", "age": "int64", "gender": "string", "occupation": "string",
        "zip_code": "string"})
    return Tables(_interactions(r["user"], r["item"], r["rating"], r["ts"]),
                  _items(it["item"], it["title"], genres),
                  _users(r["user"], u), source="movielens:ml-100k")


def _read_1m(d: Path) -> Tables:
    dat = Delimited("::", header=False, encoding=LATIN1)
    r = _read(d / "ratings.dat", dat, {
        "user": "int64", "item": "int64", "rating": "float32", "ts": "int64"})
    m = _read(d / "movies.dat", dat, {
        "item": "int64", "title": "string", "genres": "string"})
    u = _read(d / "users.dat", dat, {
        "user_id": "int64", "gender": "string", "age": "int64", "occupation": "int64",
        "zip_code": "string"})
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
