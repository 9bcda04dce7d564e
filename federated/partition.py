"""Split users across clients (IID or Dirichlet over taste clusters); write one folder per client.

The simulation engine's tool (and the loopback deployment's, whose SuperNodes each get their
folder as ``data-path``): a deployment on an existing SuperLink does not partition, its
SuperNodes bring their own data (``federated.client_data``).
"""

from __future__ import annotations

import json
import pickle
from collections import Counter
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

import numpy as np

from federated.cache import cached
from recops.core.atomic import write_atomic
from recops.errors import ConfigError, DataError
from recops.schema import GENRE_SEPARATOR, GENRES
from recops.training.sequences import SequenceData

Scheme = Literal["iid", "dirichlet"]
PARTITION_DIR = "partitions"
MANIFEST = "manifest.json"
SERVER_VALID = "server-valid.pkl"


USERS_FILE = "users.pkl"


def client_folder(pid: int) -> str:
    """A client's folder under the partition folder: only its users' file."""
    return f"client-{pid:04d}"


def client_file(pid: int) -> str:
    return f"{client_folder(pid)}/{USERS_FILE}"


def taste_clusters(data: SequenceData) -> np.ndarray:
    """One label per user of ``data.train_users``: the most frequent first genre in their history.

    Falls back to the user's most frequent item when the catalogue carries no genres, so a
    non-IID split still groups users by what they consume.
    """
    first_genre = None
    if GENRES in data.items.columns:
        g = data.items[GENRES].astype("string").fillna("").str.split(GENRE_SEPARATOR).str[0]
        first_genre = np.concatenate([["<pad>"], g.to_numpy(dtype=object)])
    labels = []
    for seq in data.train_seqs:
        if len(seq) == 0:
            labels.append("<none>")
            continue
        keys = first_genre[seq] if first_genre is not None else seq
        labels.append(str(Counter(keys.tolist()).most_common(1)[0][0]))
    return np.asarray(labels, dtype=object)


def partition_users(user_ids: np.ndarray, num_clients: int, scheme: Scheme = "iid", *,
                    clusters: np.ndarray | None = None, alpha: float = 0.5,
                    seed: int = 42) -> list[np.ndarray]:
    """Disjoint user-id arrays, one per client, every client non-empty.

    ``iid``: a seeded shuffle cut into near-equal parts. ``dirichlet``: for each cluster, its
    users are spread over clients in proportions drawn from Dir(alpha); small alpha = each
    client sees few clusters (strongly non-IID).
    """
    users = np.asarray(user_ids, dtype=np.int64)
    if num_clients < 2:
        raise ConfigError(f"federated.num_clients must be at least 2, got {num_clients}")
    if len(users) < num_clients:
        raise DataError(f"cannot split {len(users)} users across {num_clients} clients: every "
                        "client needs at least one user; lower federated.num_clients")
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        return [np.sort(p) for p in np.array_split(rng.permutation(users), num_clients)]
    if scheme != "dirichlet":
        raise ConfigError(f"federated.partition must be 'iid' or 'dirichlet', got {scheme!r}")
    if clusters is None or len(clusters) != len(users):
        raise DataError("a Dirichlet partition needs one cluster label per user")
    if not alpha > 0:
        raise ConfigError(f"federated.dirichlet_alpha must be > 0, got {alpha}")
    parts: list[list[int]] = [[] for _ in range(num_clients)]
    for label in sorted(set(clusters.tolist())):
        members = rng.permutation(users[clusters == label])
        props = rng.dirichlet(np.full(num_clients, alpha))
        cuts = (np.cumsum(props)[:-1] * len(members)).astype(int)
        for c, chunk in enumerate(np.split(members, cuts)):
            parts[c].extend(chunk.tolist())
    # Dirichlet draws can leave a client empty: give it users from the largest client, so
    # every SuperNode has data (an empty client would fail every round).
    for c in range(num_clients):
        while not parts[c]:
            donor = max(range(num_clients), key=lambda i: len(parts[i]))
            parts[c].append(parts[donor].pop())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


# A client's file holds only its users' fields; the public catalogue (item index and item
# table, the same for every client) is written once beside them.
CATALOGUE_FIELDS = ("index", "items")
USER_FIELDS = tuple(f.name for f in fields(SequenceData) if f.name not in CATALOGUE_FIELDS)
CATALOGUE = "catalogue.pkl"


def _client_fields(data: SequenceData, parts: list[np.ndarray]) -> list[dict[str, Any]]:
    """Each client's user fields, with the users found in one pass over all of them.

    ``SequenceData.subset`` scans every user once per call; with a user per client that is
    quadratic in users.
    """
    owner = {int(u): c for c, users in enumerate(parts) for u in users}
    tr: list[list[int]] = [[] for _ in parts]
    ev: list[list[int]] = [[] for _ in parts]
    for rows, users in ((tr, data.train_users), (ev, data.eval_users)):
        for i, u in enumerate(users.tolist()):
            if (c := owner.get(int(u))) is not None:
                rows[c].append(i)
    out = []
    for t, e in zip(tr, ev, strict=True):
        sub = data.take(t, e)
        out.append({name: getattr(sub, name) for name in USER_FIELDS})
    return out


def write_partitions(data: SequenceData, parts: list[np.ndarray], run_dir: Path, *,
                     scheme: str, server_valid: SequenceData | None = None) -> Path:
    """Write one file per client (only that client's users) plus the server's validation set.

    Returns the partition folder; ``manifest.json`` records sizes so a client can check it
    loaded the partition the server planned for.
    """
    out = Path(run_dir) / PARTITION_DIR
    out.mkdir(parents=True, exist_ok=True)
    sizes = []
    for pid, users in enumerate(_client_fields(data, parts)):
        (out / client_folder(pid)).mkdir(exist_ok=True)
        with open(out / client_file(pid), "wb") as f:
            pickle.dump(users, f, protocol=pickle.HIGHEST_PROTOCOL)
        sizes.append({"partition_id": pid, "n_users": len(users["train_users"]),
                      "n_eval_users": len(users["eval_users"])})
    return write_public(data, out.parent, num_clients=len(parts), scheme=scheme, clients=sizes,
                        server_valid=server_valid)


def write_public(data: SequenceData, run_dir: Path, *, num_clients: int, scheme: str,
                 clients: list[dict[str, int]] | None = None,
                 server_valid: SequenceData | None = None) -> Path:
    """Write what every client may read: the catalogue, and the manifest; plus the server's
    validation set (``data``'s users unless ``server_valid``).

    ``clients`` None: the clients hold their own data and the server knows nothing of it (the
    manifest's ``own_data``; its ``n_users`` 0 = unknown).
    """
    out = Path(run_dir) / PARTITION_DIR
    out.mkdir(parents=True, exist_ok=True)
    with open(out / CATALOGUE, "wb") as f:
        pickle.dump({name: getattr(data, name) for name in CATALOGUE_FIELDS}, f,
                    protocol=pickle.HIGHEST_PROTOCOL)
    with open(out / SERVER_VALID, "wb") as f:
        pickle.dump(server_valid if server_valid is not None else data, f,
                    protocol=pickle.HIGHEST_PROTOCOL)
    manifest = {"num_partitions": num_clients, "scheme": scheme, "n_items": int(data.n_items),
                "n_users": sum(c["n_users"] for c in clients or []), "clients": clients or [],
                "own_data": clients is None}
    write_atomic(out / MANIFEST, json.dumps(manifest, indent=1))
    return out


def _read_json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The partition plan (cached per process; do not mutate it)."""
    path = Path(run_dir) / PARTITION_DIR / MANIFEST
    try:
        return cached(path, _read_json)
    except FileNotFoundError:
        raise DataError(f"no partition manifest at {path}: run federated.partition first") from None


def load_partition(run_dir: Path, partition_id: int, num_partitions: int) -> SequenceData:
    """The one partition a client may read; checks it against the manifest."""
    manifest = read_manifest(run_dir)
    if manifest["num_partitions"] != num_partitions:
        raise DataError(f"client was started with num-partitions={num_partitions} but "
                        f"{run_dir} holds {manifest['num_partitions']} partitions")
    if not 0 <= partition_id < num_partitions:
        raise DataError(f"partition-id {partition_id} is outside 0..{num_partitions - 1}")
    folder = Path(run_dir) / PARTITION_DIR
    catalogue = _cached_pickle(folder / CATALOGUE)
    users = _cached_pickle(folder / client_file(partition_id))
    if not (isinstance(catalogue, dict) and set(catalogue) == set(CATALOGUE_FIELDS)):
        raise DataError(f"{folder / CATALOGUE} does not hold the catalogue")
    if not (isinstance(users, dict) and set(users) == set(USER_FIELDS)):
        raise DataError(f"partition file {folder / client_file(partition_id)} does not hold a "
                        "client's users")
    return SequenceData(**catalogue, **users)


def load_server_valid(run_dir: Path) -> SequenceData:
    data = load_pickle(Path(run_dir) / PARTITION_DIR / SERVER_VALID)
    if not isinstance(data, SequenceData):
        raise DataError("the server's validation file does not hold SequenceData")
    return data


def _cached_pickle(path: Path) -> Any:
    try:
        return cached(path, load_pickle)
    except FileNotFoundError:
        raise DataError(f"partition file {path} is missing") from None


def load_pickle(path: Path) -> Any:
    """One of the run's pickles (partition tool folders, the catalogue), errors as DataError."""
    try:
        with open(path, "rb") as f:
            return pickle.load(f)  # noqa: S301 - our own file, written by write_partitions
    except FileNotFoundError:
        raise DataError(f"partition file {path} is missing") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as exc:
        raise DataError(f"partition file {path} is unreadable: {exc}") from None
