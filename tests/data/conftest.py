"""What the data tests write themselves: tiny MovieLens-format folders (ml-100k, ml-1m,
latest-small) and a lake that already holds a catalogue."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recops import schema
from recops.core.lake import Lake

# u.item: id|title|release|video release|url|19 genre flags (unknown, Action, Adventure, ...)
ML100K_ITEMS = [
    (1, "Toy Story (1995)", [3, 4, 5]),  # Animation, Children's, Comedy
    (2, "GoldenEye (1995)", [1, 2, 16]),  # Action, Adventure, Thriller
    (3, "Café au lait (1993)", [5]),  # latin-1 title
]
ML100K_RATINGS = [(1, 1, 5, 874965758), (1, 2, 3, 876893171), (2, 1, 4, 878542960),
                  (2, 3, 1, 876893119), (3, 2, 2, 889751712)]
ML100K_USERS = [(1, 24, "M", "technician", "85711"), (2, 53, "F", "other", "94043"),
                (3, 23, "M", "writer", "32067")]


def write_ml100k(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ML100K_RATINGS))
    lines = []
    for item, title, genres in ML100K_ITEMS:
        flags = ["1" if g in genres else "0" for g in range(19)]
        lines.append("|".join([str(item), title, "01-Jan-1995", "",
                               "http://us.imdb.com/M/title-exact?x"] + flags))
    (d / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    (d / "u.user").write_text("".join("|".join(map(str, u)) + "\n" for u in ML100K_USERS))
    return d


ML1M_MOVIES = [(1, "Toy Story (1995)", "Animation|Children's|Comedy"),
               (260, "Star Wars: Episode IV - A New Hope (1977)", "Action|Adventure|Sci-Fi"),
               (1237, "Det sjunde inseglet (Seventh Seal, The) (1957)", "Drama"),
               (3, "Amélie (2001)", "Comedy|Romance")]
ML1M_RATINGS = [(1, 1, 5, 978300760), (1, 260, 3, 978302109), (6, 1237, 4, 978301968),
                (6, 3, 5, 978300275)]
ML1M_USERS = [(1, "F", 1, 10, "48067"), (6, "M", 56, 16, "70072")]


def write_ml1m(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "ratings.dat").write_text("".join("::".join(map(str, r)) + "\n" for r in ML1M_RATINGS))
    (d / "movies.dat").write_bytes("".join("::".join(map(str, m)) + "\n"
                                           for m in ML1M_MOVIES).encode("latin-1"))
    (d / "users.dat").write_text("".join("::".join(map(str, u)) + "\n" for u in ML1M_USERS))
    return d


def write_latest(d: Path) -> Path:
    """A few rows in the ml-latest-small / ml-25m CSV layout (UTF-8, quoted titles)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n"
                                   "1,2,3.5,964981247\n2,2,0.5,1445714994\n2,3,5.0,1445715000\n")
    (d / "movies.csv").write_text('movieId,title,genres\n1,Toy Story (1995),Adventure|Comedy\n'
                                  '2,"American President, The (1995)",Comedy|Drama|Romance\n'
                                  "3,Amélie (2001),(no genres listed)\n")
    (d / "tags.csv").write_text("userId,movieId,tag,timestamp\n2,1,Pixar,1445714994\n"
                                "3,1,pixar,1445714995\n2,1,fun,1445714996\n")
    return d


@pytest.fixture
def ml100k(tmp_path: Path) -> Path:
    return write_ml100k(tmp_path / "src" / "ml-100k")


@pytest.fixture
def ml1m(tmp_path: Path) -> Path:
    return write_ml1m(tmp_path / "src" / "ml-1m")


@pytest.fixture
def latest(tmp_path: Path) -> Path:
    return write_latest(tmp_path / "src" / "ml-latest-small")


def lake_with_items(lake_root: Path) -> Lake:
    """A lake that already holds items 1 and 2 and user 1, as after a first dataset."""
    lake = Lake(lake_root)
    lake.append(schema.ITEMS, pd.DataFrame({schema.ITEM_ID: [1, 2], schema.TITLE: ["a", "b"],
                                            schema.GENRES: ["", ""], schema.TEXT: ["a", "b"]}),
                source="test")
    lake.append(schema.USERS, pd.DataFrame({schema.USER_ID: [1]}), source="test")
    return lake
