"""The online store opened directly: where its SQLite file is, and a backend it cannot address."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from recops.errors import FeatureError
from recops.features.online_store import sqlite_path, user_rows


def test_a_relative_sqlite_path_is_the_repos_as_in_feast(tmp_path: Path) -> None:
    def config(path: str) -> SimpleNamespace:
        return SimpleNamespace(online_store=SimpleNamespace(path=path), repo_path=tmp_path)

    assert sqlite_path(config("data/online.db")) == tmp_path / "data" / "online.db"
    assert sqlite_path(config("/abs/online.db")) == Path("/abs/online.db")


def test_a_store_that_is_neither_sqlite_nor_redis_is_refused_by_name() -> None:
    store = SimpleNamespace(project="recops", config=SimpleNamespace(
        entity_key_serialization_version=3, online_store=SimpleNamespace(type="dynamodb")))
    with pytest.raises(FeatureError, match="'dynamodb' of project 'recops'.*stores.online"):
        user_rows(store, 7)  # type: ignore[arg-type]
