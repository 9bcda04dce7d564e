"""The environment of the processes recops starts (airflow, feast, bentoml, flwr)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recops.config import Settings


# The name of the BentoML service (serving/service.py), which its config section is keyed by.
BENTO_SERVICE = "recops"

PHONE_HOME_OFF = {
    "GX_ANALYTICS_ENABLED": "false",
    "BENTOML_DO_NOT_TRACK": "true",
    "FEAST_USAGE": "False",
    "RAY_USAGE_STATS_ENABLED": "0",
    "SCARF_ANALYTICS": "false",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}


def child_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for the processes recops starts (airflow, feast, bentoml, flwr).

    The resolved settings travel as a YAML file (RECOPS_CONFIG), so a child sees exactly
    what the parent saw; the framework homes all point under RECOPS_HOME.
    """
    p = settings.paths
    env = dict(os.environ if base is None else base)
    env = {k: v for k, v in env.items() if not k.startswith("RECOPS_")}
    env.update(PHONE_HOME_OFF)
    env.update(
        RECOPS_HOME=str(p.home),
        RECOPS_CONFIG=str(settings.save()),
        AIRFLOW_HOME=str(p.airflow_home),
        BENTOML_HOME=str(p.bentoml_home),
        FLWR_HOME=str(p.flwr_home),
        BENTOML_CONFIG_OVERRIDES=json.dumps(bentoml_config(settings)),
        **feast_env(settings),
    )
    return env


def bentoml_config(settings: Settings, service: str = BENTO_SERVICE) -> dict[str, Any]:
    """BentoML configuration from settings: the service's worker processes, its access log and
    OpenTelemetry spans per request (each a third of a worker's CPU at full load when on)."""
    s = settings.serving
    svc: dict[str, Any] = {"workers": s.workers or "cpu_count",
                           "logging": {"access": {"enabled": s.access_log}}}
    if not s.request_tracing:
        # Under the service: BentoML's v2 configuration drops a top-level "tracing" key without
        # a word, and its OpenTelemetry middleware then made a span per request (40% of the
        # constant-answer floor's throughput).
        svc["tracing"] = {"excluded_urls": [".*"]}  # the middleware passes every request
    return {"services": {service: svc}}


def feast_env(settings: Settings) -> dict[str, str]:
    """The ${ENV} values that feature_repo/feature_store.yaml and its definitions read."""
    p = settings.paths
    env = {
        "RECOPS_FEAST_PROJECT": settings.stores.feast_project,
        "RECOPS_FEAST_DATA": str(p.features),
        "RECOPS_FEAST_ONLINE": settings.stores.online,
        "RECOPS_FEAST_OFFLINE": settings.stores.offline,
        "RECOPS_FEAST_REDIS": settings.stores.redis_url,
        "RECOPS_SEQ_LEN": str(settings.model.max_len),
    }
    if settings.stores.postgres_dsn:
        env["RECOPS_FEAST_REGISTRY_DSN"] = settings.stores.postgres_dsn.get_secret_value()
    return env
