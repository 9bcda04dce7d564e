"""Server optimisers under client DP: noise on the plain mean, the server step after it."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from federated.common import FED_DIR, FINAL_STATE, SUMMARY_FILE, run_config_from_settings
from federated.runner import prepare_run
from federated.server_opt import ServerOptimizer
from federated.strategies import build_strategy
from tests.federated.conftest import tiny_overrides


class _Fixed:
    """A stand-in inner strategy whose aggregate is whatever the test queued (our logic only)."""

    def __init__(self, aggregates: list[dict[str, np.ndarray]]) -> None:
        self.aggregates = aggregates

    def configure_train(self, server_round, arrays, config, grid):
        return []

    def aggregate_train(self, server_round, replies):
        from flwr.app import Array, ArrayRecord, MetricRecord

        agg = self.aggregates.pop(0)
        arrays = ArrayRecord({k: Array(v.astype(np.float32)) for k, v in agg.items()})
        return arrays, MetricRecord({"participants": 3})


def _round(opt: ServerOptimizer, current: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from flwr.app import Array, ArrayRecord, ConfigRecord

    opt.configure_train(1, ArrayRecord({k: Array(v.astype(np.float32))
                                        for k, v in current.items()}), ConfigRecord(), None)
    arrays, metrics = opt.aggregate_train(1, [])
    assert arrays is not None and metrics is not None and metrics["participants"] == 3
    return {k: v.numpy().astype(np.float64) for k, v in arrays.items()}


def test_momentum_steps_along_the_accumulated_mean_update() -> None:
    x0 = {"w": np.array([1.0, -2.0, 0.5])}
    a1, a2 = {"w": np.array([1.5, -2.0, 0.0])}, {"w": np.array([2.0, -1.0, 1.0])}
    opt = ServerOptimizer(_Fixed([a1, a2]), "momentum", lr=0.5, momentum=0.9)  # type: ignore[arg-type]
    x1 = _round(opt, x0)
    d1 = a1["w"] - x0["w"]
    assert np.allclose(x1["w"], x0["w"] + 0.5 * d1, atol=1e-6)
    x2 = _round(opt, x1)
    d2 = a2["w"] - x1["w"]
    assert np.allclose(x2["w"], x1["w"] + 0.5 * (0.9 * d1 + d2), atol=1e-6)


def test_momentum_zero_at_rate_one_is_the_aggregate_itself() -> None:
    agg = {"w": np.array([0.3, 0.7]), "b": np.array([[1.0], [2.0]])}
    opt = ServerOptimizer(_Fixed([agg]), "momentum", lr=1.0, momentum=0.0)  # type: ignore[arg-type]
    out = _round(opt, {"w": np.zeros(2), "b": np.zeros((2, 1))})
    assert all(np.allclose(out[k], agg[k], atol=1e-7) for k in agg)


def test_adam_normalises_each_coordinate_with_bias_correction() -> None:
    x0 = {"w": np.array([0.0, 0.0])}
    a1 = {"w": np.array([0.01, -4.0])}  # two coordinates, updates 400x apart
    opt = ServerOptimizer(_Fixed([a1]), "adam", lr=0.1)  # type: ignore[arg-type]
    x1 = _round(opt, x0)
    # After one step m̂ = Δ and v̂ = Δ²: every coordinate moves by lr in Δ's direction.
    assert np.allclose(x1["w"], [0.1, -0.1], atol=1e-5)


def test_adam_is_torch_adam_with_the_negated_update_as_gradient() -> None:
    # DP-FedAdam with one SGD step per user is DP-SGD with Adam on the server only if the
    # server's Adam is the one DP-SGD's rate was validated with: torch.optim.Adam.
    rng = np.random.default_rng(3)
    x = {"w": rng.normal(size=5)}
    ref = torch.tensor(x["w"], dtype=torch.float64, requires_grad=True)
    adam = torch.optim.Adam([ref], lr=0.03)
    opt = ServerOptimizer(_Fixed([]), "adam", lr=0.03)  # type: ignore[arg-type]
    for i, scale in enumerate((1e-3, 1e-2, 1e-4, 1e-3, 1e-2)):
        agg = x["w"] + rng.normal(scale=scale, size=5)
        opt.strategy.aggregates = [{"w": agg}]  # type: ignore[attr-defined]
        # The update the server sees: both sides travel as float32 arrays.
        seen = agg.astype(np.float32).astype(np.float64) - x["w"].astype(np.float32)
        x = _round(opt, x)
        with torch.no_grad():
            ref.grad = torch.tensor(-seen)
            adam.step()
            assert np.allclose(x["w"], ref.numpy(), rtol=0, atol=1e-6), i
            ref.copy_(torch.tensor(x["w"]))  # the same float32 weights next round


@pytest.mark.parametrize("kwargs, words", [
    ({"kind": "sgd", "lr": 1.0}, "momentum' or 'adam"),
    ({"kind": "adam", "lr": 0.0}, "learning rate"),
    ({"kind": "momentum", "lr": 1.0, "momentum": 1.0}, "momentum"),
    ({"kind": "adam", "lr": 1.0, "beta_2": 1.0}, "betas"),
    ({"kind": "adam", "lr": 1.0, "eps": 0.0}, "eps"),
])
def test_bad_server_optimiser_values_are_refused(kwargs, words) -> None:
    with pytest.raises(ValueError, match=words):
        ServerOptimizer(_Fixed([]), **kwargs)  # type: ignore[arg-type]


def _reference_step(opt: torch.optim.Optimizer, ref: torch.Tensor, state: dict, x: np.ndarray,
                    mean: np.ndarray, after: np.ndarray | float = 0.0) -> np.ndarray:
    """``opt``'s step from weights ``x`` and optimiser ``state`` on the update ``mean`` - x
    (as float32, what travels), plus ``after``."""
    opt.load_state_dict(copy.deepcopy(state))  # it keeps the tensors it is given
    with torch.no_grad():
        ref.copy_(torch.tensor(x, dtype=torch.float64))
        ref.grad = -torch.tensor(mean.astype(np.float32).astype(np.float64) - x)
        opt.step()
    return ref.detach().numpy() + after


class _Nodes:
    """A grid of ten connected nodes (all configure_train asks of it)."""

    def get_node_ids(self) -> list[int]:
        return list(range(1, 11))


@pytest.mark.parametrize("name, server_lr", [("fedavgm", 0.5), ("fedadam", None)])
def test_under_client_dp_the_server_step_wraps_the_noised_plain_mean(make_settings, name,
                                                                     server_lr) -> None:
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

    from federated.strategies import DP_WEIGHT, NUM_EXAMPLES

    dp = {"federated.strategy": name, "federated.client_dp": "fixed",
          "federated.client_noise_multiplier": 0.8, "federated.client_clipping_norm": 1.0}
    s = make_settings(**dp)
    _, info = build_strategy(s.federated, 10, lr=s.train.lr)
    assert info["server_lr"] == (1.0 if name == "fedavgm" else 10 * s.train.lr)
    if server_lr is not None:  # momentum at rate 1 is the same whether noise comes before or
        s = make_settings(**dp, **{"federated.server_lr": server_lr})  # after: another rate
    strategy, info = build_strategy(s.federated, 10, lr=s.train.lr)
    lr = info["server_lr"]

    # The reference: torch's optimiser on the global weights, its gradient the negated update
    # from Gaussian noise (σ = multiplier × clipping norm / clients) on the plain mean of what
    # the clients sent; two rounds, so that state carried between rounds counts too.
    x = np.array([0.5, -0.25, 0.0, 1.0], dtype=np.float32)
    ref = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    opt = (torch.optim.SGD([ref], lr=lr, momentum=s.federated.server_momentum)
           if name == "fedavgm" else torch.optim.Adam([ref], lr=lr))
    # The clients' mean update is small next to the noise (σ 0.08): with Adam, whose first step
    # is lr × sign, the noise decides some signs, so a step without it would show. The last
    # client (the most examples) is far from the rest: a weighted mean would move other signs.
    spread = np.full((10, 4), -1.0 / 9) * [-1, 1, 1, 1]
    spread[-1] = [-1, 1, 1, 1]
    for rnd in (1, 2):
        ins = list(strategy.configure_train(rnd, ArrayRecord({"w": Array(x)}), ConfigRecord(),
                                            _Nodes()))
        assert len(ins) == 10
        sent = [(x + np.array([2e-3, -2e-3, 2e-3, -2e-3]) + d).astype(np.float32)
                for d in spread]
        # Each client's example count differs, its DP weight is 1: the mean is unweighted.
        replies = [Message(RecordDict({"arrays": ArrayRecord({"w": Array(w)}),
                                       "metrics": MetricRecord({NUM_EXAMPLES: 1 + 100 * i,
                                                                DP_WEIGHT: 1.0})}), reply_to=m)
                   for i, (w, m) in enumerate(zip(sent, ins, strict=True))]
        np.random.seed(10 + rnd)  # Flower draws the DP noise from numpy's global generator
        arrays, _ = strategy.aggregate_train(rnd, replies)
        assert arrays is not None
        got = arrays["w"].numpy()

        np.random.seed(10 + rnd)
        noise = np.random.normal(0, 0.8 * 1.0 / 10, 4).astype(np.float32)
        plain = np.mean(np.stack(sent), axis=0, dtype=np.float64)
        weighted = np.average(np.stack(sent), axis=0, weights=[1 + 100 * i for i in range(10)])
        state = copy.deepcopy(opt.state_dict())
        ref_step = functools.partial(_reference_step, opt, ref, state, x)

        # Not the step without noise, not noise added after the step, not a weighted mean.
        for wrong in (ref_step(plain), ref_step(plain, noise), ref_step(weighted + noise)):
            assert not np.allclose(got, wrong, rtol=0, atol=1e-4), (rnd, wrong)
        want = ref_step(plain.astype(np.float32) + noise)
        assert np.allclose(got, want, rtol=0, atol=1e-5), (rnd, got, want)
        x = got


N = 4


def _run(tiny_data, root: Path, **extra: Any) -> tuple[dict, dict]:
    """Two DP rounds over the in-process grid; the final weights and the run summary."""
    from flwr.app import Context, RecordDict

    from federated import client_app, server_app
    from federated.loopback import LoopbackGrid
    from recops.config import load_settings

    settings = load_settings(overrides=tiny_overrides(**{
        "home": str(root / "home"), "federated.num_clients": N, "federated.rounds": 2,
        "federated.client_dp": "fixed", "federated.client_noise_multiplier": 0.5,
        "federated.client_clipping_norm": 0.05, "privacy.budget_epsilon": 1e6, **extra}))
    run_dir = root / "run"
    prepare_run(settings, tiny_data, run_dir)
    cfg = run_config_from_settings(settings, run_dir)
    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=cfg)
    np.random.seed(7)  # Flower draws the DP noise from numpy's global generator
    server_app.main(LoopbackGrid(client_app.app, cfg, N), ctx)
    summary = json.loads((run_dir / FED_DIR / SUMMARY_FILE).read_text())
    return torch.load(run_dir / FED_DIR / FINAL_STATE), summary


def test_dp_fedavgm_without_momentum_is_dp_fedavg_and_adam_spends_the_same_epsilon(
        tiny_data, tmp_path) -> None:
    plain, s_plain = _run(tiny_data, tmp_path / "fedavg")
    same, s_same = _run(tiny_data, tmp_path / "m0", **{
        "federated.strategy": "fedavgm", "federated.server_momentum": 0.0,
        "federated.server_lr": 1.0})
    adam, s_adam = _run(tiny_data, tmp_path / "adam", **{"federated.strategy": "fedadam"})
    for k in plain:
        assert torch.allclose(plain[k].float(), same[k].float(), atol=1e-5), k
    assert any(not torch.allclose(plain[k].float(), adam[k].float(), atol=1e-4) for k in plain)
    eps = [s["rounds"][-1]["epsilon"]["client_level"] for s in (s_plain, s_same, s_adam)]
    assert eps[0] > 0 and eps[0] == eps[1] == eps[2]  # post-processing spends nothing
    assert s_adam["strategy"]["strategy"] == "fedadam"
    assert s_adam["strategy"]["server_lr"] > 0
