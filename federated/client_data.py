"""What a ClientApp trains on: the data of its own SuperNode, found from the node's config.

A SuperNode started with ``--node-config "data-path='/data/silo-3'"`` reads only that folder:
its events (``interactions.parquet``, ``.csv`` or ``.jsonl`` in the canonical columns, with an
optional ``users`` table beside) or a folder the partition tool wrote (``users.pkl``). The
public item catalogue, the run's settings and initial weights come from the run folder the
server published; nothing the client reads from its folder is written anywhere. A node started
with ``partition-id``/``num-partitions`` (the simulation engine's virtual nodes) reads its
partition tool folder under the run folder instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from federated.cache import cached
from federated.partition import (
    CATALOGUE,
    CATALOGUE_FIELDS,
    PARTITION_DIR,
    USER_FIELDS,
    USERS_FILE,
    load_partition,
    load_pickle,
)
from recops.errors import DataError
from recops.training.sequences import SequenceData

DATA_PATH = "data-path"
EVENT_TABLES = ("interactions", "users")
SUFFIXES = (".parquet", ".csv", ".jsonl")
# Flower node ids are unsigned 64-bit; a client id travels in int64 metrics and seeds.
_ID_MASK = (1 << 62) - 1


def client_id(node_config: Mapping[str, Any], node_id: int) -> int:
    """The id a client reports (DP accounting, seeds): its partition id, else its node id."""
    if "partition-id" in node_config:
        return int(node_config["partition-id"])
    return int(node_id) & _ID_MASK


def client_data(run_dir: Path, node_config: Mapping[str, Any], max_len: int) -> SequenceData:
    """This node's users, in the run's item index."""
    if DATA_PATH in node_config:
        return load_own_data(Path(str(node_config[DATA_PATH])), run_dir, max_len)
    try:
        pid, n = int(node_config["partition-id"]), int(node_config["num-partitions"])
    except KeyError:
        raise DataError(f"the SuperNode was started without its data: give it --node-config "
                        f"\"{DATA_PATH}='<its own folder>'\"") from None
    return load_partition(run_dir, pid, n)


def catalogue(run_dir: Path) -> dict[str, Any]:
    """The run's public item catalogue (item index and items table), as the server wrote it."""
    path = Path(run_dir) / PARTITION_DIR / CATALOGUE
    try:
        value = cached(path, load_pickle)
    except FileNotFoundError:
        raise DataError(f"no catalogue at {path}: the run folder was not prepared by "
                        "federated.runner") from None
    if not (isinstance(value, dict) and set(value) == set(CATALOGUE_FIELDS)):
        raise DataError(f"{Path(run_dir) / PARTITION_DIR / CATALOGUE} does not hold the "
                        "catalogue")
    return value


def _table(folder: Path, name: str) -> Path | None:
    found = [folder / f"{name}{s}" for s in SUFFIXES if (folder / f"{name}{s}").is_file()]
    if len(found) > 1:
        raise DataError(f"{folder}: more than one {name} file ({', '.join(p.name for p in found)})"
                        "; keep one")
    return found[0] if found else None


def load_own_data(folder: Path, run_dir: Path, max_len: int) -> SequenceData:
    """The node's own folder as SequenceData in the run's item index (read once per process)."""
    if not folder.is_dir():
        raise DataError(f"data-path {folder} is not a folder on this SuperNode")
    cat = catalogue(run_dir)
    if (folder / USERS_FILE).is_file():  # a folder the partition tool wrote
        users = cached(folder / USERS_FILE, load_pickle)
        if not (isinstance(users, dict) and set(users) == set(USER_FIELDS)):
            raise DataError(f"{folder / USERS_FILE} does not hold a client's users")
        return SequenceData(**cat, **users)
    events = _table(folder, "interactions")
    if events is None:
        raise DataError(f"data-path {folder} holds no interactions file "
                        f"(interactions{'|'.join(SUFFIXES)}) nor {USERS_FILE}")

    def build(path: Path) -> SequenceData:
        return _from_events(path, _table(folder, "users"), cat, max_len)

    return cached(events, build, max_len, id(cat))


def _from_events(events: Path, users_file: Path | None, cat: Mapping[str, Any],
                 max_len: int) -> SequenceData:
    from recops import schema
    from recops.data.files import read_frame
    from recops.data.loaders import read_interactions_file

    interactions = read_interactions_file(events)
    index = cat["index"]
    known = index.to_index(interactions[schema.ITEM_ID].to_numpy(), strict=False) > 0
    if not known.all():
        bad = interactions.loc[~known, schema.ITEM_ID]
        raise DataError(f"{events}: {int((~known).sum())} row(s) name item ids not in the run's "
                        f"catalogue of {index.n_items} items (e.g. {bad.iloc[0]}): the SuperNode's "
                        "data and the server's catalogue must match")
    users = read_frame(users_file) if users_file is not None else None
    data = SequenceData.from_interactions(interactions, cat["items"], max_len, users)
    if not np.array_equal(data.index.item_ids, index.item_ids):
        data = data.reindexed(index)  # the server's order (a warm start appends new items)
    if not len(data.train_users):
        raise DataError(f"{events}: no user to train on")
    return data
