"""The DAGs' Params: each a settings key, its Airflow ``Param`` generated from the settings field
(type, choices, bounds, description), and the settings a task runs with once they are applied.

Light on purpose: the DAG files import it when they are parsed (settings only, no framework).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from recops.config import Settings, load_settings
from recops.errors import ConfigError

# Param (also a `recops run` conf key) -> settings key(s). None means "as configured".
PARAM_SETTINGS: dict[str, str | tuple[str, ...]] = {
    "dataset": "data.dataset",
    "events": "data.events",
    "items": "data.items",
    "users": "data.users",
    "columns": "data.columns",
    "item_attributes": "data.item_attributes",
    "timestamp_unit": "data.timestamp_unit",
    "mode": "train.mode",
    "dp": "privacy.enabled",
    "budget_epsilon": "privacy.budget_epsilon",
    "target_epsilon": "privacy.target_epsilon",
    "epochs": ("train.epochs", "privacy.dp_epochs"),  # with DP too: the epochs asked for
    "federated_engine": "federated.engine",
    "clients": "federated.num_clients",
    "rounds": "federated.rounds",
    "replay_fraction": "retrain.replay_fraction",
    "finetune_epochs": "retrain.finetune_epochs",
    "min_events": "platform.min_new_events",
    "nproc_per_node": "train.distributed.nproc_per_node",
}
# Which Params each DAG offers.
PIPELINE_PARAMS = ("dataset", "events", "items", "users", "columns", "item_attributes",
                   "timestamp_unit", "mode", "dp", "target_epsilon", "budget_epsilon", "epochs",
                   "federated_engine", "clients", "rounds", "nproc_per_node")
RETRAIN_PARAMS = ("mode", "dp", "budget_epsilon", "replay_fraction", "finetune_epochs",
                  "nproc_per_node")
WATCH_PARAMS = ("min_events",)

# JSON-schema keywords of a field that an Airflow Param keeps.
_KEYWORDS = ("type", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
             "pattern", "minLength", "maxLength")


def _keys(name: str) -> tuple[str, ...]:
    keys = PARAM_SETTINGS[name]
    return (keys,) if isinstance(keys, str) else keys


def field_schema(key: str) -> tuple[dict[str, Any], str]:
    """A settings key's JSON schema (its non-null form: type, enum, bounds) and description."""
    *sections, name = key.split(".")
    model: Any = Settings
    for section in sections:  # nested sections: train.distributed.nproc_per_node
        model = model.model_fields[section].annotation
    prop = model.model_json_schema()["properties"][name]
    (value,) = [b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
    schema = {k: v for k, v in value.items() if k in _KEYWORDS}
    return schema, str(prop.get("description", ""))


def dag_params(names: Iterable[str], configured: Settings | None = None) -> dict[str, Any]:
    """Airflow Params for ``names``, from their settings fields.

    Without ``configured``, a Param is empty by default: the run uses the settings as configured
    (what the task's process reads), and a value given overrides them. With ``configured`` (the
    settings the DAG file is parsed with), each Param's default is the configured value.
    """
    from airflow.sdk import Param

    out: dict[str, Any] = {}
    for name in names:
        key = _keys(name)[0]
        schema, description = field_schema(key)
        if configured is not None:
            value: Any = configured
            for part in key.split("."):
                value = getattr(value, part)
            out[name] = Param(value, description=f"{description} ({key})", **schema)
            continue
        schema["type"] = ["null", schema["type"]]
        if "enum" in schema:
            schema["enum"] = [None, *schema["enum"]]
        out[name] = Param(None, description=f"{description} (empty: as configured, "
                                            f"{' and '.join(_keys(name))})", **schema)
    return out


def settings_from_params(params: Mapping[str, Any] | None) -> Settings:
    """Settings for an Airflow task: this process's settings (RECOPS_CONFIG) with Params applied."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(PARAM_SETTINGS))
    if unknown:
        raise ConfigError(f"unknown pipeline param(s) {unknown}; expected {sorted(PARAM_SETTINGS)}")
    overrides: dict[str, Any] = {}
    for name, value in params.items():
        for key in _keys(name):
            if value is not None:
                overrides[key] = value
    return load_settings(overrides=overrides)
