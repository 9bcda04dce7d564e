"""Where recops writes: the folder layout under one home, as ``settings.paths`` gives it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The source checkout (the folder holding recops/, dags/, feature_repo/, ...).
CHECKOUT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Paths:
    """Every place recops writes, all under one home."""

    home: Path

    def _p(self, *parts: str) -> Path:
        return self.home.joinpath(*parts)

    @property
    def datasets(self) -> Path:
        return self._p("datasets")

    @property
    def staging(self) -> Path:
        return self._p("staging")

    @property
    def lake(self) -> Path:
        return self._p("lake")

    @property
    def quarantine(self) -> Path:
        return self._p("quarantine")

    @property
    def features(self) -> Path:
        return self._p("features")

    @property
    def gx(self) -> Path:
        return self._p("gx")

    @property
    def runs(self) -> Path:
        return self._p("runs")

    @property
    def airflow_home(self) -> Path:
        return self._p("airflow")

    @property
    def bentoml_home(self) -> Path:
        return self._p("bentoml")

    @property
    def flwr_home(self) -> Path:
        return self._p("flwr")

    @property
    def audit_log(self) -> Path:
        return self._p("audit", "audit.jsonl")

    @property
    def privacy_ledger(self) -> Path:
        return self._p("audit", "privacy_ledger.jsonl")

    @property
    def feedback(self) -> Path:
        return self._p("feedback")

    @property
    def reports(self) -> Path:
        return self._p("reports")

    @property
    def platform(self) -> Path:
        """`recops up`'s state (PIDs, ports), the UI's password file and the components' logs."""
        return self._p("platform")

    @property
    def resolved_config(self) -> Path:
        return self._p("settings.yaml")
