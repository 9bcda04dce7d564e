"""MovieLens loaders: real ml-latest-small, tiny ml-100k / ml-1m files, every malformed case."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recops import schema
from recops.data.movielens import load_movielens, read_movielens
from recops.data.movielens_fetch import find_local
from recops.errors import DataError
from tests.data.conftest import ML1M_RATINGS, ML100K_RATINGS, write_latest


def _assert_canonical(tables) -> None:
    for name, df in tables.as_dict().items():
        for col, dtype in schema.PANDAS_DTYPES[name].items():
            assert str(df[col].dtype) == dtype, (name, col)
            assert not df[col].isna().any(), (name, col)


def test_latest_small_real(movielens_small: Path) -> None:
    t = read_movielens(movielens_small, "ml-latest-small")
    assert (len(t.users), len(t.items), len(t.interactions)) == (610, 9742, 100836)
    _assert_canonical(t)
    inter = t.interactions
    assert set(inter[schema.EVENT_TYPE]) == {"rating"}
    # The README's stated span: March 29, 1996 to September 24, 2018 (UTC).
    assert inter[schema.EVENT_TIMESTAMP].min().year == 1996
    assert inter[schema.EVENT_TIMESTAMP].max().year == 2018
    assert inter[schema.RATING].between(0.5, 5.0).all()
    toy = t.items.set_index(schema.ITEM_ID).loc[1]
    assert toy[schema.TITLE] == "Toy Story (1995)"
    assert toy[schema.GENRES].split("|")[0] == "Adventure"
    assert toy[schema.TEXT].startswith("Toy Story (1995). genres: Adventure, Animation")
    assert "pixar" in toy[schema.TEXT]  # tags.csv folded into the text
    # Every rated item has metadata, every user of a rating is in the users table.
    assert set(inter[schema.ITEM_ID]) <= set(t.items[schema.ITEM_ID])
    assert set(inter[schema.USER_ID]) == set(t.users[schema.USER_ID])


def test_latest_format_tags_quotes_and_no_genres(latest: Path) -> None:
    t = read_movielens(latest, "ml-latest-small")
    items = t.items.set_index(schema.ITEM_ID)
    assert items.loc[2, schema.TITLE] == "American President, The (1995)"
    assert items.loc[3, schema.TITLE] == "Amélie (2001)"
    assert items.loc[3, schema.GENRES] == ""  # "(no genres listed)" means none
    assert items.loc[3, schema.TEXT] == "Amélie (2001)"
    # Tags case-folded, most applied first.
    assert items.loc[1, schema.TEXT] == ("Toy Story (1995). genres: Adventure, Comedy. "
                                         "tags: pixar, fun")
    ts = t.interactions[schema.EVENT_TIMESTAMP].iloc[0]
    assert ts == pd.Timestamp(964982703, unit="s", tz="UTC")


def test_ml25m_reads_the_csv_layout(tmp_path: Path) -> None:
    d = write_latest(tmp_path / "ml-25m")
    t = read_movielens(d, "ml-25m")
    assert t.source == "movielens:ml-25m" and len(t.interactions) == 4
    assert find_local("ml-25m", tmp_path, tmp_path / "cache") == d


def test_ml100k(ml100k: Path) -> None:
    t = read_movielens(ml100k, "ml-100k")
    _assert_canonical(t)
    assert len(t.interactions) == len(ML100K_RATINGS)
    assert t.interactions[schema.RATING].tolist() == [float(r[2]) for r in ML100K_RATINGS]
    items = t.items.set_index(schema.ITEM_ID)
    assert items.loc[1, schema.GENRES] == "Animation|Children's|Comedy"
    assert items.loc[2, schema.GENRES] == "Action|Adventure|Thriller"
    assert items.loc[3, schema.TITLE] == "Café au lait (1993)"  # latin-1 decoded
    users = t.users.set_index(schema.USER_ID)
    assert users.loc[2, "gender"] == "F" and users.loc[2, "age"] == 53
    assert users.loc[3, "occupation"] == "writer" and users.loc[1, "zip_code"] == "85711"


def test_ml100k_genre_names_from_u_genre(ml100k: Path) -> None:
    names = [f"G{i}" for i in range(19)]
    (ml100k / "u.genre").write_text("".join(f"{n}|{i}\n" for i, n in enumerate(names)) + "\n")
    t = read_movielens(ml100k, "ml-100k")
    assert t.items.set_index(schema.ITEM_ID).loc[1, schema.GENRES] == "G3|G4|G5"


def test_ml1m(ml1m: Path) -> None:
    t = read_movielens(ml1m, "ml-1m")
    _assert_canonical(t)
    assert len(t.interactions) == len(ML1M_RATINGS)
    items = t.items.set_index(schema.ITEM_ID)
    # Single colons inside titles survive the '::' separator.
    assert items.loc[260, schema.TITLE] == "Star Wars: Episode IV - A New Hope (1977)"
    assert items.loc[3, schema.TITLE] == "Amélie (2001)"
    assert items.loc[260, schema.TEXT] == ("Star Wars: Episode IV - A New Hope (1977). "
                                           "genres: Action, Adventure, Sci-Fi")
    users = t.users.set_index(schema.USER_ID)
    assert users.loc[1, "occupation"] == "K-12 student"  # code 10 in the README
    assert users.loc[6, "occupation"] == "self-employed" and users.loc[6, "age"] == 56


def test_root_may_be_parent_or_dataset_folder(ml1m: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert find_local("ml-1m", ml1m.parent, cache) == ml1m
    assert find_local("ml-1m", ml1m, cache) == ml1m
    assert find_local("ml-1m", tmp_path / "elsewhere", cache) is None
    t = load_movielens("ml-1m", ml1m.parent, cache, download=False)
    assert len(t.interactions) == len(ML1M_RATINGS)


def test_root_pointing_at_the_other_csv_release_is_refused(latest: Path, tmp_path: Path) -> None:
    wrong = latest.rename(latest.parent / "ml-25m")
    with pytest.raises(DataError, match="holds 'ml-25m'"):
        find_local("ml-latest-small", wrong, tmp_path / "cache")


def test_absent_without_download_says_how_to_point_at_a_copy(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--data-root") as err:
        load_movielens("ml-100k", tmp_path / "nowhere", tmp_path / "cache", download=False)
    assert "RECOPS_DATA__ROOT" in str(err.value) and "nowhere" in str(err.value)


# ----------------------------------------------------------------------------- malformed input

def _set(path: Path, content: str | bytes) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 12])  # cut inside the last line


CSV_CASES = {
    "wrong columns": ("ratings.csv", "user,movie,stars,time\n1,1,4.0,964982703\n", "lacks column"),
    "bad encoding": ("movies.csv", "movieId,title,genres\n1,Caf\xe9 (1995),Comedy\n".encode(
        "latin-1"), "not valid utf-8"),
    "utf-16": ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4,9\n".encode("utf-16"),
               "utf-8"),
    "empty": ("ratings.csv", "", "empty"),
    "header only": ("ratings.csv", "userId,movieId,rating,timestamp\n", "no rows"),
    "wrong delimiter": ("ratings.csv", "userId;movieId;rating;timestamp\n1;1;4.0;964982703\n",
                        "separated by ';'"),
    "not a number": ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n"
                     "2,abc,3.0,964982703\n", "line 3: column 'movieId' has 'abc'"),
    "short line": ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2\n",
                   "line 3: missing value"),
    "too many fields": ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703,x,y\n",
                        "malformed"),
    "unknown item": ("ratings.csv", "userId,movieId,rating,timestamp\n1,99,4.0,964982703\n",
                     "missing from the item file"),
}


@pytest.mark.parametrize("case", list(CSV_CASES))
def test_latest_malformed(latest: Path, case: str) -> None:
    fname, content, expect = CSV_CASES[case]
    _set(latest / fname, content)
    with pytest.raises(DataError) as err:
        read_movielens(latest, "ml-latest-small")
    msg = str(err.value)
    target = "ratings.csv" if case == "unknown item" else fname
    assert str(latest / target) in msg or (case == "unknown item" and str(latest) in msg)
    assert expect.lower() in msg.lower(), msg


@pytest.mark.parametrize("fname", ["ratings.csv", "movies.csv"])
def test_latest_truncated(latest: Path, fname: str) -> None:
    _truncate(latest / fname)
    with pytest.raises(DataError, match=fname):
        read_movielens(latest, "ml-latest-small")


def test_latest_missing_file(latest: Path) -> None:
    (latest / "movies.csv").unlink()
    with pytest.raises(DataError, match=r"movies\.csv: file not found"):
        read_movielens(latest, "ml-latest-small")


ML100K_CASES = {
    "u.data comma": ("u.data", "1,1,5,874965758\n", "'\\t'"),
    "u.data empty": ("u.data", "", "empty"),
    "u.data text": ("u.data", "1\t1\t5\t874965758\n1\tx\t4\t874965758\n", "line 2: column 'item'"),
    "u.item fields": ("u.item", "1|Toy Story (1995)|01-Jan-1995\n", "expected 24"),
    "u.user tab": ("u.user", "1\t24\tM\ttechnician\t85711\n", "expected 5"),
}


@pytest.mark.parametrize("case", list(ML100K_CASES))
def test_ml100k_malformed(ml100k: Path, case: str) -> None:
    fname, content, expect = ML100K_CASES[case]
    _set(ml100k / fname, content)
    with pytest.raises(DataError) as err:
        read_movielens(ml100k, "ml-100k")
    assert str(ml100k / fname) in str(err.value)
    assert expect in str(err.value), str(err.value)


@pytest.mark.parametrize("fname", ["u.data", "u.item"])
def test_ml100k_truncated(ml100k: Path, fname: str) -> None:
    _truncate(ml100k / fname)
    with pytest.raises(DataError, match=fname.replace(".", r"\.")):
        read_movielens(ml100k, "ml-100k")


ML1M_CASES = {
    "ratings tab": ("ratings.dat", "1\t1\t5\t978300760\n", "'::'"),
    "movies wrong columns": ("movies.dat", "1::Toy Story (1995)\n", "expected 3"),
    "users empty": ("users.dat", "", "empty"),
    "bad occupation": ("users.dat", "1::F::1::10::48067\n6::M::56::42::70072\n",
                       "occupation code 42"),
    "ratings text": ("ratings.dat", "1::1::five::978300760\n", "column 'rating' has 'five'"),
}


@pytest.mark.parametrize("case", list(ML1M_CASES))
def test_ml1m_malformed(ml1m: Path, case: str) -> None:
    fname, content, expect = ML1M_CASES[case]
    _set(ml1m / fname, content)
    with pytest.raises(DataError) as err:
        read_movielens(ml1m, "ml-1m")
    assert str(ml1m / fname) in str(err.value)
    assert expect in str(err.value), str(err.value)


def test_ml1m_truncated(ml1m: Path) -> None:
    _truncate(ml1m / "ratings.dat")
    with pytest.raises(DataError, match=r"ratings\.dat"):
        read_movielens(ml1m, "ml-1m")


def test_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown MovieLens dataset 'ml-7b'"):
        read_movielens(tmp_path, "ml-7b")
