"""User-level differential privacy: what a release costs (ε accounting) and the privacy ledger.

The privacy unit is a *user*: DP-SGD (:mod:`recops.training.dp`) trains on one sample per user
(their whole sequence), so the (ε, δ) guarantee protects everything a user did, not one rating.
Spends compose over runs and retraining cycles on the same population by basic composition
(ε and δ add up) in an append-only JSONL ledger.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from recops.errors import AuditError, ConfigError, PrivacyBudgetExceeded, TrainingError

if TYPE_CHECKING:
    from recops.config import Settings

Unit = Literal["user", "client"]
UNITS = ("user", "client")
ACCOUNTANTS = ("rdp", "prv", "gdp")


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class PrivacySpend:
    """One DP release: what it cost, and every parameter needed to recompute that cost."""

    epsilon: float
    delta: float
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    epochs: int
    accountant: str
    unit: str = "user"
    mechanism: str = "dp-sgd"
    population: str = ""
    run_id: str | None = None
    time: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        problems = []
        if not (math.isfinite(self.epsilon) and self.epsilon >= 0):
            problems.append(f"epsilon={self.epsilon!r} must be a finite number >= 0")
        if not (0 <= self.delta < 1):
            problems.append(f"delta={self.delta!r} must lie in [0, 1)")
        if self.unit not in UNITS:
            problems.append(f"unit={self.unit!r} must be one of {UNITS}")
        if not self.population:
            problems.append("population must name the people charged (e.g. the dataset)")
        if self.steps < 0 or self.epochs < 0:
            problems.append(f"steps={self.steps}, epochs={self.epochs} must be >= 0")
        if problems:
            raise ValueError("invalid privacy spend: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrivacySpend:
        known = {f.name for f in fields(cls)}
        missing = [f.name for f in fields(cls) if f.name not in data and f.name not in
                   ("unit", "mechanism", "run_id", "time")]
        if missing:
            raise ValueError(f"missing field(s) {missing}")
        return cls(**{k: v for k, v in data.items() if k in known})


class PrivacyLedger:
    """Append-only JSONL of :class:`PrivacySpend`; sums the spend per population.

    A ledger that cannot be read refuses every question about the budget (it never reads as
    zero spent): privacy is accounted, not assumed.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def append(self, spend: PrivacySpend) -> None:
        """Write one spend durably (one O_APPEND write, fsync) before returning."""
        if not isinstance(spend, PrivacySpend):
            raise TypeError(f"expected PrivacySpend, got {type(spend).__name__}")
        line = (json.dumps(spend.to_dict(), sort_keys=True) + "\n").encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise AuditError(f"cannot write privacy ledger {self.path}: {exc}") from exc

    def entries(self, population: str | None = None) -> list[PrivacySpend]:
        """Every recorded spend (of one population when given), oldest first."""
        if not self.path.exists():
            return []
        out = []
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AuditError(f"cannot read privacy ledger {self.path}: {exc}") from exc
        for lineno, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                spend = PrivacySpend.from_dict(json.loads(raw))
            except (ValueError, TypeError) as exc:
                raise AuditError(f"privacy ledger {self.path} line {lineno} is malformed "
                                 f"({exc}); fix or restore the ledger before training") from None
            if population is None or spend.population == population:
                out.append(spend)
        return out

    def total(self, population: str) -> tuple[float, float]:
        """(ε, δ) spent on ``population`` so far, by basic composition (sums).

        Client-level spends on a population count too: a user sits in one client, so a
        client-level guarantee is at least as strong for that user, and adding it is
        conservative.
        """
        eps = delta = 0.0
        for spend in self.entries(population):
            eps += spend.epsilon
            delta += spend.delta
        return eps, delta

    def check_budget(self, settings: Settings, projected_eps: float,
                     population: str | None = None) -> float:
        """Raise PrivacyBudgetExceeded if spent + projected passes the budget; else ε left after."""
        population = population or default_population(settings)
        if not (math.isfinite(projected_eps) and projected_eps >= 0):
            raise TrainingError(f"projected epsilon {projected_eps!r} must be a finite number >= 0")
        budget = settings.privacy.budget_epsilon
        spent, spent_delta = self.total(population)
        if spent + projected_eps > budget + 1e-9:
            raise PrivacyBudgetExceeded(
                f"privacy budget for population '{population}' would be exceeded: spent "
                f"ε={spent:.3f} (δ={spent_delta:.2e}) over {len(self.entries(population))} run(s) "
                f"+ projected ε={projected_eps:.3f} = {spent + projected_eps:.3f} > budget "
                f"privacy.budget_epsilon={budget:g} (ledger {self.path}); lower "
                f"privacy.target_epsilon or raise the budget deliberately")
        return budget - spent - projected_eps


def default_population(settings: Settings) -> str:
    """The people a run is charged to: the dataset (synthetic data is keyed by its seed)."""
    name = settings.data.dataset
    return f"synthetic-seed{settings.seed}" if name == "synthetic" else name


def check_budget(settings: Settings, projected_eps: float, population: str | None = None) -> float:
    """:meth:`PrivacyLedger.check_budget` on the settings' ledger."""
    return PrivacyLedger(settings.paths.privacy_ledger).check_budget(
        settings, projected_eps, population)


def resolve_delta(settings: Settings, n_users: int) -> float:
    """δ from settings, default 1/(10·n); must be below 1/n or DP-SGD could leak a whole user."""
    if n_users < 2:
        raise TrainingError(f"DP training needs at least 2 users, got {n_users}")
    delta = settings.privacy.delta
    if delta is None:
        return 1.0 / (10 * n_users)
    if delta >= 1.0 / n_users:
        raise ConfigError(
            f"setting 'privacy.delta' ({delta:g}) must be below 1/number of users = "
            f"1/{n_users} = {1.0 / n_users:.3g}; leave it unset for 1/(10·n) = "
            f"{1.0 / (10 * n_users):.3g} [env RECOPS_PRIVACY__DELTA]")
    return delta


def epsilon_for(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                accountant: str = "rdp") -> float:
    """ε of ``steps`` Poisson-subsampled Gaussian steps, recomputed with Opacus' accountant."""
    from opacus.accountants import create_accountant

    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant {accountant!r} must be one of {ACCOUNTANTS}")
    if not noise_multiplier > 0:
        raise ValueError(f"noise_multiplier {noise_multiplier!r} must be > 0")
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate {sample_rate!r} must lie in (0, 1]")
    if not 0 < delta < 1:
        raise ValueError(f"delta {delta!r} must lie in (0, 1)")
    if steps < 0:
        raise ValueError(f"steps {steps!r} must be >= 0")
    if steps == 0:
        return 0.0
    acc = create_accountant(mechanism=accountant)
    acc.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    return float(acc.get_epsilon(delta=delta))


def noise_for(target_epsilon: float, sample_rate: float, steps: int, delta: float,
              accountant: str = "rdp", tolerance: float = 0.01) -> float:
    """The noise multiplier σ at which ``steps`` Poisson-subsampled Gaussian steps spend
    ``target_epsilon`` within ``tolerance`` (Opacus' calibration, the inverse of
    :func:`epsilon_for`).

    Raises ``ValueError`` when no σ reaches the target (Opacus' own message).
    """
    from opacus.accountants.utils import get_noise_multiplier

    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant {accountant!r} must be one of {ACCOUNTANTS}")
    return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                      sample_rate=sample_rate, steps=steps,
                                      accountant=accountant, epsilon_tolerance=tolerance))
