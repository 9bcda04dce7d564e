"""What the ServerApp and ClientApp share: run folder, run config, the weights that travel."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from federated.cache import cached
from recops.config import FederatedSettings, Settings, load_settings
from recops.errors import ConfigError

if TYPE_CHECKING:  # imported at run time only where weights travel
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
    from torch import nn

FED_DIR = "federated"
SETTINGS_FILE = "settings.yaml"
INITIAL_STATE = "initial_state.pt"
FINAL_STATE = "final_state.pt"
ROUNDS_FILE = "federated_rounds.json"
SUMMARY_FILE = "summary.json"
DP_CLIENTS_FILE = "dp_clients.json"


def run_config_key(field: str) -> str:
    """A settings field's run-config key: its kebab-case name (``num_clients``: ``num-clients``)."""
    return field.replace("_", "-")


# Run-config key -> settings key: every FederatedSettings field, and sample-level DP. The runner
# passes them all from Settings, so `flwr run` and `recops federated` agree; their defaults in
# pyproject's [tool.flwr.app.config] are generated from the same fields (federated.app_config).
RUN_CONFIG_KEYS: dict[str, str] = {
    **{run_config_key(name): f"federated.{name}" for name in FederatedSettings.model_fields},
    "sample-dp": "privacy.enabled",
}
# Run-config keys with no settings counterpart, and their defaults.
EXTRA_KEYS: dict[str, str | float | int] = {"run-dir": "", "round-timeout": 600.0,
                                            "local-batch-size": 0}


# The settings sections of services (their addresses and secrets: the PostgreSQL DSN, the serving
# token, the Celery broker). The Flower apps use none of them, and every SuperNode reads the
# run's settings file: it gets their defaults.
SERVICE_SECTIONS = ("stores", "serving", "feedback", "platform")


def shareable_settings(settings: Settings) -> Settings:
    """``settings`` without the service sections: what the run's settings file may hold."""
    return settings.model_copy(update={name: type(getattr(settings, name))()
                                       for name in SERVICE_SECTIONS})


def run_config_from_settings(settings: Settings, run_dir: Path, *, round_timeout: float = 600.0,
                             local_batch_size: int = 0) -> dict[str, Any]:
    """The run config for one run: every federated knob plus the run folder.

    ``local_batch_size`` 0 means steps-matched (see :func:`local_batch_size`).
    """
    out: dict[str, Any] = {"run-dir": str(Path(run_dir).resolve()),
                           "round-timeout": float(round_timeout),
                           "local-batch-size": int(local_batch_size)}
    for key, dotted in RUN_CONFIG_KEYS.items():
        section, name = dotted.split(".")
        out[key] = getattr(getattr(settings, section), name)
    return out


def format_run_config(cfg: Mapping[str, Any]) -> str:
    """``flwr run --run-config`` syntax: space-separated TOML assignments."""
    parts = []
    for k, v in cfg.items():
        if isinstance(v, bool):
            parts.append(f"{k}={'true' if v else 'false'}")
        elif isinstance(v, str):
            parts.append(f'{k}="{v}"')
        else:
            parts.append(f"{k}={v}")
    return " ".join(parts)


def run_dir_of(run_config: Mapping[str, Any]) -> Path:
    raw = str(run_config.get("run-dir", "") or "")
    if not raw:
        raise ConfigError("run config 'run-dir' is empty: start runs with `recops federated "
                          "--engine ...` or pass --run-config 'run-dir=\"<folder>\"'")
    path = Path(raw)
    if not (path / FED_DIR / SETTINGS_FILE).is_file():
        raise ConfigError(f"run-dir {path} holds no {FED_DIR}/{SETTINGS_FILE}: it was not "
                          "prepared by federated.runner")
    return path


def settings_for_run(run_config: Mapping[str, Any]) -> tuple[Path, Settings]:
    """The run folder and the Settings the runner saved there, with the run config applied."""
    run_dir = run_dir_of(run_config)
    overrides = {dotted: run_config[key] for key, dotted in RUN_CONFIG_KEYS.items()
                 if key in run_config}

    def parse(path: Path) -> Settings:
        return load_settings(path, overrides)

    # Parsed once per process and run config (a simulation actor serves many clients); each
    # caller gets its own copy, since clients adjust e.g. the batch size.
    settings = cached(run_dir / FED_DIR / SETTINGS_FILE, parse, tuple(sorted(
        (k, str(v)) for k, v in overrides.items())))
    return run_dir, settings.model_copy(deep=True)


def local_batch_size(configured: int, batch_size: int, client_users: int,
                     total_users: int) -> int:
    """The batch size a client trains with.

    ``configured`` > 0 is used as is. 0 (the default) is *steps-matched*: the client takes
    train.batch_size × its share of all users, so one local epoch makes as many optimizer steps
    as one centralised epoch, and averaging the clients' steps resembles a centralised step over
    the union of their batches. With train.batch_size per client, a client of 60 users and
    batch 64 would take one step per round and FedAvg would fall far behind at equal epochs.
    """
    if configured > 0:
        return configured
    return max(1, round(batch_size * client_users / max(total_users, 1)))


def trainable_names(model: nn.Module) -> list[str]:
    """Names of the tensors that travel: trainable parameters only.

    Buffers (e.g. SASRec's frozen item text vectors) stay on each side, loaded once from the
    initial state, so they are neither re-sent every round nor noised/averaged.
    """
    return [n for n, p in model.named_parameters() if p.requires_grad]


def arrays_from_model(model: nn.Module) -> ArrayRecord:
    from flwr.app import ArrayRecord

    state = model.state_dict()
    return ArrayRecord({n: state[n].detach().cpu() for n in trainable_names(model)})


def load_arrays(model: nn.Module, arrays: ArrayRecord | ConfigRecord | MetricRecord) -> None:
    """Copy the travelling tensors into ``model`` (its buffers stay as they are).

    ``arrays`` is a message's record as ``RecordDict[key]`` types it (any kind of record); only
    an ``ArrayRecord`` holds weights.
    """
    from flwr.app import ArrayRecord

    if not isinstance(arrays, ArrayRecord):
        raise ValueError(f"weights must come as an ArrayRecord, got a {type(arrays).__name__}")
    incoming = arrays.to_torch_state_dict()
    expected = set(trainable_names(model))
    if set(incoming) != expected:
        missing, extra = sorted(expected - set(incoming)), sorted(set(incoming) - expected)
        raise ValueError(f"weights do not match the model: missing {missing[:5]}, "
                         f"unexpected {extra[:5]}")
    model.load_state_dict(incoming, strict=False)
