"""Cross-device DP-FedAvg: every user a client, a sampled fraction per round, user-level ε from the
configured accountant (PRV by default) in the ledger, and a run past the budget refused before it
starts. The runner's own path, with the ServerApp and ClientApp in this process
(``federated.loopback``)."""

from __future__ import annotations

import json

import pytest

DP = {"federated.users_as_clients": True, "federated.client_dp": "fixed",
      "federated.client_noise_multiplier": 1.0, "federated.client_clipping_norm": 0.5,
      "federated.fraction_train": 0.05, "federated.rounds": 2}


@pytest.fixture
def in_process(monkeypatch):
    from federated import engines
    from federated.loopback import run_in_process

    monkeypatch.setattr(engines, "run_simulation", run_in_process)


def test_every_user_is_a_client_and_the_spend_is_user_level(make_settings, tiny_data,
                                                            in_process) -> None:
    from federated.runner import train_federated
    from recops.training.privacy import PrivacyLedger, epsilon_for

    s = make_settings(**DP, **{"privacy.budget_epsilon": 1000.0})
    n = len(tiny_data.train_users)
    run_dir = s.paths.runs / "users"
    res = train_federated(s, tiny_data, run_dir=run_dir, engine="simulation")
    assert s.federated.num_clients == n  # one client per user
    manifest = json.loads((run_dir / "partitions" / "manifest.json").read_text())
    assert manifest["num_partitions"] == n
    assert {c["n_users"] for c in manifest["clients"]} == {1}
    per_round = int(n * 0.05)
    rows = json.loads((run_dir / "federated_rounds.json").read_text())
    assert [r["participants"] for r in rows[1:]] == [per_round, per_round]
    assert all(r["client_eval"] is None for r in rows)  # no client-side evaluation of one user
    [entry] = PrivacyLedger(s.paths.privacy_ledger).entries()
    assert (entry.unit, entry.steps, entry.noise_multiplier) == ("user", 2, 1.0)
    assert entry.sample_rate == pytest.approx(per_round / n)
    assert entry.delta == pytest.approx(1 / (10 * n))
    assert entry.accountant == s.privacy.accountant == "prv"  # the default
    expected = epsilon_for(1.0, per_round / n, 2, 1 / (10 * n), "prv")
    assert entry.epsilon == pytest.approx(expected)
    assert expected < epsilon_for(1.0, per_round / n, 2, 1 / (10 * n), "rdp")  # PRV is tighter
    assert res.privacy["epsilon"] == pytest.approx(expected)
    assert res.privacy["unit"] == "user"
    assert rows[-1]["epsilon"]["client_level"] == pytest.approx(expected)
    assert rows[1]["epsilon"]["client_level"] < rows[2]["epsilon"]["client_level"]
    assert res.checkpoint["federated"]["privacy_unit"] == "user"


def test_a_run_past_the_budget_is_refused_before_it_starts(make_settings, tiny_data,
                                                           in_process) -> None:
    from federated.runner import train_federated
    from recops.errors import PrivacyBudgetExceeded
    from recops.training.privacy import PrivacyLedger

    s = make_settings(**DP, **{"privacy.budget_epsilon": 1000.0})
    first = train_federated(s, tiny_data, run_dir=s.paths.runs / "first", engine="simulation")
    spent = first.privacy["epsilon"]
    # The budget holds one such run, not two: the second is refused and spends nothing.
    s2 = make_settings(**DP, **{"privacy.budget_epsilon": 1.5 * spent})
    with pytest.raises(PrivacyBudgetExceeded, match="would be exceeded"):
        train_federated(s2, tiny_data, run_dir=s2.paths.runs / "second", engine="simulation")
    assert not (s2.paths.runs / "second" / "federated_rounds.json").exists()
    assert len(PrivacyLedger(s.paths.privacy_ledger).entries()) == 1


def test_users_as_clients_refuses_the_deployment_engine(make_settings, tiny_data) -> None:
    from federated.runner import train_federated
    from recops.errors import ConfigError

    s = make_settings(**DP)
    with pytest.raises(ConfigError, match="virtual clients"):
        train_federated(s, tiny_data, run_dir=s.paths.runs / "dep", engine="deployment")
