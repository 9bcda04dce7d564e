"""User-level differential privacy: Opacus DP-SGD set-up, ε accounting and the privacy ledger.

The privacy unit is a *user*: the training loader yields one sample per user (their whole
sequence), so clipping bounds one user's influence on a step and the (ε, δ) guarantee protects
everything a user did, not one rating. Spends compose over runs and retraining cycles on the same
population by basic composition (ε and δ add up) in an append-only JSONL ledger.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from recops.errors import AuditError, ConfigError, PrivacyBudgetExceeded, TrainingError

if TYPE_CHECKING:  # torch and opacus are imported inside functions: nothing heavy at import
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

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


class _HooksSequenceLoss:
    """Per-sequence cross-entropy (mean over a user's labelled positions), then mean over users.

    The same per-user loss Opacus' ghost criterion computes with ``shape=``; a token-level
    mean over the whole batch would make one user's weight depend on the others' lengths, so
    adding/removing a user would move the others' clipped gradients too.
    """

    def __init__(self, ignore_index: int) -> None:
        self.ignore_index = ignore_index

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        if logits.dim() == 2:
            return F.cross_entropy(logits, targets, ignore_index=self.ignore_index)
        b, length, v = logits.shape
        per_pos = F.cross_entropy(logits.reshape(-1, v), targets.reshape(-1),
                                  ignore_index=self.ignore_index, reduction="none").view(b, length)
        valid = (targets != self.ignore_index).sum(dim=1).clamp(min=1)
        return (per_pos.sum(dim=1) / valid).mean()


@dataclass
class PrivateTraining:
    """The DP versions of model/optimizer/loader, and the figures needed to account for them.

    Train with ``loss = pt.loss(logits, targets); loss.backward(); pt.optimizer.step()``
    (``pt.optimizer.zero_grad()`` first); call :meth:`empty_step` for an empty Poisson batch.
    ``pt.base_model`` is the trained ``nn.Module`` itself (for state_dict and evaluation).
    """

    model: nn.Module
    optimizer: Any  # opacus DPOptimizer
    loader: DataLoader
    criterion: Any | None  # opacus DPLossFastGradientClipping in ghost mode, else None
    noise_multiplier: float
    sample_rate: float
    max_grad_norm: float
    delta: float
    target_epsilon: float
    planned_epochs: int
    accountant: str
    mechanism: str
    population: str
    engine: Any  # opacus PrivacyEngine
    ignore_index: int = 0
    _hooks_loss: _HooksSequenceLoss | None = None

    @property
    def base_model(self) -> nn.Module:
        return getattr(self.model, "_module", self.model)

    @property
    def steps_taken(self) -> int:
        return int(sum(n for _, _, n in self.engine.accountant.history))

    @property
    def steps_per_epoch(self) -> int:
        return len(self.loader)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> Any:
        """The training loss with one sample = one user; logits [B, L, V] or [B, V]."""
        if self.criterion is not None:
            if logits.dim() == 3:
                b, length, v = logits.shape
                return self.criterion(logits.reshape(-1, v), targets.reshape(-1),
                                      shape=(b, length))
            return self.criterion(logits, targets)
        if self._hooks_loss is None:
            self._hooks_loss = _HooksSequenceLoss(self.ignore_index)
        return self._hooks_loss(logits, targets)

    def empty_step(self) -> None:
        """A noise-only step for an empty Poisson batch.

        Skipping it would reveal that nobody was sampled; the accountant assumes every
        step releases a noised sum, so release one (of zero clipped gradients).
        """
        import torch

        self.optimizer.zero_grad(set_to_none=True)
        for p in self.optimizer.params:
            p.grad = torch.zeros_like(p)
            if self.criterion is None:
                p.grad_sample = p.new_zeros((0, *p.shape))
        self.optimizer.step()

    def projected_epsilon(self, epochs: int | None = None) -> float:
        """ε after ``epochs`` full epochs (default: the planned ones), for the budget check."""
        epochs = self.planned_epochs if epochs is None else epochs
        return epsilon_for(self.noise_multiplier, self.sample_rate, epochs * self.steps_per_epoch,
                           self.delta, self.accountant)

    def spend(self, steps: int | None = None, epochs: int | None = None, *,
              run_id: str | None = None) -> PrivacySpend:
        """What the steps actually taken cost, from the engine's accountant."""
        taken = self.steps_taken
        if steps is not None and steps != taken:
            raise TrainingError(f"{steps} steps reported but the privacy accountant recorded "
                                f"{taken}: every optimizer step must go through the DP optimizer")
        eps = float(self.engine.get_epsilon(self.delta)) if taken else 0.0
        if epochs is None:
            epochs = math.ceil(taken / self.steps_per_epoch) if self.steps_per_epoch else 0
        return PrivacySpend(
            epsilon=eps, delta=self.delta, noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm, sample_rate=self.sample_rate, steps=taken,
            epochs=epochs, accountant=self.accountant, unit="user", mechanism=self.mechanism,
            population=self.population, run_id=run_id)


def make_private(model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader,
                 settings: Settings, n_users: int, epochs: int, *,
                 noise_generator: torch.Generator | None = None,
                 population: str | None = None, ignore_index: int = 0) -> PrivateTraining:
    """User-level DP-SGD: noise calibrated to (privacy.target_epsilon, δ) over ``epochs``.

    ``loader`` must yield one sample per user (``len(loader.dataset) == n_users``); Opacus
    replaces it with a Poisson-sampling loader of the same expected batch size.
    ``privacy.clipping`` "ghost" uses ghost clipping (use ``pt.loss``), "flat" per-sample hooks.
    """
    import torch
    from opacus import PrivacyEngine
    from opacus.validators import ModuleValidator

    cfg = settings.privacy
    if epochs < 1:
        raise TrainingError(f"DP training needs epochs >= 1, got {epochs}")
    n_samples = len(loader.dataset)  # type: ignore[arg-type]
    if n_samples != n_users:
        raise TrainingError(
            f"user-level DP needs one training sample per user: the loader holds {n_samples} "
            f"samples for {n_users} users")
    delta = resolve_delta(settings, n_users)
    problems = ModuleValidator.validate(model, strict=False)
    if problems:
        raise TrainingError("the model cannot be trained with Opacus: "
                            + "; ".join(str(p) for p in problems))
    ghost = cfg.clipping == "ghost"
    criterion = torch.nn.CrossEntropyLoss(ignore_index=ignore_index)
    try:
        with warnings.catch_warnings():
            # Opacus warns that secure_mode is off: we accept a non-cryptographic RNG (a
            # floating-point side channel on the noise), as its own docs do outside production.
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            engine = PrivacyEngine(accountant=cfg.accountant)
            out = engine.make_private_with_epsilon(
                module=model, optimizer=optimizer, criterion=criterion, data_loader=loader,
                target_epsilon=cfg.target_epsilon, target_delta=delta, epochs=epochs,
                max_grad_norm=cfg.max_grad_norm, poisson_sampling=True, clipping="flat",
                grad_sample_mode="ghost" if ghost else "hooks",
                noise_generator=noise_generator)
    except ValueError as exc:
        raise TrainingError(f"cannot reach privacy.target_epsilon={cfg.target_epsilon:g} with "
                            f"δ={delta:.3g} over {epochs} epoch(s): {exc}") from exc
    if ghost:
        dp_model, dp_opt, dp_crit, dp_loader = out
    else:
        dp_model, dp_opt, dp_loader = out
        dp_crit = None
    return PrivateTraining(
        model=dp_model, optimizer=dp_opt, loader=dp_loader, criterion=dp_crit,
        noise_multiplier=float(dp_opt.noise_multiplier), sample_rate=1.0 / len(dp_loader),
        max_grad_norm=float(cfg.max_grad_norm), delta=delta, target_epsilon=cfg.target_epsilon,
        planned_epochs=epochs, accountant=cfg.accountant,
        mechanism="dp-sgd-ghost" if ghost else "dp-sgd",
        population=population or default_population(settings), engine=engine,
        ignore_index=ignore_index)


def grad_sample_error(model: nn.Module, seqs: torch.Tensor, targets: torch.Tensor,
                      ignore_index: int = 0) -> float:
    """How far Opacus' per-sample gradients are from the truth for ``model`` as built.

    Wraps a copy of ``model`` (``model(seqs) -> logits``) with Opacus' hooks, and returns the
    largest relative error, over parameters, of (a) the per-sample gradients summed over the
    batch against autograd's batch gradient and (b) each sample's gradient against autograd on
    that sample alone. Weights used outside their module's forward (e.g. a tied output layer,
    ``x @ emb.weight.T``) are silently missed by the hooks; this number exposes it.
    """
    import copy

    from opacus import GradSampleModule

    if len(seqs) < 1:
        raise ValueError("grad_sample_error needs a non-empty batch")
    loss_fn = _HooksSequenceLoss(ignore_index)

    def prepared(m: nn.Module) -> nn.Module:
        # Opacus' hooks fire only on modules in training mode, but dropout (nn.Dropout or a
        # functional one keyed on a container's .training) would make the batch pass and the
        # one-sample passes compute different functions: train mode only where parameters live.
        m = copy.deepcopy(m)
        for sub in m.modules():
            sub.training = any(True for _ in sub.parameters(recurse=False))
        return m

    clone = prepared(model)
    gsm = GradSampleModule(clone, loss_reduction="sum")
    # loss_reduction="sum" with the sum of per-user losses: grad_sample[i] = d loss_i / d theta.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook")
        (loss_fn(gsm(seqs), targets) * len(seqs)).backward()
    params = [p for p in clone.parameters() if p.requires_grad]

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / (b.norm() + 1e-6))

    worst = 0.0
    for p in params:
        if p.grad is None:
            continue
        if getattr(p, "grad_sample", None) is None:
            gsm._close()
            return math.inf  # a trained parameter Opacus does not see at all
        worst = max(worst, rel(p.grad_sample.sum(dim=0), p.grad))
    for i in range(len(seqs)):
        ref = prepared(model)
        loss_fn(ref(seqs[i:i + 1]), targets[i:i + 1]).backward()
        ref_params = [q for q in ref.parameters() if q.requires_grad]
        for p, q in zip(params, ref_params, strict=True):
            if q.grad is not None and getattr(p, "grad_sample", None) is not None:
                worst = max(worst, rel(p.grad_sample[i], q.grad))
    gsm._close()
    return worst
