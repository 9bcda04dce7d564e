"""Run the Flower app with `flwr run`: on a simulation SuperLink or SuperLink + SuperNodes (TLS)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from federated.common import FED_DIR, format_run_config
from federated.processes import BIN, FlowerProcesses
from recops.config import Settings
from recops.core.supervisor import free_port
from recops.environment import child_env
from recops.paths import CHECKOUT

CONNECTION = "recops"


def flwr_home(settings: Settings, run_dir: Path) -> Path:
    """One FLWR_HOME per run under the home: its config.toml names this run's SuperLink."""
    return settings.paths.flwr_home / Path(run_dir).name


def _write_connection(home: Path, control_port: int, root_cert: Path | None) -> None:
    home.mkdir(parents=True, exist_ok=True)
    lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]",
             f'address = "127.0.0.1:{control_port}"']
    lines += [f'root-certificates = "{root_cert}"'] if root_cert else ["insecure = true"]
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
    _write_connection(home, control, None)
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
    """A SuperLink and ``num_clients`` SuperNodes as separate processes on loopback, over TLS."""
    from federated.deployment import ensure_certificates

    home = flwr_home(settings, run_dir)
    log_dir = Path(run_dir) / FED_DIR
    certs = ensure_certificates(settings.paths.flwr_home / "certificates")
    control, appio, fleet = free_port(), free_port(), free_port()
    _write_connection(home, control, certs.ca_cert)
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
        for pid in range(num_clients):
            io_port = free_port()
            node = group.start(f"supernode-{pid}", [
                "flower-supernode", "--root-certificates", str(certs.ca_cert),
                "--superlink", f"127.0.0.1:{fleet}",
                "--clientappio-api-address", f"127.0.0.1:{io_port}",
                "--isolation", "subprocess",
                "--node-config", f"partition-id={pid} num-partitions={num_clients}"],
                what=f"flower-supernode {pid}")
            node.wait_port(io_port)
        _flwr_run(group, run_config, None, timeout, poll)
