"""The DAGs' Params come from the settings fields they set: type, choices, bounds, description."""

from __future__ import annotations

from pathlib import Path

import pytest

from recops.config import load_settings
from recops.orchestration.params import (
    PARAM_SETTINGS,
    PIPELINE_PARAMS,
    RETRAIN_PARAMS,
    dag_params,
    settings_from_params,
)


def test_pipeline_params_are_generated_from_the_settings_fields() -> None:
    params = dag_params(PIPELINE_PARAMS)
    assert set(params) == set(PIPELINE_PARAMS) <= set(PARAM_SETTINGS)
    dataset = params["dataset"].schema
    assert dataset["type"] == ["null", "string"]
    assert dataset["enum"] == [None, "ml-latest-small", "ml-100k", "ml-1m", "ml-25m", "synthetic",
                               "files"]
    for source in ("events", "items", "users"):  # a team's own files, from the trigger form
        assert params[source].value is None and "string" in params[source].schema["type"]
    description = params["dataset"].description
    assert "data.dataset" in description and "MovieLens" in description
    assert params["dataset"].value is None  # empty: as configured
    assert params["clients"].schema["minimum"] == 2
    assert params["target_epsilon"].schema["exclusiveMinimum"] == 0
    assert "train.epochs and privacy.dp_epochs" in params["epochs"].description


def test_a_param_validates_like_its_setting() -> None:
    from airflow.sdk.definitions.param import ParamsDict

    params = ParamsDict(dag_params(RETRAIN_PARAMS))
    params["replay_fraction"] = 0.5
    params["finetune_epochs"] = None
    params.validate()
    with pytest.raises(ValueError):
        params["replay_fraction"] = 1.5
    with pytest.raises(ValueError):
        params["finetune_epochs"] = 0


def test_retrain_params_reach_the_retrain_settings(home: Path) -> None:
    s = settings_from_params({"replay_fraction": 0.6, "finetune_epochs": None})
    assert (s.retrain.replay_fraction, s.retrain.finetune_epochs) == (0.6, None)
    assert settings_from_params({}).retrain.replay_fraction == 0.3  # the setting's default


def test_configured_params_default_to_the_configured_value(home: Path) -> None:
    configured = load_settings(overrides={"platform.min_new_events": 7})
    (param,) = dag_params(("min_events",), configured).values()
    assert param.value == 7 and param.schema["type"] == "integer"
    assert "platform.min_new_events" in param.description


def test_the_train_tasks_can_run_data_parallel(home: Path) -> None:
    """Both DAGs offer nproc_per_node (train.distributed.nproc_per_node), checked like it."""
    from recops.errors import ConfigError

    for names in (PIPELINE_PARAMS, RETRAIN_PARAMS):
        param = dag_params(names)["nproc_per_node"]
        assert param.schema["minimum"] == 1 and param.schema["type"] == ["null", "integer"]
        assert "train.distributed.nproc_per_node" in param.description
    s = settings_from_params({"nproc_per_node": 2})
    assert s.train.distributed.nproc_per_node == 2
    assert settings_from_params({}).train.distributed.nproc_per_node == 1
    configured = load_settings(overrides={"train.distributed.nproc_per_node": 3})
    assert dag_params(("nproc_per_node",), configured)["nproc_per_node"].value == 3
    with pytest.raises(ConfigError, match="train.distributed.nproc_per_node"):
        settings_from_params({"nproc_per_node": 0})
