"""Run the Flower app with `flwr run`: on a simulation SuperLink, on SuperLink + SuperNodes started
on loopback (TLS), or on an existing SuperLink (``federated.superlink_address``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from federated.client_data import DATA_PATH
from federated.common import FED_DIR, format_run_config
from federated.partition import PARTITION_DIR, client_folder
from federated.processes import BIN, FlowerProcesses
from recops.config import Settings
from recops.core.supervisor import free_port
from recops.environment import child_env
from recops.errors import ConfigError
from recops.paths import CHECKOUT

CONNECTION = "recops"


def flwr_home(settings: Settings, run_dir: Path) -> Path:
    """One FLWR_HOME per run under the home: its config.toml names this run's SuperLink."""
    return settings.paths.flwr_home / Path(run_dir).name


def _write_connection(home: Path, address: str, root_cert: Path | None, *,
                      insecure: bool) -> None:
    """FLWR_HOME's config.toml: the one SuperLink connection `flwr run` uses.

    TLS with ``root_cert`` as the CA, or with the system's CAs when it is None, unless
    ``insecure``.
    """
    home.mkdir(parents=True, exist_ok=True)
    lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]",
             f"address = {json.dumps(address)}"]
    if insecure:
        lines.append("insecure = true")
    elif root_cert is not None:
        lines.append(f"root-certificates = {json.dumps(str(root_cert))}")
    (home / "config.toml").write_text("\n".join(lines) + "\n")


def _env(settings: Settings, home: Path) -> dict[str, str]:
    env = child_env(settings)
    env["FLWR_HOME"] = str(home)
    # The SuperLink/SuperNode spawn flower-superexec, flwr-serverapp... by name.
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    # The FAB is built from the checkout; recops must import from it in every child process.
    env["PYTHONPATH"] = str(CHECKOUT) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _num(x: float) -> int | float:
    """Whole numbers as ints: the federation config parser rejects 1.0 for an integer field."""
    return int(x) if float(x).is_integer() else x


def _flwr_run(group: FlowerProcesses, run_config: dict[str, Any], federation_config: str | None,
              timeout: float, poll: Callable[[], None] | None) -> None:
    argv = ["flwr", "run", str(CHECKOUT), CONNECTION, "--run-config",
            format_run_config(run_config), "--stream"]
    if federation_config:
        argv += ["--federation-config", federation_config]
    group.start("flwr-run", argv, what="`flwr run`").watch(timeout, on_progress=poll,
                                                           interval=1.0)


def run_simulation(settings: Settings, run_dir: Path, run_config: dict[str, Any], *,
                   num_clients: int, timeout: float = 3600.0,
                   poll: Callable[[], None] | None = None) -> None:
    """`flwr run` on a SuperLink in simulation mode started for this run (free loopback ports).

    We start the SuperLink ourselves instead of letting `flwr run` start its managed local one:
    that one listens on a fixed port shared by every user of the machine and stays running.
    """
    home = flwr_home(settings, run_dir)
    log_dir = Path(run_dir) / FED_DIR
    control, appio, fleet = free_port(), free_port(), free_port()
    _write_connection(home, f"127.0.0.1:{control}", None, insecure=True)
    fed = settings.federated
    federation_config = (f"num-supernodes={num_clients} "
                         f"client-resources-num-cpus={_num(fed.num_cpus_per_client)} "
                         f"client-resources-num-gpus=0.0")
    with FlowerProcesses(_env(settings, home), log_dir) as group:
        link = group.start("superlink", [
            "flower-superlink", "--insecure", "--simulation", "--isolation", "subprocess",
            "--control-api-address", f"127.0.0.1:{control}",
            "--serverappio-api-address", f"127.0.0.1:{appio}",
            "--fleet-api-address", f"127.0.0.1:{fleet}",
            "--database", ":flwr-in-memory:"])
        link.wait_port(control)
        _flwr_run(group, run_config, federation_config, timeout, poll)


def run_deployment(settings: Settings, run_dir: Path, run_config: dict[str, Any], *,
                   num_clients: int, timeout: float = 3600.0,
                   poll: Callable[[], None] | None = None) -> None:
    """`flwr run` on ``federated.superlink_address`` (SuperNodes there hold their own data), or
    on a SuperLink and ``num_clients`` SuperNodes started here on loopback, over TLS, each
    SuperNode given its partition folder as ``data-path``."""
    fed = settings.federated
    home = flwr_home(settings, run_dir)
    log_dir = Path(run_dir) / FED_DIR
    if fed.superlink_address:
        root = Path(fed.superlink_root_certificates) if fed.superlink_root_certificates else None
        if root is not None and not root.is_file():
            raise ConfigError(f"federated.superlink_root_certificates: {root} is not a file")
        _write_connection(home, fed.superlink_address, root, insecure=fed.superlink_insecure)
        with FlowerProcesses(_env(settings, home), log_dir) as group:
            _flwr_run(group, run_config, None, timeout, poll)
        return
    _run_loopback(settings, run_dir, run_config, num_clients=num_clients, timeout=timeout,
                  poll=poll)


def _run_loopback(settings: Settings, run_dir: Path, run_config: dict[str, Any], *,
                  num_clients: int, timeout: float,
                  poll: Callable[[], None] | None) -> None:
    from federated.deployment import ensure_certificates

    home = flwr_home(settings, run_dir)
    log_dir = Path(run_dir) / FED_DIR
    certs = ensure_certificates(settings.paths.flwr_home / "certificates",
                                settings.federated.certificate_hosts)
    control, appio, fleet = free_port(), free_port(), free_port()
    _write_connection(home, f"127.0.0.1:{control}", certs.ca_cert, insecure=False)
    with FlowerProcesses(_env(settings, home), log_dir) as group:
        link = group.start("superlink", [
            "flower-superlink", "--isolation", "subprocess",
            "--ssl-ca-certfile", str(certs.ca_cert), "--ssl-certfile", str(certs.server_cert),
            "--ssl-keyfile", str(certs.server_key),
            "--control-api-address", f"127.0.0.1:{control}",
            "--serverappio-api-address", f"127.0.0.1:{appio}",
            "--fleet-api-address", f"127.0.0.1:{fleet}",
            "--database", ":flwr-in-memory:"])
        link.wait_port(control)
        link.wait_port(fleet)
        parts = (Path(run_dir) / PARTITION_DIR).resolve()
        for pid in range(num_clients):
            io_port = free_port()
            node = group.start(f"supernode-{pid}", [
                "flower-supernode", "--root-certificates", str(certs.ca_cert),
                "--superlink", f"127.0.0.1:{fleet}",
                "--clientappio-api-address", f"127.0.0.1:{io_port}",
                "--isolation", "subprocess",
                "--node-config", f"partition-id={pid} {DATA_PATH}="
                f"{json.dumps(str(parts / client_folder(pid)))}"],
                what=f"flower-supernode {pid}")
            node.wait_port(io_port)
        _flwr_run(group, run_config, None, timeout, poll)
