"""Strategy, client sampling and client-level DP wrappers from settings; bad settings fail early."""

from __future__ import annotations

import tomllib

import pytest

from federated.common import RUN_CONFIG_KEYS, format_run_config, run_config_from_settings
from federated.rounds import plan_rounds
from federated.runner import check_settings
from federated.strategies import build_strategy
from recops.errors import ConfigError


@pytest.mark.parametrize("name, cls", [("fedavg", "FedAvg"), ("fedprox", "FedProx"),
                                       ("fedavgm", "FedAvgM"), ("fedadam", "FedAdam")])
def test_strategy_is_the_flower_class_asked_for(make_settings, name, cls) -> None:
    s = make_settings(**{"federated.strategy": name, "federated.proximal_mu": 0.1})
    strategy, info = build_strategy(s.federated, 10, lr=s.train.lr)
    assert type(strategy).__name__ == cls
    assert info["strategy"] == name and info["clients_per_round"] == 10
    if name == "fedprox":
        assert strategy.proximal_mu == 0.1


@pytest.mark.parametrize("mode, cls", [
    ("fixed", "DifferentialPrivacyClientSideFixedClipping"),
    ("adaptive", "DifferentialPrivacyClientSideAdaptiveClipping")])
def test_client_dp_wraps_the_strategy_and_weighs_clients_equally(make_settings, mode, cls) -> None:
    s = make_settings(**{"federated.client_dp": mode, "federated.client_noise_multiplier": 0.8,
                         "federated.fraction_train": 0.5})
    strategy, info = build_strategy(s.federated, 10, lr=s.train.lr)
    assert type(strategy).__name__ == cls
    assert strategy.num_sampled_clients == 5 == info["clients_per_round"]
    # Equal weights: a big client cannot move the mean by more than the clipping norm.
    assert strategy.strategy.weighted_by_key == "dp-weight"


def test_fraction_and_min_clients_decide_the_round_size(make_settings) -> None:
    s = make_settings(**{"federated.fraction_train": 0.25, "federated.min_clients": 2})
    assert plan_rounds(s.federated, 20).clients_per_round == 5
    assert plan_rounds(s.federated, 4).clients_per_round == 2  # min_clients wins
    assert plan_rounds(s.federated, 20).sample_rate == 0.25


@pytest.mark.parametrize("overrides, words", [
    ({"federated.num_clients": 1}, "num_clients"),
    ({"federated.strategy": "fedsgd"}, "federated.strategy"),
    ({"federated.fraction_train": 0.0}, "fraction_train"),
    ({"federated.fraction_train": 1.5}, "fraction_train"),
    ({"federated.partition": "shards"}, "federated.partition"),
])
def test_bad_values_are_refused_when_settings_are_read(make_settings, overrides, words) -> None:
    with pytest.raises(ConfigError, match=words):
        make_settings(**overrides)


@pytest.mark.parametrize("overrides, words", [
    ({"federated.client_dp": "fixed", "federated.client_noise_multiplier": 0.0}, "infinite"),
    ({"federated.min_clients": 11}, "more than the 10 clients"),
    ({"model.kind": "pop"}, "popularity"),
])
def test_inconsistent_settings_fail_before_anything_starts(make_settings, overrides, words) -> None:
    with pytest.raises(ConfigError, match=words):
        check_settings(make_settings(**overrides))


def test_run_config_carries_every_knob(make_settings, tmp_path) -> None:
    from flwr.common.config import parse_config_args

    from recops.config import FederatedSettings

    s = make_settings(**{"federated.strategy": "fedprox", "federated.rounds": 7,
                         "privacy.enabled": True})
    cfg = run_config_from_settings(s, tmp_path)
    parsed = parse_config_args([format_run_config(cfg)])  # what `flwr run --run-config` sees
    assert parsed["strategy"] == "fedprox" and parsed["rounds"] == 7
    assert parsed["sample-dp"] is True and parsed["run-dir"] == str(tmp_path.resolve())
    # Every federated setting travels, under its kebab-case name.
    for name in FederatedSettings.model_fields:
        assert parsed[name.replace("_", "-")] == getattr(s.federated, name), name
    assert set(RUN_CONFIG_KEYS) | {"run-dir", "round-timeout", "local-batch-size"} == set(parsed)


def test_pyproject_run_config_defaults_are_the_ones_the_settings_generate() -> None:
    """Flower reads its run-config defaults from pyproject: they must be the settings' own."""
    from federated.app_config import default_run_config, rewrite
    from recops.config import load_settings
    from recops.paths import CHECKOUT

    text = (CHECKOUT / "pyproject.toml").read_text()
    app_cfg = tomllib.loads(text)["tool"]["flwr"]["app"]["config"]
    assert app_cfg == default_run_config()
    plain = load_settings()
    for key, dotted in RUN_CONFIG_KEYS.items():
        section, name = dotted.split(".")
        assert app_cfg[key] == getattr(getattr(plain, section), name), key
    # Rewriting it from the settings changes nothing (comments included): it is not stale.
    assert rewrite(text) == text, "run `python -m federated.app_config`"


def test_the_generated_table_follows_a_changed_default(monkeypatch) -> None:
    from federated.app_config import rewrite
    from recops.config import FederatedSettings
    from recops.paths import CHECKOUT

    monkeypatch.setattr(FederatedSettings.model_fields["rounds"], "default", 9)
    text = (CHECKOUT / "pyproject.toml").read_text()
    new = rewrite(text)
    assert new != text
    assert tomllib.loads(new)["tool"]["flwr"]["app"]["config"]["rounds"] == 9
    assert tomllib.loads(new)["tool"]["flwr"]["app"]["components"] == \
        tomllib.loads(text)["tool"]["flwr"]["app"]["components"]  # the rest is left alone


def test_local_batch_is_steps_matched_unless_set() -> None:
    from federated.common import local_batch_size

    assert local_batch_size(0, 64, 61, 610) == 6  # one local epoch ~ as many steps as central
    assert local_batch_size(0, 64, 1, 610) == 1
    assert local_batch_size(16, 64, 61, 610) == 16
