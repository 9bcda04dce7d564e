"""How many clients a federated round samples: the sampling settings checked against each other."""

from __future__ import annotations

from dataclasses import dataclass

from recops.config import FederatedSettings
from recops.errors import ConfigError

STRATEGIES = ("fedavg", "fedprox", "fedavgm", "fedadam")


@dataclass(frozen=True)
class RoundPlan:
    """How many clients a round samples, given the settings and the clients that exist."""

    num_clients: int
    clients_per_round: int
    min_clients: int

    @property
    def sample_rate(self) -> float:
        return self.clients_per_round / self.num_clients


def plan_rounds(fed: FederatedSettings, num_clients: int | None = None) -> RoundPlan:
    """Check the sampling settings against each other; same rule as Flower's FedAvg sampler."""
    n = fed.num_clients if num_clients is None else num_clients
    if n < 2:
        raise ConfigError(f"federated.num_clients must be at least 2, got {n}")
    if fed.strategy not in STRATEGIES:
        raise ConfigError(f"federated.strategy must be one of {STRATEGIES}, got {fed.strategy!r}")
    if not 0 < fed.fraction_train <= 1:
        raise ConfigError(f"federated.fraction_train must lie in (0, 1], got {fed.fraction_train}")
    if fed.min_clients > n:
        raise ConfigError(f"federated.min_clients ({fed.min_clients}) is more than the "
                          f"{n} clients of the federation")
    per_round = max(int(n * fed.fraction_train), fed.min_clients)
    if per_round < 1:
        raise ConfigError(f"federated.fraction_train={fed.fraction_train} samples no client "
                          f"out of {n}; raise it or federated.min_clients")
    return RoundPlan(num_clients=n, clients_per_round=per_round, min_clients=fed.min_clients)
