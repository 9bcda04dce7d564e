"""Flower's deployment engine on a SuperLink recops did not start, each SuperNode reading only its
own folder: rounds per minute.

The federation is started here as its operators would start it: `flower-superlink` with TLS (a
CA and a certificate for localhost/127.0.0.1 from ``federated.deployment``), and
``--clients`` `flower-supernode` processes, each in its own working directory and home, given
its own data folder (``--node-config "data-path='...'"``: its users' events as Parquet). The
server side (recops' home) holds another set of users: the catalogue and the server's
validation users, nothing of the clients'. Then `recops federated --engine deployment
--superlink-address ... --superlink-root-certificates ...` submits the run.

Synthetic data (``--users`` users, 30 events each on average, ``--items`` items) split into
``--clients`` + 1 equal user sets; a tiny SASRec (d=16, one layer). The figure is rounds per
minute over rounds 1..R (from the ServerApp's per-round wall clock, so without the start-up),
beside the command's whole wall time (Flower, Feast and data preparation included).

    .venv/bin/python benchmarks/bench_own_superlink.py                 # 2 clients, 5 rounds
    .venv/bin/python benchmarks/bench_own_superlink.py --clients 4 --rounds 10
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Each client's users get ids no one else has: CLIENT_ID_BASE * (client + 1) + their id.
CLIENT_ID_BASE = 1_000_000_000
BIN = Path(sys.executable).parent
TINY = {"data": {"dataset": "synthetic"},
        "model": {"d_model": 16, "n_layers": 1, "n_heads": 1, "max_len": 20, "dropout": 0.1},
        "train": {"batch_size": 32, "lr": 0.005, "num_threads": 1}}


@dataclass
class Silos:
    """The server's tables (catalogue, its users' events) and each client's events."""

    items: pd.DataFrame
    server_events: pd.DataFrame
    server_users: pd.DataFrame
    client_events: list[pd.DataFrame]


def make_silos(n_users: int, n_items: int, n_clients: int, seed: int = 7) -> Silos:
    """Synthetic events split by user into the server's set and ``n_clients`` clients' sets."""
    import numpy as np

    from recops import schema
    from recops.data.synthetic import generate

    t = generate(n_users=n_users, n_items=n_items, n_interactions=30 * n_users, n_clusters=4,
                 days=10, seed=seed)
    users = np.random.default_rng(seed).permutation(t.interactions[schema.USER_ID].unique())
    groups = np.array_split(users, n_clients + 1)
    uid = schema.USER_ID
    server = t.interactions[t.interactions[uid].isin(groups[0])]
    clients = []
    for c, group in enumerate(groups[1:]):
        ev = t.interactions[t.interactions[uid].isin(group)].copy()
        ev[uid] = ev[uid] + CLIENT_ID_BASE * (c + 1)
        clients.append(ev.reset_index(drop=True))
    return Silos(t.items, server.reset_index(drop=True),
                 t.users[t.users[uid].isin(groups[0])].reset_index(drop=True), clients)


def write_config(path: Path, **extra: Any) -> Path:
    config = json.loads(json.dumps(TINY))
    for dotted, value in extra.items():
        node = config
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(config))
    return path


def land_server_data(config: Path, home: Path, silos: Silos) -> None:
    """The server's own tables in the lake under ``home`` (as `recops ingest` leaves them)."""
    from recops import schema
    from recops.config import load_settings
    from recops.core.lake import Lake

    lake = Lake(load_settings(config, {"home": str(home)}).paths.lake)
    for name, df in ((schema.INTERACTIONS, silos.server_events), (schema.ITEMS, silos.items),
                     (schema.USERS, silos.server_users)):
        lake.append(name, df, source="bench")


def _env(home: Path, flwr_home: Path) -> dict[str, str]:
    from recops.environment import PHONE_HOME_OFF
    from recops.paths import CHECKOUT

    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOPS_")}
    env.update(PHONE_HOME_OFF, HOME=str(home), RECOPS_HOME=str(home), FLWR_HOME=str(flwr_home),
               FLWR_DISABLE_UPDATE_CHECK="1", FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
               PATH=f"{BIN}:{os.environ.get('PATH', '')}", PYTHONPATH=str(CHECKOUT))
    if os.environ.get("RECOPS_DATA__ROOT"):
        env["RECOPS_DATA__ROOT"] = os.environ["RECOPS_DATA__ROOT"]
    return env


@dataclass
class Federation:
    """A running SuperLink (its Control API address and CA) and its SuperNodes."""

    address: str
    ca_cert: Path
    link: Any
    nodes: list[Any]
    node_dirs: list[Path]
    link_dir: Path


@contextmanager
def federation(root: Path, data_folders: Sequence[Path]) -> Iterator[Federation]:
    """`flower-superlink` (TLS) and one `flower-supernode` per data folder, each process in its
    own folder under ``root`` (working directory, home, FLWR_HOME, log); stopped on exit."""
    from federated.deployment import ensure_certificates
    from recops.core.supervisor import free_port, start

    link_dir = root / "superlink"
    certs = ensure_certificates(link_dir / "certs", "localhost,127.0.0.1")
    control, appio, fleet = free_port(), free_port(), free_port()
    link = start("flower-superlink", [
        str(BIN / "flower-superlink"), "--isolation", "subprocess",
        "--ssl-ca-certfile", str(certs.ca_cert), "--ssl-certfile", str(certs.server_cert),
        "--ssl-keyfile", str(certs.server_key),
        "--control-api-address", f"127.0.0.1:{control}",
        "--serverappio-api-address", f"127.0.0.1:{appio}",
        "--fleet-api-address", f"127.0.0.1:{fleet}", "--database", ":flwr-in-memory:"],
        _env(link_dir / "home", link_dir / "flwr"), link_dir / "superlink.log",
        cwd=_made(link_dir), grace=15.0)
    nodes: list[Any] = []
    dirs = []
    try:
        link.wait_port(control)
        link.wait_port(fleet)
        for i, folder in enumerate(data_folders):
            node_dir = _made(root / f"supernode-{i}")
            io = free_port()
            node = start(f"flower-supernode {i}", [
                str(BIN / "flower-supernode"), "--root-certificates", str(certs.ca_cert),
                "--superlink", f"127.0.0.1:{fleet}",
                "--clientappio-api-address", f"127.0.0.1:{io}", "--isolation", "subprocess",
                "--node-config", f"data-path={json.dumps(str(folder))}"],
                _env(node_dir / "home", node_dir / "flwr"), node_dir / "supernode.log",
                cwd=_made(node_dir / "work"), grace=15.0)
            nodes.append(node)
            dirs.append(node_dir)
            node.wait_port(io)
        yield Federation(f"127.0.0.1:{control}", certs.ca_cert, link, nodes, dirs, link_dir)
    finally:
        for node in reversed(nodes):
            node.stop()
        link.stop()


def _made(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_silo(folder: Path, events: pd.DataFrame) -> Path:
    """A client's own folder: its events, canonical columns, as Parquet."""
    _made(folder)
    events.to_parquet(folder / "interactions.parquet", index=False)
    return folder


def run_recops(config: Path, home: Path, fed: Federation, *, clients: int, rounds: int,
               run_id: str, timeout: float = 900.0) -> float:
    """`recops federated --engine deployment` on ``fed``'s SuperLink; returns its wall seconds."""
    from recops.core.supervisor import start

    cmd = [str(BIN / "recops"), "--config", str(config), "federated", "--engine", "deployment",
           "--superlink-address", fed.address, "--superlink-root-certificates",
           str(fed.ca_cert), "--clients", str(clients), "--rounds", str(rounds),
           "--run-id", run_id]
    started = time.perf_counter()
    start("recops federated", cmd, _env(home, home / "flwr"), home / f"{run_id}.log",
          cwd=_made(home)).watch(timeout)
    return time.perf_counter() - started


def rounds_per_minute(run_dir: Path) -> tuple[float, list[dict[str, Any]]]:
    """Rounds 1..R per minute of the ServerApp's clock (round 0 is the initial evaluation)."""
    rows = json.loads((run_dir / "federated_rounds.json").read_text())
    span = rows[-1]["wall_seconds"] - rows[0]["wall_seconds"]
    return 60.0 * (len(rows) - 1) / span, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--keep", type=Path, default=None,
                    help="work in this folder and keep it (logs of every process)")
    args = ap.parse_args()
    if args.clients < 2:
        ap.error("--clients must be at least 2")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if args.users < 20 * (args.clients + 1):
        ap.error(f"--users must be at least {20 * (args.clients + 1)} (20 per client and for "
                 "the server)")
    if args.items < 20:
        ap.error("--items must be at least 20")
    from rich.console import Console
    from rich.table import Table

    silos = make_silos(args.users, args.items, args.clients)
    with tempfile.TemporaryDirectory(prefix="bench-own-superlink-") as tmp:
        root = _made(args.keep) if args.keep else Path(tmp)
        home = root / "server-home"
        config = write_config(root / "settings.yaml")
        land_server_data(config, home, silos)
        folders = [write_silo(root / f"silo-{c}", ev) for c, ev in enumerate(silos.client_events)]
        with federation(root / "federation", folders) as fed:
            wall = run_recops(config, home, fed, clients=args.clients, rounds=args.rounds,
                              run_id="bench")
        per_min, rows = rounds_per_minute(home / "runs" / "bench")
    table = Table(title=f"deployment engine, separate SuperLink (TLS), {args.clients} "
                        f"SuperNodes with their own folders, {os.cpu_count()} CPUs")
    for col in ("clients", "rounds", "users/client", "rounds/min", "s/round",
                "final NDCG@10 (server's users)", "command wall s"):
        table.add_column(col, justify="right")
    table.add_row(str(args.clients), str(args.rounds),
                  str(silos.client_events[0]["user_id"].nunique()), f"{per_min:.1f}",
                  f"{60.0 / per_min:.1f}", f"{rows[-1]['global_ndcg@10']:.4f}", f"{wall:.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
