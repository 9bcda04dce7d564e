"""A server optimiser on the noised mean update: DP-FedAvgM and DP-FedAdam.

Flower's DP wrappers add the Gaussian noise to what their inner strategy returns. Around
FedAvgM or FedAdam that is noise added *after* a non-linear server step, not a Gaussian
mechanism on the clipped mean. Here the order is the right one: the DP wrapper around plain
FedAvg returns the noised mean of the clipped updates (the mechanism), and this wrapper
then takes a momentum or Adam step along it. Everything after the noise is post-processing,
so ε is that of DP-FedAvg (McMahan et al. 2018 used server momentum the same way).
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO
from typing import Literal

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

Kind = Literal["momentum", "adam"]


class ServerOptimizer(Strategy):
    """Wraps a strategy whose aggregate is the new global model; steps along its update.

    ``momentum``: v ← β·v + Δ, x ← x + η·v (FedAvgM). ``adam``: ``torch.optim.Adam``'s step
    with −Δ as the gradient, x ← x + η·m̂ / (√v̂ + ε) with bias-corrected moments m̂, v̂ and its
    defaults β₂ = 0.999, ε = 1e-8 (FedAdam). Δ is the wrapped strategy's aggregate minus the
    global model it was sent.

    Why torch's Adam and not FedAdam's usual β₂ = 0.99, τ = 1e-3 with τ inside the bias
    correction: with one SGD step per user, DP-FedAdam is DP-SGD with this Adam on the server,
    and the server rate is chosen by validating centralised DP-SGD, which steps with
    ``torch.optim.Adam``. FedAdam's form acts like ε = τ/√(1−β₂ᵗ) (10⁻² at the first round),
    larger than the noised mean's coordinates (σ·C/m, 6·10⁻⁴ for 1,000 users a round at σ
    0.62): the early rounds barely move. docs/federated.md gives the measured difference.
    """

    def __init__(self, strategy: Strategy, kind: Kind, lr: float, *, momentum: float = 0.9,
                 beta_1: float = 0.9, beta_2: float = 0.999, eps: float = 1e-8) -> None:
        if kind not in ("momentum", "adam"):
            raise ValueError(f"server optimiser must be 'momentum' or 'adam', got {kind!r}")
        if not lr > 0:
            raise ValueError(f"server learning rate must be > 0, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"server momentum must lie in [0, 1), got {momentum}")
        if not (0 <= beta_1 < 1 and 0 <= beta_2 < 1 and eps > 0):
            raise ValueError(f"server Adam needs betas in [0, 1) and eps > 0, got {beta_1}, "
                             f"{beta_2}, {eps}")
        self.strategy, self.kind, self.lr = strategy, kind, float(lr)
        self.momentum, self.beta_1, self.beta_2, self.eps = momentum, beta_1, beta_2, eps
        self.current: dict[str, np.ndarray] = {}
        self.first: dict[str, np.ndarray] = {}
        self.second: dict[str, np.ndarray] = {}
        self.steps = 0

    def __repr__(self) -> str:
        return f"ServerOptimizer({self.kind}, lr={self.lr}) around {self.strategy!r}"

    def summary(self) -> None:
        log(INFO, "\t├──> server optimiser: %s, lr %s", self.kind, self.lr)
        self.strategy.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self.current = {k: np.asarray(v.numpy(), dtype=np.float64) for k, v in arrays.items()}
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if arrays is None or not len(arrays):
            return arrays, metrics
        new = {k: np.asarray(v.numpy(), dtype=np.float64) for k, v in arrays.items()}
        if set(new) != set(self.current):
            raise ValueError("the aggregate's arrays do not match the global model's")
        out = self.step({k: new[k] - self.current[k] for k in new})
        stepped = ArrayRecord({k: Array(out[k].astype(arrays[k].numpy().dtype)) for k in out})
        return stepped, metrics

    def step(self, delta: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The new global weights from the current ones and the aggregate's update ``delta``."""
        self.steps += 1
        if self.kind == "momentum":
            for k, d in delta.items():
                self.first[k] = self.momentum * self.first.get(k, 0.0) + d
            return {k: self.current[k] + self.lr * self.first[k] for k in delta}
        b1, b2 = self.beta_1, self.beta_2
        for k, d in delta.items():
            self.first[k] = b1 * self.first.get(k, 0.0) + (1 - b1) * d
            self.second[k] = b2 * self.second.get(k, 0.0) + (1 - b2) * d * d
        c1, c2 = 1 - b1 ** self.steps, 1 - b2 ** self.steps
        return {k: self.current[k]
                + self.lr * (self.first[k] / c1) / (np.sqrt(self.second[k] / c2) + self.eps)
                for k in delta}

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)
