"""One user's rows in Feast's online store (SQLite or Redis): find, read and delete them.

Feast's online-store interface deletes whole tables or every entity of a join key, not one
entity, so deletion is direct, with Feast's own key encoding (``serialize_entity_key``) and
table naming (``compute_table_id``), for every feature view keyed by ``user_id``:

* SQLite: ``DELETE`` of the entity's rows in each view's table, with ``secure_delete`` on, so
  the freed pages are overwritten rather than left in the file;
* Redis: one hash per entity and project holds every view's features: ``DEL`` of that key.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import TYPE_CHECKING, Any, cast

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


def _entity_key(store: FeatureStore, user_id: int) -> bytes:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    key = EntityKey(join_keys=[schema.USER_ID], entity_values=[Value(int64_val=int(user_id))])
    return serialize_entity_key(key, store.config.entity_key_serialization_version)


def _user_tables(store: FeatureStore) -> list[str]:
    from feast.infra.online_stores.helpers import compute_table_id

    versioned = bool(getattr(store.config.registry, "enable_online_feature_view_versioning",
                             False))
    return [compute_table_id(store.project, v, versioned) for v in store.list_feature_views()
            if list(v.join_keys) == [schema.USER_ID]]


def redis_client(connection_string: str) -> Redis:
    """A client for Feast's ``host:port[,db=N,password=...,ssl=true]`` connection string."""
    from redis import Redis

    first, *params = connection_string.split(",")
    host, _, port = first.partition(":")
    opts = dict(p.split("=", 1) for p in params if "=" in p)
    return Redis(host=host or "127.0.0.1", port=int(port or 6379), db=int(opts.get("db", 0)),
                 password=opts.get("password"), ssl=opts.get("ssl", "").lower() == "true",
                 socket_timeout=10)


@contextmanager
def _sqlite(store: FeatureStore) -> Iterator[sqlite3.Connection]:
    path = store.config.online_store.path
    with closing(sqlite3.connect(path, timeout=30)) as conn:
        yield conn


def _sqlite_tables(conn: sqlite3.Connection, wanted: list[str]) -> list[str]:
    have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return [t for t in wanted if t in have]


def _open(settings: Settings) -> FeatureStore | None:
    if not in_use(settings):
        return None
    from recops.features.feast_store import get_store

    return get_store(settings)


def where(settings: Settings) -> str:
    s = settings.stores
    return (f"redis {s.redis_url} (project {s.feast_project})" if s.online == "redis"
            else str(settings.paths.features / "online_store.db"))


def count(settings: Settings, user_id: int) -> int:
    """Feature rows (SQLite: one per feature; Redis: keys) the online store holds for the user."""
    store = _open(settings)
    if store is None:
        return 0
    key = _entity_key(store, user_id)
    try:
        if settings.stores.online == "redis":
            return cast(int, redis_client(settings.stores.redis_url).exists(
                key + store.project.encode()))
        with _sqlite(store) as conn:
            return sum(conn.execute(f'SELECT count(*) FROM "{t}" WHERE entity_key = ?',  # noqa: S608
                                    (key,)).fetchone()[0]
                       for t in _sqlite_tables(conn, _user_tables(store)))
    except Exception as exc:  # sqlite3, redis: say which store could not be read
        raise FeatureError(f"cannot read the online store {where(settings)}: {exc}") from exc


def read(settings: Settings, user_id: int) -> list[dict[str, Any]]:
    """The user's current online features (through Feast's online read), or nothing."""
    if not count(settings, user_id):
        return []
    from recops.compliance.places import records
    from recops.features.feast_online import online_features

    return records(online_features(settings, [user_id]))


def delete(settings: Settings, user_id: int) -> int:
    """Delete the user's online rows in every user-keyed view; returns how many went."""
    store = _open(settings)
    if store is None:
        return 0
    key = _entity_key(store, user_id)
    try:
        if settings.stores.online == "redis":
            return cast(int, redis_client(settings.stores.redis_url).delete(
                key + store.project.encode()))
        removed = 0
        with _sqlite(store) as conn:
            conn.execute("PRAGMA secure_delete = ON")
            with conn:  # one transaction
                for t in _sqlite_tables(conn, _user_tables(store)):
                    removed += conn.execute(f'DELETE FROM "{t}" WHERE entity_key = ?',  # noqa: S608
                                            (key,)).rowcount
            # The service keeps the store in WAL mode: the old pages live in the log until a
            # checkpoint copies it into the (securely deleted) database file and empties it.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed
    except Exception as exc:  # sqlite3, redis: say which store failed; nothing half-deleted
        raise FeatureError(f"cannot delete the user's rows from the online store "
                           f"{where(settings)}: {exc}") from exc
