"""Settings: precedence (CLI > env > YAML > default) and bad values that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from recops.config import load_settings
from recops.environment import child_env
from recops.errors import ConfigError


def _yaml(tmp_path: Path, data: object, name: str = "recops.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def test_defaults(home: Path) -> None:
    s = load_settings()
    assert s.train.epochs == 50 and s.data.dataset == "ml-latest-small"
    assert s.home == home  # the autouse fixture's RECOPS_HOME
    assert s.paths.lake == home.resolve() / "lake"
    assert s.paths.audit_log == home.resolve() / "audit" / "audit.jsonl"


def test_precedence_cli_over_env_over_yaml_over_default(tmp_path: Path, monkeypatch) -> None:
    cfg = _yaml(tmp_path, {"train": {"epochs": 5, "lr": 0.01, "batch_size": 64},
                           "data": {"synthetic": {"n_users": 77}}, "seed": 1})
    s = load_settings(cfg)
    assert (s.train.epochs, s.train.lr, s.train.batch_size, s.seed) == (5, 0.01, 64, 1)
    assert s.data.synthetic.n_users == 77 and s.data.synthetic.n_items == 2000  # merged, nested

    monkeypatch.setenv("RECOPS_TRAIN__EPOCHS", "7")
    monkeypatch.setenv("RECOPS_SEED", "2")
    s = load_settings(cfg)
    assert (s.train.epochs, s.seed, s.train.lr) == (7, 2, 0.01)  # env beats YAML per key

    s = load_settings(cfg, {"train.epochs": 9, "train.lr": None})
    assert s.train.epochs == 9  # CLI flag beats env
    assert s.train.lr == 0.01  # a flag not given (None) leaves the lower layers alone
    assert s.seed == 2


def test_yaml_from_recops_config_env(tmp_path: Path, monkeypatch) -> None:
    cfg = _yaml(tmp_path, {"data": {"dataset": "synthetic"}})
    monkeypatch.setenv("RECOPS_CONFIG", str(cfg))
    assert load_settings().data.dataset == "synthetic"
    # An explicit --config wins over RECOPS_CONFIG.
    other = _yaml(tmp_path, {"data": {"dataset": "ml-1m"}}, "other.yaml")
    assert load_settings(other).data.dataset == "ml-1m"


def test_child_env_carries_resolved_settings(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RECOPS_TRAIN__EPOCHS", "4")
    s = load_settings(overrides={"seed": 11})
    env = child_env(s, base={"PATH": "/bin", "RECOPS_TRAIN__EPOCHS": "99"})
    assert "RECOPS_TRAIN__EPOCHS" not in env  # the parent's resolved view travels as YAML
    assert env["AIRFLOW_HOME"].startswith(str(s.paths.home))
    monkeypatch.delenv("RECOPS_TRAIN__EPOCHS")
    again = load_settings(env["RECOPS_CONFIG"])
    assert (again.train.epochs, again.seed) == (4, 11)
    assert Path(env["RECOPS_CONFIG"]).stat().st_mode & 0o077 == 0  # secrets inside: 0600


BAD_YAML = {
    "type": ({"train": {"epochs": "lots"}}, "train.epochs"),
    "range": ({"model": {"dropout": 1.5}}, "model.dropout"),
    "unknown key": ({"train": {"epochz": 3}}, "train.epochz"),
    "unknown section": ({"trian": {"epochs": 3}}, "trian"),
    "literal": ({"train": {"mode": "distributed"}}, "train.mode"),
    "cross-field": ({"model": {"d_model": 30, "n_heads": 4}}, "model.n_heads"),
    "postgres without dsn": ({"stores": {"registry": "postgres"}}, "stores.postgres_dsn"),
    "offline store": ({"stores": {"offline": "parquet"}}, "stores.offline"),
    "federated engine": ({"federated": {"engine": "cloud"}}, "federated.engine"),
}


@pytest.mark.parametrize("case", list(BAD_YAML))
def test_bad_yaml_values_name_the_setting_and_file(tmp_path: Path, case: str) -> None:
    data, setting = BAD_YAML[case]
    cfg = _yaml(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert setting in str(err.value) and str(cfg) in str(err.value), str(err.value)


@pytest.mark.parametrize("var, value, setting", [
    ("RECOPS_TRAIN__BATCH_SIZE", "0", "train.batch_size"),
    ("RECOPS_PRIVACY__TARGET_EPSILON", "-1", "privacy.target_epsilon"),
    ("RECOPS_DATA__DOWNLOAD", "perhaps", "data.download"),
    ("RECOPS_SERVING__PORT", "70000", "serving.port"),
    ("RECOPS_STORES__OFFLINE", "bigquery", "stores.offline"),
    ("RECOPS_GATE__METRIC", "auc", "gate.metric"),
    ("RECOPS_GATE__BASELINE", "mf", "gate.baseline"),
    ("RECOPS_TRAIN__CANDIDATES", '["sasrec", "gru"]', "train.candidates"),
    ("RECOPS_GATE__BASELINE_MARGIN", "-0.1", "gate.baseline_margin"),
])
def test_bad_env_values_name_the_setting_and_variable(monkeypatch, var, value, setting) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert setting in str(err.value) and var in str(err.value)


def test_bad_cli_override_names_the_setting(home: Path) -> None:
    with pytest.raises(ConfigError, match=r"setting 'data\.dataset' \(got 'ml-7b'\)"):
        load_settings(overrides={"data.dataset": "ml-7b"})


def test_bad_yaml_syntax(tmp_path: Path) -> None:
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("train:\n  epochs: [3\n")
    with pytest.raises(ConfigError, match="not valid YAML") as err:
        load_settings(cfg)
    assert str(cfg) in str(err.value)


def test_yaml_not_a_mapping(tmp_path: Path) -> None:
    cfg = tmp_path / "list.yaml"
    cfg.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_settings(cfg)


def test_missing_config_file(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
    monkeypatch.setenv("RECOPS_CONFIG", str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigError, match="gone.yaml does not exist"):
        load_settings()


def test_empty_yaml_is_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "empty.yaml"
    cfg.write_text("")
    assert load_settings(cfg).train.epochs == 50


def test_secrets_are_masked_in_public_dict(monkeypatch) -> None:
    monkeypatch.setenv("RECOPS_STORES__POSTGRES_DSN", "postgresql://u:hunter2@h/db")
    s = load_settings()
    assert "hunter2" not in s.to_yaml() and "hunter2" not in str(s.public_dict())
    assert s.stores.postgres_dsn.get_secret_value().endswith("@h/db")


@pytest.mark.parametrize("old, new, value", [
    ("serving.epsilon", "serving.explore_epsilon", 0.25),
    ("privacy.epochs", "privacy.dp_epochs", 4),
    ("privacy.lr", "privacy.dp_lr", 0.05),
])
def test_a_renamed_setting_is_read_under_its_old_name_with_a_warning(
        tmp_path: Path, monkeypatch, old: str, new: str, value: float) -> None:
    from recops.config_base import RenamedSettingWarning

    section, old_key = old.split(".")
    new_key = new.split(".")[1]
    expected = load_settings(overrides={new: value})
    assert getattr(getattr(expected, section), new_key) == value  # the new name works
    with pytest.warns(RenamedSettingWarning, match=f"{old} is renamed {new}"):
        from_flag = load_settings(overrides={old: value})
    with pytest.warns(RenamedSettingWarning, match=new):
        from_yaml = load_settings(_yaml(tmp_path, {section: {old_key: value}}))
    monkeypatch.setenv(f"RECOPS_{section.upper()}__{old_key.upper()}", str(value))
    with pytest.warns(RenamedSettingWarning, match=new):
        from_env = load_settings()
    for s in (from_flag, from_yaml, from_env):
        assert s.public_dict() == expected.public_dict()  # same effect, old name gone
        assert old_key not in s.public_dict()[section]


def test_an_old_and_a_new_name_that_disagree_are_refused() -> None:
    with pytest.raises(ConfigError, match="privacy.epochs is the old name of privacy.dp_epochs"
                                          r".*keep privacy.dp_epochs only"):
        load_settings(overrides={"privacy.epochs": 4, "privacy.dp_epochs": 5})
    with pytest.raises(ConfigError, match="serving.epsilon is the old name"):
        load_settings(overrides={"serving.epsilon": 0.2, "serving.explore_epsilon": 0.3})
