"""The settings section of federated training (``federated``): Flower's engine, clients, rounds,
strategy, client-level DP and SecAgg+. Each field's description is its help everywhere: the
``recops federated`` flag, Flower's run config (pyproject's ``[tool.flwr.app.config]``)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from recops.config_base import Section

# A DNS name (labels of letters, digits, hyphens) or an IPv4/IPv6 address.
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                   r"[A-Za-z0-9])?)*|[0-9A-Fa-f:.]+")


def hosts_of(value: str) -> list[str]:
    """The host names of a comma-separated ``federated.certificate_hosts`` value."""
    return [n.strip() for n in value.split(",") if n.strip()]


class FederatedSettings(Section):
    engine: Literal["simulation", "deployment"] = Field("simulation", description=(
        "simulation: virtual clients in one Flower simulation; deployment: SuperNodes that each "
        "read their own data folder, on a SuperLink recops starts on loopback (TLS) or on "
        "federated.superlink_address."))
    # The deployment engine's launcher settings: `flwr run`'s federation address and TLS.
    superlink_address: str = Field("", description=(
        "host:port of an existing SuperLink's Control API that `flwr run` submits to, whose "
        "SuperNodes hold their own data; empty = recops starts a SuperLink and SuperNodes on "
        "loopback."))
    superlink_root_certificates: str = Field("", description=(
        "PEM file of the CA that signed the SuperLink's certificate (flwr's root-certificates); "
        "empty = the system's CAs."))
    superlink_insecure: bool = Field(False, description=(
        "Talk to federated.superlink_address without TLS (a SuperLink started --insecure)."))
    certificate_hosts: str = Field("localhost,127.0.0.1", description=(
        "Comma-separated host names and IP addresses the SuperLink certificate recops issues "
        "is valid for (its subject alternative names)."))
    num_clients: int = Field(10, ge=2, description="Number of clients (at least 2).")
    rounds: int = Field(5, ge=1, description="Federated rounds.")
    local_epochs: int = Field(1, ge=1, description="Epochs each client trains per round.")
    partition: Literal["iid", "dirichlet"] = Field(
        "iid", description="How users are split across clients.")
    dirichlet_alpha: float = Field(0.5, gt=0, description=(
        "Dirichlet concentration of the dirichlet partition; small = more non-IID."))
    strategy: Literal["fedavg", "fedprox", "fedavgm", "fedadam"] = Field(
        "fedavg", description="Flower strategy aggregating the clients' updates.")
    proximal_mu: float = Field(0.01, ge=0, description="fedprox's proximal term weight.")
    server_lr: float = Field(0.0, ge=0, description=(
        "The server's step along the (under client DP: noised) mean update, for fedavgm and "
        "fedadam; 0 = the strategy's default (fedavgm 1.0, fedadam 10 x train.lr)."))
    server_momentum: float = Field(0.9, ge=0, lt=1, description="fedavgm's momentum, in [0, 1).")
    # Under client DP with a server optimiser, "sgd" makes one local step a clipped gradient,
    # i.e. DP-FedAdam with one step is DP-SGD with Adam on the server.
    client_optimizer: Literal["adam", "sgd"] = Field("adam", description=(
        "The clients' optimiser for their local epochs (a fresh one each round)."))
    client_lr: float = Field(0.0, ge=0, description=(
        "The clients' learning rate; 0 = train.lr."))
    fraction_train: float = Field(1.0, gt=0, le=1, description=(
        "Fraction of clients sampled per round, in (0, 1]."))
    min_clients: int = Field(2, ge=1, description="Fewest clients a round trains with.")
    client_dp: Literal["off", "fixed", "adaptive"] = Field("off", description=(
        "Client-level DP: off, or fixed or adaptive clipping of the clients' updates."))
    client_noise_multiplier: float = Field(0.1, ge=0, description=(
        "Client-level DP's noise multiplier."))
    client_clipping_norm: float = Field(1.0, gt=0, description=(
        "Client-level DP's update clipping norm (adaptive: its start)."))
    num_cpus_per_client: float = Field(1.0, gt=0, description=(
        "CPUs the simulation engine reserves per virtual client."))
    # With client_dp the client-level guarantee is then user-level, and no client-side
    # evaluation runs (a client holds one user).
    users_as_clients: bool = Field(False, description=(
        "Cross-device: every user is a client of its own (num_clients becomes the number of "
        "training users; simulation engine only)."))
    # SecAgg+ (Flower's SecAggPlusWorkflow + secaggplus_mod): each client's key is split into
    # num_shares shares (itself and num_shares - 1 neighbours); reconstruction_threshold of them
    # recover it, so a client's neighbourhood tolerates num_shares - threshold dropouts. The
    # clipping range also bounds every coordinate for the quantiser.
    secure_aggregation: bool = Field(False, description=(
        "SecAgg+: the server learns only the sum of the clients' clipped, quantised updates."))
    secagg_num_shares: int = Field(3, ge=3, description=(
        "SecAgg+ shares per client's key, at least 3."))
    secagg_reconstruction_threshold: int = Field(2, ge=2, description=(
        "SecAgg+ shares that recover a key: more than half the shares, fewer than all."))
    secagg_clipping_range: float = Field(1.0, gt=0, description=(
        "L2 norm each client clips its update (new - global weights) to under SecAgg+."))
    secagg_quantization_range: int = Field(2**22, ge=2**8, lt=2**32, description=(
        "Levels of SecAgg+'s quantiser."))

    @field_validator("superlink_address")
    @classmethod
    def _address(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return value
        host, sep, port = value.rpartition(":")
        if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"{value!r} is not host:port (e.g. flower-superlink:9093)")
        return value

    @field_validator("certificate_hosts")
    @classmethod
    def _hosts(cls, value: str) -> str:
        names = hosts_of(value)
        if not names:
            raise ValueError("name at least one host, e.g. 'localhost,127.0.0.1'")
        bad = [n for n in names if not _HOST.fullmatch(n)]
        if bad:
            raise ValueError(f"{bad[0]!r} is neither a host name nor an IP address")
        return ",".join(names)

    @model_validator(mode="after")
    def _tls(self) -> FederatedSettings:
        if self.superlink_insecure and self.superlink_root_certificates:
            raise ValueError("superlink_insecure and superlink_root_certificates exclude each "
                             "other: a SuperLink speaks TLS or not")
        return self

    @model_validator(mode="after")
    def _secagg_shares(self) -> FederatedSettings:
        t, n = self.secagg_reconstruction_threshold, self.secagg_num_shares
        if t >= n:
            raise ValueError(f"secagg_reconstruction_threshold ({t}) must be below "
                             f"secagg_num_shares ({n})")
        if 2 * t <= n:
            # Below a majority, a server could ask one half of a client's neighbours for its
            # mask seed and the other half for its key, and unmask that client alone.
            raise ValueError(f"secagg_reconstruction_threshold ({t}) must be more than half "
                             f"of secagg_num_shares ({n})")
        return self
