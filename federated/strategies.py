"""The Flower strategy from settings: FedAvg/FedProx/FedAdam, optional client-level DP wrapper."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from federated.rounds import plan_rounds
from federated.secagg import secagg_info
from recops.config import FederatedSettings
from recops.errors import ConfigError
from recops.schema import METRIC_KEYS

if TYPE_CHECKING:
    from flwr.serverapp.strategy import Strategy

# Strategies that take a server optimiser step along the mean update.
SERVER_OPTIMIZERS: dict[str, Literal["momentum", "adam"]] = {"fedavgm": "momentum",
                                                            "fedadam": "adam"}
CLIENT_DP = ("off", "fixed", "adaptive")
# Reply metric keys. Under client-level DP every client weighs the same (DP-FedAvg): weighting
# by examples would let a big client move the average by more than the clipping norm.
NUM_EXAMPLES = "num-examples"
DP_WEIGHT = "dp-weight"
EVAL_METRICS = METRIC_KEYS


def server_rate(fed: FederatedSettings, lr: float) -> float:
    """The server optimiser's learning rate: ``federated.server_lr``, or the strategy's default."""
    if fed.server_lr > 0:
        return fed.server_lr
    return 10 * lr if fed.strategy == "fedadam" else 1.0


def build_strategy(fed: FederatedSettings, num_clients: int, *,
                   lr: float) -> tuple[Strategy, dict[str, Any]]:
    """The strategy object for ``Strategy.start`` and a JSON-able description of it.

    ``lr`` is the clients' train.lr (FedAdam's default server rate is 10 × it). Under client
    DP, fedavgm and fedadam are DP-FedAvg followed by :class:`federated.server_opt.ServerOptimizer`
    (the noise on the plain mean, the server step after it); without DP, Flower's classes.
    """
    from flwr.serverapp.strategy import (
        DifferentialPrivacyClientSideAdaptiveClipping,
        DifferentialPrivacyClientSideFixedClipping,
        FedAdam,
        FedAvg,
        FedAvgM,
        FedProx,
    )

    plan = plan_rounds(fed, num_clients)
    if fed.client_dp not in CLIENT_DP:
        raise ConfigError(f"federated.client_dp must be one of {CLIENT_DP}, got {fed.client_dp!r}")
    secure = secagg_info(fed, plan.clients_per_round)
    dp = fed.client_dp != "off"
    if dp and not fed.client_noise_multiplier > 0:
        raise ConfigError("federated.client_noise_multiplier must be > 0 when federated.client_dp "
                          f"is '{fed.client_dp}': without noise ε is infinite")
    # Users as clients: no client-side evaluation (one user's metrics; the server evaluates).
    fraction_evaluate = 0.0 if fed.users_as_clients else fed.fraction_train
    common: dict[str, Any] = dict(
        fraction_train=fed.fraction_train, fraction_evaluate=fraction_evaluate,
        min_train_nodes=fed.min_clients,
        min_evaluate_nodes=0 if fed.users_as_clients else fed.min_clients,
        min_available_nodes=max(fed.min_clients, 2),
        weighted_by_key=DP_WEIGHT if dp else NUM_EXAMPLES,
    )
    server_lr = server_rate(fed, lr)
    if fed.strategy == "fedprox":
        strategy: Strategy = FedProx(**common, proximal_mu=fed.proximal_mu)
    elif dp or fed.strategy == "fedavg":
        # Under client DP the noise goes on the plain mean; a server optimiser steps after it.
        strategy = FedAvg(**common)
    elif fed.strategy == "fedavgm":
        strategy = FedAvgM(**common, server_learning_rate=server_lr,
                           server_momentum=fed.server_momentum)
    else:
        # eta is the server step on the averaged update; a transformer needs a small one.
        strategy = FedAdam(**common, eta=server_lr, eta_l=lr, beta_1=0.9, beta_2=0.99, tau=1e-3)
    noise = None
    if fed.client_dp == "fixed":
        strategy = DifferentialPrivacyClientSideFixedClipping(
            strategy, noise_multiplier=fed.client_noise_multiplier,
            clipping_norm=fed.client_clipping_norm, num_sampled_clients=plan.clients_per_round)
        noise = fed.client_noise_multiplier
    elif fed.client_dp == "adaptive":
        # The clipped-count noise must leave some of σ for the update itself (Flower needs
        # 2·σ_count > σ); Andrew et al.'s default of clients/20 is too small for few clients.
        count_std = max(plan.clients_per_round / 20, fed.client_noise_multiplier)
        strategy = DifferentialPrivacyClientSideAdaptiveClipping(
            strategy, noise_multiplier=fed.client_noise_multiplier,
            num_sampled_clients=plan.clients_per_round,
            initial_clipping_norm=fed.client_clipping_norm, clipped_count_stddev=count_std)
        # Flower splits the budget between the update noise and the clipped-count noise so
        # that together they equal the requested multiplier: account with the requested one.
        noise = fed.client_noise_multiplier
    if dp and fed.strategy in SERVER_OPTIMIZERS:
        from federated.server_opt import ServerOptimizer

        strategy = ServerOptimizer(strategy, SERVER_OPTIMIZERS[fed.strategy], server_lr,
                                   momentum=fed.server_momentum)
    info = {
        "strategy": fed.strategy, "num_clients": plan.num_clients,
        "clients_per_round": plan.clients_per_round, "fraction_train": fed.fraction_train,
        "min_clients": fed.min_clients, "client_dp": fed.client_dp,
        "client_noise_multiplier": noise, "client_clipping_norm":
            fed.client_clipping_norm if dp else None,
        "proximal_mu": fed.proximal_mu if fed.strategy == "fedprox" else None,
        "server_lr": server_lr if fed.strategy in SERVER_OPTIMIZERS else None,
        "server_momentum": fed.server_momentum if fed.strategy == "fedavgm" else None,
        "secure_aggregation": secure, "users_as_clients": fed.users_as_clients,
        "privacy_unit": ("user" if fed.users_as_clients else "client") if dp else None,
    }
    return strategy, info
