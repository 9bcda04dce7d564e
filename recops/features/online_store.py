"""Feast's online store opened directly (SQLite file or Redis), and one user's rows in it.

Feast's online-store interface deletes whole tables or every entity of a join key, not one
entity, so a user's rows are addressed here directly, with Feast's own key encoding
(``serialize_entity_key``) and table naming (``compute_table_id``), in every feature view keyed
by ``user_id``:

* SQLite: the entity's rows in each view's table; deletion runs with ``secure_delete`` on, so
  the freed pages are overwritten rather than left in the file;
* Redis: one hash per entity and project holds every view's features.

This module is the only code that connects to the store's SQLite file or Redis server itself;
reads and writes of feature values go through Feast (:mod:`recops.features.online_rows`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from recops import schema
from recops.errors import FeatureError

if TYPE_CHECKING:
    from feast import FeatureStore
    from redis import Redis

    from recops.config import Settings


def in_use(settings: Settings) -> bool:
    """Whether the features stage ever set this home's Feast project up (its file registry, or
    a shared registry that only the settings can name)."""
    return settings.stores.registry != "file" or (settings.paths.features / "registry.db").exists()


def where(settings: Settings) -> str:
    """The online store of ``settings``, for messages and records."""
    s = settings.stores
    return (f"redis {s.redis_url} (project {s.feast_project})" if s.online == "redis"
            else str(settings.paths.features / "online_store.db"))


def redis_client(connection_string: str) -> Redis:
    """A client for Feast's ``host:port[,db=N,password=...,ssl=true]`` connection string."""
    from redis import Redis

    first, *params = connection_string.split(",")
    host, _, port = first.partition(":")
    opts = dict(p.split("=", 1) for p in params if "=" in p)
    return Redis(host=host or "127.0.0.1", port=int(port or 6379), db=int(opts.get("db", 0)),
                 password=opts.get("password"), ssl=opts.get("ssl", "").lower() == "true",
                 socket_timeout=10)


def sqlite_path(config: Any) -> Path:
    """The SQLite file of a Feast ``RepoConfig`` (a relative path is the repo's, as in Feast)."""
    path = Path(config.online_store.path)
    if not path.is_absolute() and config.repo_path is not None:
        path = Path(config.repo_path) / path
    return path


@contextmanager
def sqlite_connection(config: Any) -> Iterator[sqlite3.Connection]:
    """A connection to the SQLite online store of a Feast ``RepoConfig``, closed after."""
    with closing(sqlite3.connect(sqlite_path(config), timeout=30)) as conn:
        yield conn


class OnlineUser(Protocol):
    """One user's rows in one backend."""

    def count(self) -> int: ...

    def delete(self) -> int: ...


class _RedisUser:
    """The user's hash in Redis: every view's features under one key per entity and project."""

    def __init__(self, store: FeatureStore, key: bytes) -> None:
        self.client = redis_client(store.config.online_store.connection_string)
        self.key = key + store.project.encode()  # Feast's Redis key: entity key + project

    def count(self) -> int:
        return cast(int, self.client.exists(self.key))  # sync client: an int

    def delete(self) -> int:
        return cast(int, self.client.delete(self.key))


class _SqliteUser:
    """The user's row in each user-keyed view's table of the SQLite file."""

    def __init__(self, store: FeatureStore, key: bytes) -> None:
        from feast.infra.online_stores.helpers import compute_table_id

        self.config, self.key = store.config, key
        versioned = bool(getattr(store.config.registry, "enable_online_feature_view_versioning",
                                 False))
        self.wanted = [compute_table_id(store.project, v, versioned)
                       for v in store.list_feature_views()
                       if list(v.join_keys) == [schema.USER_ID]]

    def _tables(self, conn: sqlite3.Connection) -> list[str]:
        have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return [t for t in self.wanted if t in have]

    def count(self) -> int:
        with sqlite_connection(self.config) as conn:
            return sum(conn.execute(f'SELECT count(*) FROM "{t}" WHERE entity_key = ?',  # noqa: S608
                                    (self.key,)).fetchone()[0] for t in self._tables(conn))

    def delete(self) -> int:
        removed = 0
        with sqlite_connection(self.config) as conn:
            conn.execute("PRAGMA secure_delete = ON")
            with conn:  # one transaction: nothing half-deleted
                for t in self._tables(conn):
                    removed += conn.execute(f'DELETE FROM "{t}" WHERE entity_key = ?',  # noqa: S608
                                            (self.key,)).rowcount
            # The service keeps the store in WAL mode: the old pages live in the log until a
            # checkpoint copies it into the (securely deleted) database file and empties it.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed


def user_rows(store: FeatureStore, user_id: int) -> OnlineUser:
    """The user's rows in ``store``'s online store, whichever backend it is."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    entity = EntityKey(join_keys=[schema.USER_ID], entity_values=[Value(int64_val=int(user_id))])
    key = serialize_entity_key(entity, store.config.entity_key_serialization_version)
    kind = getattr(store.config.online_store, "type", None)
    if kind == "redis":
        return _RedisUser(store, key)
    if kind == "sqlite":
        return _SqliteUser(store, key)
    raise FeatureError(f"online store type {kind!r} of project '{store.project}': a user's rows "
                       "can be addressed in 'sqlite' or 'redis' only (settings stores.online)")


def _on_user(settings: Settings, user_id: int, doing: str,
             act: Callable[[OnlineUser], int]) -> int:
    """Open the store (none set up yet: 0), address the user's rows and ``act`` on them."""
    if not in_use(settings):
        return 0
    from redis.exceptions import RedisError

    from recops.features.feast_store import get_store

    try:
        return act(user_rows(get_store(settings), user_id))
    except (sqlite3.Error, RedisError) as exc:  # say which store failed
        raise FeatureError(f"cannot {doing} the online store {where(settings)}: {exc}") from exc


def count_user_rows(settings: Settings, user_id: int) -> int:
    """Feature rows (SQLite: one per user-keyed view; Redis: keys) the store holds for the user."""
    return _on_user(settings, user_id, "read", lambda rows: rows.count())


def delete_user_rows(settings: Settings, user_id: int) -> int:
    """Delete the user's online rows in every user-keyed view; returns how many went."""
    return _on_user(settings, user_id, "delete the user's rows from",
                    lambda rows: rows.delete())
