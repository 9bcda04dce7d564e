"""Privacy spend of federated runs: recorded ε is recomputable from the recorded parameters."""

from __future__ import annotations

import pytest

from federated.accounting import SampleLevelTracker, client_level_delta, client_level_spend
from recops.errors import ConfigError
from recops.training.privacy import epsilon_for


def test_client_level_epsilon_grows_with_rounds_and_is_recomputable() -> None:
    spends = [client_level_spend(noise_multiplier=1.1, clipping_norm=1.0, sample_rate=0.2,
                                 rounds=r, delta=1e-3, mechanism="client-level-fixed",
                                 population="p") for r in (1, 5, 20)]
    eps = [s.epsilon for s in spends]
    assert eps[0] < eps[1] < eps[2]
    for s in spends:
        assert s.unit == "client" and s.steps == s.epochs
        assert s.epsilon == pytest.approx(epsilon_for(s.noise_multiplier, s.sample_rate,
                                                      s.steps, s.delta, s.accountant))


def test_client_level_delta_must_be_below_one_over_clients() -> None:
    assert client_level_delta(10) == pytest.approx(0.01)
    assert client_level_delta(10, 1e-4) == 1e-4
    with pytest.raises(ConfigError, match="1/number of clients"):
        client_level_delta(10, 0.2)


def test_sample_level_spend_is_the_worst_client_over_all_its_rounds() -> None:
    t = SampleLevelTracker()
    for _round in range(3):
        t.add(0, noise_multiplier=1.0, sample_rate=0.1, steps=10, delta=1e-4,
              max_grad_norm=1.0, epochs=1, mechanism="dp-sgd")
        # client 1 has fewer users: larger sampling rate, so it spends more per step
        t.add(1, noise_multiplier=1.0, sample_rate=0.5, steps=2, delta=1e-3,
              max_grad_norm=1.0, epochs=1, mechanism="dp-sgd")
    spend = t.spend("ml", run_id="r")
    per_client = {pid: epsilon_for(1.0, c["sample_rate"], c["steps"], c["delta"])
                  for pid, c in t.clients.items()}
    assert t.clients[0]["steps"] == 30 and t.clients[1]["steps"] == 6
    assert spend.epsilon == pytest.approx(max(per_client.values()))
    assert spend.epsilon == pytest.approx(epsilon_for(spend.noise_multiplier, spend.sample_rate,
                                                      spend.steps, spend.delta))
    assert spend.unit == "user" and spend.mechanism == "federated-dp-sgd"
    assert SampleLevelTracker().spend("ml") is None
