"""What `recops up` started and where: the platform's state file and its components' names."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recops.config import Settings
from recops.core.atomic import write_json
from recops.core.processes import ProcRecord, alive
from recops.errors import RecopsError

AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
SERVICE = "service"
COMPONENTS = (*AIRFLOW_COMPONENTS, SERVICE)
DAG_IDS = ("recops_pipeline", "recops_retrain", "recops_feedback_watch")
USER = "admin"  # the UI's one user (Airflow's SimpleAuthManager, role admin)
SERVICE_TARGET = "serving.service:Recommender"


def client_host(host: str) -> str:
    """The address a client on this machine uses to reach a server bound to ``host``."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


def _url(host: str, port: int) -> str:
    h = client_host(host)
    return f"http://[{h}]:{port}" if ":" in h else f"http://{h}:{port}"


@dataclass
class PlatformState:
    """What `up` started and where: the state file's content, and how to reach each part."""

    home: str
    airflow_host: str
    airflow_port: int
    service_host: str
    service_port: int
    password_file: str
    started_at: str
    procs: dict[str, ProcRecord] = field(default_factory=dict)
    healthy_after_s: float | None = None
    champion: str | None = None
    executor: str = "local"  # platform.executor when `up` started the platform
    celery_broker: str | None = None  # the workers' broker (this file is mode 0600)

    @property
    def ui_url(self) -> str:
        """The Airflow UI (the REST API is under ``api/v2``)."""
        return _url(self.airflow_host, self.airflow_port) + "/"

    @property
    def api_url(self) -> str:
        return self.ui_url + "api/v2"

    @property
    def service_url(self) -> str | None:
        """The BentoML service, or None when `up` did not start it (no champion)."""
        return _url(self.service_host, self.service_port) if SERVICE in self.procs else None

    def login(self) -> tuple[str, str]:
        """(user, password) of the Airflow UI and REST API."""
        return USER, read_password(Path(self.password_file))

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "procs"}
        out["procs"] = {n: r.to_dict() for n, r in self.procs.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlatformState:
        fields = {k: v for k, v in data.items() if k != "procs"}
        return cls(**fields, procs={n: ProcRecord.from_dict(r)
                                    for n, r in data.get("procs", {}).items()})


def state_path(settings: Settings) -> Path:
    return settings.paths.platform / "state.json"


def read_state(settings: Settings) -> PlatformState | None:
    """The platform's state file, or None when `up` has not run (or `down` removed it)."""
    path = state_path(settings)
    if not path.exists():
        return None
    try:
        return PlatformState.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError) as exc:
        raise RecopsError(f"platform state file {path} is unreadable ({exc}): stop what it "
                          "started by hand if anything runs, then delete the file") from None


def platform_state(settings: Settings) -> PlatformState | None:
    """The running platform (URLs, login, PIDs) for programs and tests; None when not up."""
    state = read_state(settings)
    if state is None or not any(alive(r) for r in state.procs.values()):
        return None
    return state


def write_state(settings: Settings, state: PlatformState) -> None:
    path = write_json(state_path(settings), state.to_dict(), sync_dir=True)
    path.chmod(0o600)


def read_password(path: Path) -> str:
    try:
        return str(json.loads(path.read_text())[USER])
    except (OSError, ValueError, KeyError) as exc:
        raise RecopsError(f"cannot read the UI password from {path} ({exc}): run "
                          "`recops down`, delete the file and `recops up` again") from None
