"""One typed settings object, read once at the boundary and passed down.

Precedence, highest first: explicit overrides (CLI flags) > ``RECOPS_*`` environment
(nested with ``__``, e.g. ``RECOPS_TRAIN__EPOCHS=3``) > a YAML file (``--config`` or
``RECOPS_CONFIG``) > the defaults below. Bad values raise :class:`ConfigError` naming the setting.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from recops.config_base import Section, redact_url
from recops.config_federated import FederatedSettings as FederatedSettings  # re-exported
from recops.config_serving import FeedbackSettings as FeedbackSettings  # re-exported
from recops.config_serving import ServingSettings as ServingSettings
from recops.config_training import ModelKind as ModelKind  # re-exported
from recops.config_training import ModelSettings as ModelSettings
from recops.config_training import PrivacySettings as PrivacySettings
from recops.config_training import RetrainSettings as RetrainSettings
from recops.config_training import TrainSettings as TrainSettings
from recops.errors import ConfigError
from recops.paths import CHECKOUT, Paths
from recops.schema import EVENT_TYPES, METRIC_KEYS

DEFAULT_HOME = CHECKOUT / ".recops"

Dataset = Literal["ml-latest-small", "ml-100k", "ml-1m", "ml-25m", "synthetic", "files"]
TimestampUnit = Literal["auto", "s", "ms", "iso"]


class SyntheticSettings(Section):
    n_users: int = Field(1_000, ge=2)
    n_items: int = Field(2_000, ge=10)
    n_interactions: int = Field(100_000, ge=10)
    n_clusters: int = Field(8, ge=1)
    days: int = Field(60, ge=1)
    start: datetime = datetime(2026, 1, 1)


class DataSettings(Section):
    dataset: Dataset = Field("ml-latest-small", description=(
        "The dataset to ingest: a MovieLens release by name, or the synthetic generator."))
    # A folder that holds the dataset folder (e.g. <root>/ml-latest-small/ratings.csv), or the
    # dataset folder itself. Unset: <home>/datasets, downloaded from GroupLens when absent.
    root: Path | None = None
    download: bool = True
    synthetic: SyntheticSettings = SyntheticSettings()
    # A team's own files (docs/data.md, "Your own data"): data.dataset "files" reads these.
    events: str | None = Field(None, description=(
        "A team's events file (CSV, TSV, Parquet or JSON lines; a path or fsspec URL)."))
    items: str | None = Field(None, description="A team's catalogue file (items).")
    users: str | None = Field(None, description="A team's users file (optional).")
    columns: dict[str, str] = Field(default_factory=dict, description=(
        "The files' own column names for canonical ones, YOURS: CANONICAL "
        "(e.g. customer: user_id)."))
    item_attributes: list[str] = Field(default_factory=list, description=(
        "Catalogue columns that are categorical attributes (the other text columns are text)."))
    timestamp_unit: TimestampUnit = Field("auto", description=(
        "How event timestamps are written: s or ms since 1970, iso (ISO-8601 with a zone), "
        "or auto (numbers above 1e11 are milliseconds)."))

    @field_validator("root")
    @classmethod
    def _absolute_root(cls, value: Path | None) -> Path | None:
        # Airflow's workers run in folders of their own: a relative root would point elsewhere.
        return value.expanduser().absolute() if value is not None else None

    @field_validator("events", "items", "users")
    @classmethod
    def _absolute_source(cls, value: str | None) -> str | None:
        # Same reason; a URL (file://, s3://, postgresql://) is left as it is.
        if value is None or "://" in value:
            return value
        if not value.strip():
            raise ValueError("is empty: give a path or a URL")
        return str(Path(value).expanduser().absolute())

    @model_validator(mode="after")
    def _files_need_events(self) -> DataSettings:
        given = self.events is not None or self.items is not None
        if given and "dataset" not in self.model_fields_set:
            object.__setattr__(self, "dataset", "files")  # --events alone means "my files"
        if self.dataset == "files" and not given:
            raise ValueError("data.dataset 'files' needs data.events and data.items "
                             "(recops run --events PATH --items PATH)")
        if self.dataset != "files" and (self.events or self.items or self.users):
            raise ValueError(f"data.events/items/users are read with data.dataset 'files', "
                             f"not {self.dataset!r}")
        return self


class StoreSettings(Section):
    online: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = "127.0.0.1:6379"
    registry: Literal["file", "postgres"] = "file"
    # Feast's offline store over the same Parquet sources, both embedded (no server): "duckdb"
    # (point-in-time joins in DuckDB) or "file" (Feast's dask store: 10-20x slower on our
    # list-valued sequence columns, measured in benchmarks/bench_features.py; docs/features.md).
    offline: Literal["duckdb", "file"] = "duckdb"
    # e.g. postgresql+psycopg://user@127.0.0.1:5432/recops ; never committed, read from env/YAML.
    postgres_dsn: SecretStr | None = None
    airflow_db: Literal["sqlite", "postgres"] = "sqlite"
    # Feast project name: keys in a shared Redis are namespaced by it.
    feast_project: str = Field("recops", pattern=r"^[a-z][a-z0-9_]*$")

    @model_validator(mode="after")
    def _dsn_when_postgres(self) -> StoreSettings:
        if (self.registry == "postgres" or self.airflow_db == "postgres") and not self.postgres_dsn:
            raise ValueError("stores.postgres_dsn is required when a store is 'postgres'")
        return self


class ValidationSettings(Section):
    rating_min: float = 0.5
    rating_max: float = 5.0
    timestamp_floor: datetime = datetime(1995, 1, 1)
    # A batch's row count must lie within [low, high] x the last accepted batch of its table.
    volume_low: float = Field(0.1, gt=0)
    volume_high: float = Field(5.0, gt=0)
    drift_psi_threshold: float = Field(0.25, gt=0)
    # A staged table of events with more rows is validated this many rows at a time (memory
    # stays bounded; validation/batches.py, docs/data.md).
    batch_rows: int = Field(500_000, ge=1)
    # Checks listed here fail the batch; the others only warn.
    blocking: list[str] = ["schema", "not_null", "range", "event_type", "timestamps",
                           "unique", "referential", "volume"]


class GateSettings(Section):
    # Also what early stopping watches on the validation split: one of schema.METRIC_KEYS.
    metric: str = "ndcg@10"
    tolerance: float = Field(0.005, ge=0)
    floor: float = Field(0.0, ge=0)
    max_segment_regression: float = Field(0.2, ge=0)
    # A challenger must beat popularity scored on the same test users by this relative margin
    # (0.1 = 10% better); "none" turns the rule off (e.g. to promote a popularity model).
    baseline: Literal["pop", "none"] = "pop"
    baseline_margin: float = Field(0.0, ge=0)
    # Off-policy check (docs/policies.md), off by default: serving.policy's click rate,
    # estimated by DR from the impression and feedback logs (policy_events count as clicks),
    # must have its 95% upper bound at least the logged lists' observed click rate minus
    # policy_tolerance, on at least policy_min_lists lists.
    policy_check: bool = False
    policy_tolerance: float = Field(0.0, ge=0, le=1)
    policy_min_lists: int = Field(1000, ge=1)
    policy_events: list[Literal[EVENT_TYPES]] = Field(  # type: ignore[valid-type]
        ["click"], min_length=1)

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in METRIC_KEYS:
            raise ValueError(f"must be one of {list(METRIC_KEYS)}")
        return value


class PlatformSettings(Section):
    """`recops up`: Airflow's api-server (UI + REST API), how long to wait for health, and
    how often the running platform looks for new feedback."""

    host: str = "127.0.0.1"  # loopback: the UI's login is a generated password, not SSO
    airflow_port: int = Field(8080, ge=1, le=65535)
    # LocalExecutor task slots: two cores are shared with the service and the Airflow daemons.
    parallelism: int = Field(2, ge=1, le=64)
    start_timeout: float = Field(600.0, gt=0)
    # recops_feedback_watch: how often the scheduler runs it, and how many new feedback events
    # make it fire the recops_feedback asset (and so a recops_retrain run). Both are read when
    # the DAG file is parsed (the scheduler's RECOPS_CONFIG), so they take effect on `recops up`.
    feedback_watch_minutes: float = Field(5.0, gt=0, le=24 * 60)
    min_new_events: int = Field(100, ge=1, description=(
        "New feedback events that trigger a retrain."))
    # "local": the scheduler runs tasks in LocalExecutor processes of its own; "celery": it
    # queues them on celery_broker for `airflow celery worker` processes (celery_workers of
    # them, celery_concurrency task slots each), with Celery's results in stores.postgres_dsn.
    executor: Literal["local", "celery"] = "local"
    celery_broker: SecretStr = SecretStr("redis://127.0.0.1:6379/1")  # db 0 holds Feast's keys
    celery_workers: int = Field(2, ge=1, le=32)
    celery_concurrency: int = Field(1, ge=1, le=64)

    @field_validator("celery_broker")
    @classmethod
    def _broker_scheme(cls, value: SecretStr) -> SecretStr:
        scheme = value.get_secret_value().partition("://")[0]
        if scheme not in ("redis", "rediss", "amqp", "amqps"):
            raise ValueError(f"broker scheme {scheme!r} is not one recops runs Celery on: give "
                             "redis://host:port/db or amqp://user:password@host:port/vhost")
        return value


class Settings(BaseSettings):
    """All of recops' settings. Build with :func:`load_settings`, not directly."""

    model_config = SettingsConfigDict(
        env_prefix="RECOPS_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    home: Path = DEFAULT_HOME
    seed: int = 42
    data: DataSettings = DataSettings()
    stores: StoreSettings = StoreSettings()
    model: ModelSettings = ModelSettings()
    train: TrainSettings = TrainSettings()
    privacy: PrivacySettings = PrivacySettings()
    federated: FederatedSettings = FederatedSettings()
    retrain: RetrainSettings = RetrainSettings()
    validation: ValidationSettings = ValidationSettings()
    gate: GateSettings = GateSettings()
    serving: ServingSettings = ServingSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    platform: PlatformSettings = PlatformSettings()

    @model_validator(mode="after")
    def _feedback_dsn(self) -> Settings:
        if self.feedback.backend == "postgres" and not self.stores.postgres_dsn:
            raise ValueError("feedback.backend 'postgres' needs stores.postgres_dsn "
                             "(e.g. postgresql+psycopg://user@127.0.0.1:5432/recops)")
        return self

    @model_validator(mode="after")
    def _celery_on_postgres(self) -> Settings:
        if self.platform.executor == "celery" and self.stores.airflow_db != "postgres":
            raise ValueError("platform.executor 'celery' needs stores.airflow_db 'postgres' "
                             "(with stores.postgres_dsn): Celery workers cannot share Airflow's "
                             "SQLite file, and Celery's results go to the same PostgreSQL")
        return self

    @model_validator(mode="after")
    def _text_item_side(self) -> Settings:
        if (self.privacy.enabled and self.privacy.item_side == "text"
                and not (self.model.kind == "sasrec" and self.model.text_init)):
            raise ValueError("privacy.item_side 'text' keeps the items' text-derived "
                             "start: it needs model.kind 'sasrec' with model.text_init true")
        return self

    # Filled by load_settings; pydantic-settings reads it through settings_customise_sources.
    _yaml_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._yaml_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=cls._yaml_file))
        return tuple(sources)

    @property
    def paths(self) -> Paths:
        return Paths(self.home.expanduser().resolve())

    def to_yaml(self) -> str:
        """The resolved settings as YAML (secrets masked), for reports and model metadata."""
        text: str = yaml.safe_dump(self.public_dict(), sort_keys=True)
        return text

    def public_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = self.model_dump(mode="json")  # SecretStr dumps as '**********'
        for key in ("events", "items", "users"):  # a source may be a URL with a password
            if data["data"].get(key):
                data["data"][key] = redact_url(data["data"][key])
        return data

    def save(self, path: Path | None = None) -> Path:
        """Write the resolved settings (secrets included) for child processes; mode 0600."""
        path = path or self.paths.resolved_config
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.model_dump(mode="json")
        for section, key in (("stores", "postgres_dsn"), ("serving", "auth_token"),
                             ("platform", "celery_broker")):
            secret = getattr(getattr(self, section), key)
            data[section][key] = secret.get_secret_value() if secret else None
        path.write_text(yaml.safe_dump(data, sort_keys=True))
        path.chmod(0o600)
        return path


def libpq_dsn(dsn: SecretStr | str) -> str:
    """A settings DSN (SQLAlchemy style, postgresql+psycopg://) in the form libpq takes."""
    text = dsn.get_secret_value() if isinstance(dsn, SecretStr) else dsn
    return re.sub(r"^postgresql\+\w+://", "postgresql://", text, count=1)


def _nest(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """{'train.epochs': 3} -> {'train': {'epochs': 3}}; None values are dropped (flag not given)."""
    out: dict[str, Any] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _describe(err: ValidationError, yaml_file: Path | None) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "settings"
        env = "RECOPS_" + "__".join(str(p) for p in e["loc"]).upper()
        got = e.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"setting '{where}'{shown}: {e['msg']} [env {env}]")
    src = f"; YAML file {yaml_file}" if yaml_file else ""
    return "invalid configuration" + src + ": " + "; ".join(lines)


def load_settings(
    config_file: Path | str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read settings once: overrides > RECOPS_* env > YAML (file or RECOPS_CONFIG) > defaults."""
    env = os.environ
    yaml_path = Path(config_file) if config_file else (
        Path(env["RECOPS_CONFIG"]) if env.get("RECOPS_CONFIG") else None)
    if yaml_path is not None:
        if not yaml_path.is_file():
            raise ConfigError(f"config file {yaml_path} does not exist "
                              "(from --config or RECOPS_CONFIG)")
        try:
            parsed = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {yaml_path} is not valid YAML: {exc}") from exc
        if parsed is not None and not isinstance(parsed, dict):
            raise ConfigError(f"config file {yaml_path} must hold a mapping of settings, "
                              f"not {type(parsed).__name__}")
    Settings._yaml_file = yaml_path
    try:
        return Settings(**_nest(overrides or {}))
    except ValidationError as err:
        raise ConfigError(_describe(err, yaml_path)) from None
    finally:
        Settings._yaml_file = None
