"""Privacy spend of a federated run: client-level DP over rounds, sample-level DP per client.

Client level (the unit is a client, i.e. everyone it holds): each round is one Gaussian
mechanism on the clipped mean of the sampled clients' updates, noise multiplier σ, with a
fraction q = clients_per_round / num_clients of the clients sampled. ε after T rounds comes
from Opacus' accountant (``privacy.accountant``: PRV or RDP) for T Poisson-subsampled Gaussian
steps (σ, q). Flower samples a fixed number of clients without replacement rather than Poisson;
the Poisson analysis is the standard approximation for that (as in DP-FedAvg, McMahan et al.
2018).

Sample level (the unit is a user): inside a client, Opacus DP-SGD with one sample per user.
Users sit in exactly one client, so clients compose in parallel: the run's ε is the largest
per-client ε, each computed from that client's σ, sampling rate and the steps it took over
all rounds it joined.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict

from recops.errors import ConfigError
from recops.training.privacy import PrivacySpend, epsilon_for


def client_level_delta(num_clients: int, delta: float | None = None) -> float:
    """δ for a client-level guarantee: below 1/num_clients; default 1/(10·num_clients)."""
    if delta is None:
        return 1.0 / (10 * num_clients)
    if delta >= 1.0 / num_clients:
        raise ConfigError(f"setting 'privacy.delta' ({delta:g}) must be below 1/number of "
                          f"clients = 1/{num_clients} for client-level DP")
    return delta


def client_level_spend(*, noise_multiplier: float, clipping_norm: float, sample_rate: float,
                       rounds: int, delta: float, mechanism: str, population: str,
                       run_id: str | None = None, accountant: str = "rdp",
                       unit: str = "client") -> PrivacySpend:
    """The spend of ``rounds`` rounds of DP-FedAvg (σ, q), recomputable from its fields.

    ``unit`` is "user" when every client holds exactly one user (users as clients)."""
    eps = epsilon_for(noise_multiplier, sample_rate, rounds, delta, accountant)
    return PrivacySpend(
        epsilon=eps, delta=delta, noise_multiplier=noise_multiplier,
        max_grad_norm=clipping_norm, sample_rate=sample_rate, steps=rounds, epochs=rounds,
        accountant=accountant, unit=unit, mechanism=mechanism, population=population,
        run_id=run_id)


class ClientSteps(TypedDict):
    """One client's DP-SGD parameters and the steps and epochs it took over all rounds."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float
    max_grad_norm: float
    epochs: int
    mechanism: str


@dataclass
class SampleLevelTracker:
    """Per-client DP-SGD steps over the rounds, from what each client reports."""

    clients: dict[int, ClientSteps] = field(default_factory=dict)

    def add(self, partition_id: int, *, noise_multiplier: float, sample_rate: float,
            steps: int, delta: float, max_grad_norm: float, epochs: int,
            mechanism: str) -> None:
        c = self.clients.setdefault(partition_id, ClientSteps(
            noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=0,
            delta=delta, max_grad_norm=max_grad_norm, epochs=0, mechanism=mechanism))
        # σ and q are fixed for the run (calibrated once for all rounds); if a client ever
        # reports different ones, keep the weaker (smaller σ, larger q) for a safe bound.
        c["noise_multiplier"] = min(c["noise_multiplier"], noise_multiplier)
        c["sample_rate"] = max(c["sample_rate"], sample_rate)
        c["delta"] = max(c["delta"], delta)
        c["steps"] += int(steps)
        c["epochs"] += int(epochs)

    def epsilon(self, accountant: str = "rdp") -> tuple[float, int | None]:
        """(largest per-client ε, the client it belongs to); (0, None) before any step."""
        worst, who = 0.0, None
        for pid, c in self.clients.items():
            eps = epsilon_for(c["noise_multiplier"], c["sample_rate"], c["steps"], c["delta"],
                              accountant)
            if eps > worst or who is None:
                worst, who = eps, pid
        return worst, who

    def spend(self, population: str, run_id: str | None = None,
              accountant: str = "rdp") -> PrivacySpend | None:
        """The run's user-level spend, carrying the worst client's parameters."""
        eps, who = self.epsilon(accountant)
        if who is None:  # no client has reported a step
            return None
        c = self.clients[who]
        return PrivacySpend(
            epsilon=eps, delta=c["delta"], noise_multiplier=c["noise_multiplier"],
            max_grad_norm=c["max_grad_norm"], sample_rate=c["sample_rate"], steps=c["steps"],
            epochs=c["epochs"], accountant=accountant, unit="user",
            mechanism=f"federated-{c['mechanism']}", population=population, run_id=run_id)
