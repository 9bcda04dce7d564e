"""Users' online rows through Feast's online-store interface, for the request path.

``FeatureStore.get_online_features`` and ``FeatureStore.push`` re-read the registry's feature
views from their protobufs on every call (with runtime type checks), and ``push`` goes through a
DataFrame and Arrow: measured ~55 ms and ~195 ms per call for one to 32 users on this stack,
where the store's own read and write take a few milliseconds. :class:`UserRows` resolves the two
user views once and calls the configured store's ``OnlineStore.online_read`` /
``online_write_batch`` (the interface every Feast online store implements, SQLite and Redis
alike) with the same entity keys, values and timestamps that materialisation and ``push`` write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from recops import schema
from recops.errors import FeatureError
from recops.features import featurize as f
from recops.features.online_store import sqlite_connection, sqlite_path

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto

    from recops.config_events import EventSettings

VIEWS = {f.USER_RECENT_VIEW: f.USER_SEQUENCE_FEATURES, f.USER_STATS_VIEW: f.USER_STAT_FEATURES}
# Feast value type of each user feature -> the ValueProto field that holds it.
_FIELD = {"INT64": "int64_val", "FLOAT": "float_val", "INT64_LIST": "int64_list_val"}


def _use_wal(config: Any) -> None:
    """Put a SQLite online store in write-ahead-log mode (a property of the database file).

    In the default rollback-journal mode every write transaction creates, syncs and deletes a
    journal, ~25 ms per commit under load here, and a writer blocks every reader of the file;
    with a WAL a commit appends and syncs one file and readers never wait for the writer.
    """
    if not sqlite_path(config).exists():
        return  # nothing applied yet: Feast creates it, and the next service start sets it
    with sqlite_connection(config) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


class UserRows:
    """Read and write the user views' rows of one Feast project, views resolved once.

    ``events`` (``data.event_roles``) gives each pushed event its role; unset: the default table.
    """

    def __init__(self, store: FeatureStore, events: EventSettings | None = None) -> None:
        from recops.config_events import EventSettings

        self.events = events if events is not None else EventSettings()
        try:
            self.views = {name: store.get_feature_view(name) for name in VIEWS}
        except Exception as exc:  # Feast raises its own types for an unknown view
            raise FeatureError(f"the user feature views are not in project '{store.project}': "
                               "run `recops features apply`") from exc
        self.config = store.config
        self.online = store.provider.online_store
        if getattr(self.config.online_store, "type", None) == "sqlite":
            _use_wal(self.config)
            # Commits of this process's connection need not wait for the disk: the feedback
            # log is the durable record (fsync'd before any acknowledgement); a crash can lose
            # only the last rows written here, which the next materialisation restores. Feast
            # has no setting for it: its store's own connection is reached through _get_conn.
            get_conn = getattr(self.online, "_get_conn", None)
            if get_conn is not None:
                get_conn(self.config).execute("PRAGMA synchronous=NORMAL")
        self.max_len = int(self.views[f.USER_RECENT_VIEW].tags.get("max_len", 50))
        self._fields: dict[str, str] = {}
        for view in self.views.values():
            for feat in view.features:
                vt = feat.dtype.to_value_type().name
                if vt not in _FIELD:
                    raise FeatureError(f"feature {view.name}:{feat.name} has type {vt}, which "
                                       "the request path does not handle")
                self._fields[feat.name] = _FIELD[vt]

    @staticmethod
    def _keys(user_ids: Sequence[int]) -> list[Any]:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        return [EntityKey(join_keys=[schema.USER_ID], entity_values=[Value(int64_val=int(u))])
                for u in user_ids]

    def _python(self, name: str, value: ValueProto) -> Any:
        field = self._fields[name]
        if value.WhichOneof("val") != field:
            return None  # an unset (null) value
        got = getattr(value, field)
        return list(got.val) if field.endswith("_list_val") else got

    def read(self, user_ids: Sequence[int], views: Sequence[str] = tuple(VIEWS),
             features: Sequence[str] | None = None
             ) -> list[tuple[datetime | None, dict[str, Any] | None]]:
        """Per user, in order: (newest event time over the views, {feature: value}); (None,
        None) for a user no view holds. ``features`` limits what is read."""
        keys = self._keys(user_ids)
        out: list[tuple[datetime | None, dict[str, Any] | None]] = [(None, None)] * len(keys)
        for name in views:
            wanted = [c for c in VIEWS[name] if features is None or c in features]
            if not wanted:
                continue
            try:
                got = self.online.online_read(self.config, self.views[name], keys, wanted)
            except Exception as exc:  # every store raises its own types when unreachable
                raise FeatureError(f"online read of '{name}' failed: {exc}") from exc
            for i, (ts, values) in enumerate(got):
                if values is None:
                    continue
                held_ts, held = out[i]
                row = dict(held or {})
                row.update({c: self._python(c, v) for c, v in values.items() if c in wanted})
                out[i] = (ts if held_ts is None or (ts and ts > held_ts) else held_ts, row)
        return out

    def recent_items(self, user_ids: Sequence[int]) -> list[list[int] | None]:
        """Each user's recent item ids (most recent last); None for a user with no row."""
        rows = self.read(user_ids, (f.USER_RECENT_VIEW,), (f.RECENT_ITEMS,))
        return [None if r is None else (r.get(f.RECENT_ITEMS) or None) for _, r in rows]

    def recent_and_blocked(self, user_ids: Sequence[int]
                           ) -> list[tuple[list[int] | None, list[int]]]:
        """Each user's recent item ids (None for a user with no row, or no positive) and the
        items of their recent negatives, in one read of the sequence view."""
        rows = self.read(user_ids, (f.USER_RECENT_VIEW,), (f.RECENT_ITEMS, f.BLOCKED_ITEMS))
        return [(None, []) if r is None else
                (r.get(f.RECENT_ITEMS) or None, list(r.get(f.BLOCKED_ITEMS) or []))
                for _, r in rows]

    def write(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Write whole user rows (``user_id``, ``event_timestamp`` and every user feature) to
        both views, as a push to the user push source would."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Int64List, Value

        if not rows:
            return
        keys = self._keys([r[schema.USER_ID] for r in rows])
        created = datetime.now(UTC)
        for name, feats in VIEWS.items():
            data: list[tuple[EntityKey, dict[str, Value], datetime, datetime | None]] = []
            for key, row in zip(keys, rows, strict=True):
                values = {}
                for c in feats:
                    v, field = row.get(c), self._fields[c]
                    if v is None:
                        values[c] = Value()
                    elif field == "int64_list_val":
                        values[c] = Value(int64_list_val=Int64List(val=[int(x) for x in v]))
                    else:
                        values[c] = Value(**{field: v})
                ts = row[schema.EVENT_TIMESTAMP]
                data.append((key, values, ts.to_pydatetime() if hasattr(ts, "to_pydatetime")
                             else ts, created))
            try:
                self.online.online_write_batch(self.config, self.views[name], data, None)
            except Exception as exc:  # every store raises its own types when unreachable
                raise FeatureError(f"online write of {len(rows)} user row(s) to '{name}' "
                                   f"failed: {exc}") from exc
