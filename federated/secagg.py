"""SecAgg+ rounds: Flower's ``SecAggPlusWorkflow`` on its workflow API (only this path uses it).

Each sampled client trains as usual, then sends its update (new − global weights) clipped to L2
norm ``clipping_range``, quantised and masked by ``secaggplus_mod`` (see
``federated.secagg_client``). The server sums the masked vectors; the masks cancel only in the
sum, so it learns the weighted sum of the clipped updates and never one client's update. The
strategy below adds that mean update to the global weights: the result is FedAvg (weights by
number of users) of the clipped updates, up to quantisation error.

A round whose dropouts leave some client with fewer than ``reconstruction_threshold`` live share
holders cannot be unmasked: Flower's workflow then stops the round quietly; here it raises
:class:`SecAggRoundError` naming the counts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from federated.rounds import plan_rounds
from recops.config import FederatedSettings
from recops.errors import ConfigError, TrainingError

if TYPE_CHECKING:  # Flower's legacy server API, imported at run time only on this path
    from flwr.app import Context
    from flwr.common import FitIns, FitRes, NDArrays, Parameters, Scalar
    from flwr.server.client_manager import ClientManager
    from flwr.server.client_proxy import ClientProxy
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
    from flwr.serverapp import Grid

MODULUS_RANGE = 2**32  # Flower's default and maximum mask range
# Fit-config key carrying the order of the travelling tensors (legacy Parameters are a list).
PARAM_NAMES_KEY = "param-names"


class SecAggRoundError(TrainingError):
    """A SecAgg+ round could not be completed (too many clients dropped out)."""


def secagg_info(fed: FederatedSettings, clients_per_round: int) -> dict[str, Any]:
    """Check the SecAgg+ settings against the round size; the record of what ran."""
    if not fed.secure_aggregation:
        return {"enabled": False}
    if fed.client_dp == "adaptive":
        raise ConfigError("federated.secure_aggregation does not combine with "
                          "federated.client_dp 'adaptive': the server cannot count how many "
                          "updates were clipped without seeing them; use 'fixed'")
    if fed.client_dp == "fixed" and fed.client_clipping_norm > fed.secagg_clipping_range:
        raise ConfigError(f"federated.client_clipping_norm ({fed.client_clipping_norm}) must "
                          f"not exceed federated.secagg_clipping_range "
                          f"({fed.secagg_clipping_range}), the quantiser's range")
    if fed.strategy not in ("fedavg", "fedprox"):
        raise ConfigError("federated.secure_aggregation needs strategy 'fedavg' or 'fedprox' "
                          f"(the server only sees the mean update), not {fed.strategy!r}")
    shares, threshold = fed.secagg_num_shares, fed.secagg_reconstruction_threshold
    if shares > clients_per_round:
        raise ConfigError(f"federated.secagg_num_shares ({shares}) is more than the "
                          f"{clients_per_round} clients sampled per round")
    if shares != clients_per_round and shares % 2 == 0:
        # Flower places a client in the middle of its share holders: an even count only
        # works when every sampled client holds a share.
        raise ConfigError(f"federated.secagg_num_shares ({shares}) must be odd, or equal to "
                          f"the {clients_per_round} clients sampled per round")
    q = fed.secagg_quantization_range
    if q & (q - 1):
        raise ConfigError(f"federated.secagg_quantization_range ({q}) must be a power of 2")
    if clients_per_round * q >= MODULUS_RANGE:
        raise ConfigError(f"federated.secagg_quantization_range ({q}) × {clients_per_round} "
                          f"clients per round must stay below 2^32, or the masked sum wraps "
                          f"around; lower it to at most "
                          f"{1 << (((MODULUS_RANGE - 1) // clients_per_round).bit_length() - 1)}")
    return {"enabled": True, "protocol": "SecAgg+", "num_shares": shares,
            "reconstruction_threshold": threshold,
            "tolerated_dropouts_per_neighbourhood": shares - threshold,
            "clipping_range": fed.secagg_clipping_range, "quantization_range": q,
            "modulus_range": MODULUS_RANGE,
            "quantization_step": 2 * fed.secagg_clipping_range / q,
            "clipping_norm": update_clip(fed.client_dp, fed.client_clipping_norm,
                                         fed.secagg_clipping_range),
            # DP-FedAvg on top: the server adds N(0, (σ·clip/m)²) to the unmasked mean of the
            # m equally weighted clipped updates. The server sees that mean before the noise.
            "server_noise": fed.client_dp == "fixed"}


def update_clip(client_dp: str, client_clipping_norm: float, secagg_clipping_range: float) -> float:
    """The L2 norm a client clips its update to: the DP clip under DP-FedAvg, else the
    quantiser's range."""
    return client_clipping_norm if client_dp == "fixed" else secagg_clipping_range


def _legacy_fedavg() -> type:
    import numpy as np
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import FedAvg as LegacyFedAvg

    class MeanUpdateFedAvg(LegacyFedAvg):
        """FedAvg whose clients send updates: the global weights move by the securely
        aggregated mean update (every reply carries that same mean after SecAgg+)."""

        current: NDArrays = []
        noise_multiplier = 0.0
        clip = 0.0

        def configure_fit(self, server_round: int, parameters: Parameters,
                          client_manager: ClientManager) -> list[tuple[ClientProxy, FitIns]]:
            self.current = parameters_to_ndarrays(parameters)
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(
                self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                failures: list[tuple[ClientProxy, FitRes] | BaseException],
        ) -> tuple[Parameters | None, dict[str, Scalar]]:
            if not results:
                return None, {}
            mean_update = parameters_to_ndarrays(results[0][1].parameters)
            if self.noise_multiplier > 0:
                # DP-FedAvg: m equally weighted updates of L2 norm <= clip; the mean moves by
                # at most clip/m when one client's update changes.
                std = self.noise_multiplier * self.clip / len(results)
                rng = np.random.default_rng()
                mean_update = [d + rng.normal(0.0, std, d.shape) for d in mean_update]
            new = [(g + d).astype(g.dtype)
                   for g, d in zip(self.current, mean_update, strict=True)]
            self.current = new
            metrics: dict[str, Scalar] = {}
            if self.fit_metrics_aggregation_fn is not None:
                metrics = self.fit_metrics_aggregation_fn(
                    [(r.num_examples, r.metrics) for _, r in results])
            return ndarrays_to_parameters(new), metrics

    return MeanUpdateFedAvg


def _checked_workflow() -> type:
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, Key

    class CheckedSecAggPlusWorkflow(SecAggPlusWorkflow):
        """Flower's workflow, but a stage that cannot go on raises instead of skipping."""

        def _stage(self, name: str, ok: bool, context: LegacyContext,
                   state: WorkflowState) -> bool:
            if ok:
                return True
            # The workflow keeps the round number there as an int (flwr types any config value).
            rnd = cast(int, context.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND])
            sampled, alive = len(state.sampled_node_ids), len(state.active_node_ids)
            raise SecAggRoundError(
                f"SecAgg+ round {rnd} failed in stage '{name}': {alive} of {sampled} sampled "
                f"clients still answer, and a client's update can only be unmasked while "
                f"{state.threshold} of its {state.num_shares} share holders answer "
                f"(federated.secagg_reconstruction_threshold); no weights were updated")

        def setup_stage(self, grid: Grid, context: LegacyContext,
                        state: WorkflowState) -> bool:
            return self._stage("setup", super().setup_stage(grid, context, state), context,
                               state)

        def share_keys_stage(self, grid: Grid, context: LegacyContext,
                             state: WorkflowState) -> bool:
            return self._stage("share keys", super().share_keys_stage(grid, context, state),
                               context, state)

        def collect_masked_vectors_stage(self, grid: Grid, context: LegacyContext,
                                         state: WorkflowState) -> bool:
            ok = super().collect_masked_vectors_stage(grid, context, state)
            return self._stage("collect masked vectors", ok, context, state)

        def unmask_stage(self, grid: Grid, context: LegacyContext,
                         state: WorkflowState) -> bool:
            return self._stage("unmask", super().unmask_stage(grid, context, state), context,
                               state)

    return CheckedSecAggPlusWorkflow


def run_secagg(grid: Grid, context: Context, *, fed: FederatedSettings, num_clients: int,
               initial: Mapping[str, Any], max_weight: float, round_timeout: float,
               train_metrics: Callable[[list[Mapping[str, Any]]], dict[str, Any]],
               evaluate: Callable[[int, dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """Run ``fed.rounds`` SecAgg+ rounds from ``initial`` (name -> ndarray); the final weights.

    ``train_metrics`` gets the sampled clients' plaintext metrics of a round; ``evaluate`` the
    round number and the global weights after it (round 0 = the initial weights).
    """
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.workflow import DefaultWorkflow

    plan = plan_rounds(fed, num_clients)
    names = list(initial)

    def fit_config(server_round: int) -> dict[str, Any]:
        cfg: dict[str, Any] = {"server-round": server_round, "client-dp": "off",
                               PARAM_NAMES_KEY: ",".join(names)}
        if fed.strategy == "fedprox":
            cfg["proximal-mu"] = fed.proximal_mu
        return cfg

    def evaluate_fn(server_round: int, arrays: list[Any],
                    config: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        # Flower's legacy API wants a loss first; the recommender has none here.
        return 0.0, evaluate(server_round, dict(zip(names, arrays, strict=True)))

    strategy = _legacy_fedavg()(
        fraction_fit=fed.fraction_train, fraction_evaluate=0.0,
        min_fit_clients=plan.clients_per_round, min_evaluate_clients=0,
        min_available_clients=num_clients,
        initial_parameters=ndarrays_to_parameters(list(initial.values())),
        on_fit_config_fn=fit_config, evaluate_fn=evaluate_fn,
        fit_metrics_aggregation_fn=lambda pairs: train_metrics([m for _, m in pairs]))
    if fed.client_dp == "fixed":
        strategy.noise_multiplier = fed.client_noise_multiplier
        strategy.clip = fed.client_clipping_norm
        max_weight = 1.0  # every client weighs 1 (DP-FedAvg)
    workflow = _checked_workflow()(
        fed.secagg_num_shares, fed.secagg_reconstruction_threshold,
        max_weight=max_weight, clipping_range=fed.secagg_clipping_range,
        quantization_range=fed.secagg_quantization_range, modulus_range=MODULUS_RANGE,
        timeout=round_timeout)
    legacy = LegacyContext(context, config=ServerConfig(num_rounds=fed.rounds,
                                                        round_timeout=round_timeout),
                           strategy=strategy)
    # Client-side evaluation is skipped: the legacy evaluate messages are not what the
    # ClientApp's Message-API evaluate reads. The server evaluates the global weights.
    DefaultWorkflow(fit_workflow=workflow, evaluate_workflow=_no_client_evaluation)(grid, legacy)
    return dict(zip(names, strategy.current, strict=True))


def _no_client_evaluation(grid: Grid, context: Context) -> None:
    return None
