"""User-level DP-SGD with Opacus: the private model/optimizer/loader, and a check of its hooks.

The loader yields one sample per user (their whole sequence), so clipping bounds one user's
influence on a step; :mod:`recops.training.privacy` accounts for what the steps cost.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from recops.errors import TrainingError
from recops.training.privacy import (
    PrivacySpend,
    default_population,
    epsilon_for,
    noise_for,
    resolve_delta,
)

if TYPE_CHECKING:  # torch and opacus are imported inside functions: nothing heavy at import
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    from recops.config import Settings


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
    loader: DataLoader[tuple[torch.Tensor, ...]]
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
        inner: Any = self.model
        while hasattr(inner, "_module") or hasattr(inner, "module"):  # GradSampleModule, DPDDP
            inner = getattr(inner, "_module", None) or inner.module
        return cast("nn.Module", inner)

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


def dp_batch_size(settings: Settings, n_users: int) -> int:
    """Expected users per DP-SGD step: ``privacy.batch_size``, else ``privacy.batch_fraction``
    of the ``n_users`` training users (at least ``train.batch_size``, at most all of them).

    The noise added to a step's summed clipped gradients does not shrink with the batch, so
    its share of the mean falls as 1/batch; with the number of epochs fixed, a larger batch
    also means fewer steps and a smaller ε per step (docs/privacy.md measures the trade).
    """
    p = settings.privacy
    size = p.batch_size or max(settings.train.batch_size, round(p.batch_fraction * n_users))
    return max(1, min(size, n_users))


MECHANISMS = {"ghost": "dp-sgd-ghost", "flat": "dp-sgd", "per_layer": "dp-sgd-per-layer",
              "adaptive": "dp-sgd-adaptive"}


def _clipping(cfg: Any, model: nn.Module, sigma: float, expected_batch: float) -> dict[str, Any]:
    """Opacus' clipping arguments for ``privacy.clipping``."""
    if cfg.clipping in ("flat", "ghost"):
        return {"clipping": "flat", "max_grad_norm": cfg.max_grad_norm}
    if cfg.clipping == "per_layer":
        n = sum(1 for p in model.parameters() if p.requires_grad)
        # Equal shares: sqrt(n · (C / sqrt(n))²) = C, so one user still moves the sum by ≤ C.
        return {"clipping": "per_layer", "max_grad_norm": [cfg.max_grad_norm / n ** 0.5] * n}
    # Andrew et al. 2021: the clipped-count noise std is the expected batch / 20, and at least
    # σ (Opacus needs σ < 2·std; the gradient noise then grows to (σ⁻² - (2·std)⁻²)^-1/2 so
    # that both together are the Gaussian mechanism with multiplier σ that the accountant
    # records).
    return {"clipping": "adaptive", "max_grad_norm": cfg.max_grad_norm,
            "target_unclipped_quantile": 0.5, "clipbound_learning_rate": 0.2,
            "max_clipbound": 100 * cfg.max_grad_norm, "min_clipbound": cfg.max_grad_norm / 100,
            "unclipped_num_std": max(expected_batch / 20, sigma)}


def make_private(model: nn.Module, optimizer: torch.optim.Optimizer,
                 loader: DataLoader[tuple[torch.Tensor, ...]],
                 settings: Settings, n_users: int, epochs: int, *,
                 batch_size: int | None = None,
                 noise_generator: torch.Generator | None = None,
                 population: str | None = None, ignore_index: int = 0) -> PrivateTraining:
    """User-level DP-SGD: noise calibrated to (privacy.target_epsilon, δ) over ``epochs``.

    ``loader`` must yield one sample per user (``len(loader.dataset) == n_users``); Opacus
    replaces it with a Poisson-sampling loader of the same expected batch size.
    ``batch_size``: expected users per step (:func:`dp_batch_size`); unset, the loader's.
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
    if batch_size is not None:  # Opacus samples each user with rate 1 / len(loader)
        loader = torch.utils.data.DataLoader(loader.dataset, batch_size=batch_size)
    delta = resolve_delta(settings, n_users)
    problems = ModuleValidator.validate(model, strict=False)
    if problems:
        raise TrainingError("the model cannot be trained with Opacus: "
                            + "; ".join(str(p) for p in problems))
    from opacus.distributed import DifferentiallyPrivateDistributedDataParallel

    if (isinstance(model, DifferentiallyPrivateDistributedDataParallel)
            and cfg.clipping == "adaptive"):
        raise TrainingError("privacy.clipping 'adaptive' has no distributed form in Opacus: "
                            "with train.distributed.nproc_per_node or nnodes above 1 use ghost, "
                            "flat or per_layer")
    ghost = cfg.clipping == "ghost"
    criterion = torch.nn.CrossEntropyLoss(ignore_index=ignore_index)
    try:
        with warnings.catch_warnings():
            # Opacus warns that secure_mode is off: we accept a non-cryptographic RNG (a
            # floating-point side channel on the noise), as its own docs do outside production.
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            engine = PrivacyEngine(accountant=cfg.accountant)
            # σ first (what make_private_with_epsilon computes): adaptive clipping sizes its
            # count noise from it.
            sigma = noise_for(cfg.target_epsilon, 1.0 / len(loader), epochs * len(loader),
                              delta, cfg.accountant)
            out = engine.make_private(
                module=model, optimizer=optimizer, criterion=criterion, data_loader=loader,
                noise_multiplier=sigma, poisson_sampling=True,
                grad_sample_mode="ghost" if ghost else "hooks",
                noise_generator=noise_generator,
                **_clipping(cfg, model, sigma, expected_batch=n_users / len(loader)))
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
        mechanism=MECHANISMS[cfg.clipping],
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
        # torch leaves Tensor.backward unannotated.
        (loss_fn(gsm(seqs), targets) * len(seqs)).backward()  # type: ignore[no-untyped-call]
    params = [p for p in clone.parameters() if p.requires_grad]

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / (b.norm() + 1e-6))

    worst = 0.0
    for p in params:
        if p.grad is None:
            continue
        grad_sample: torch.Tensor | None = getattr(p, "grad_sample", None)  # set by the hooks
        if grad_sample is None:
            gsm._close()
            return math.inf  # a trained parameter Opacus does not see at all
        worst = max(worst, rel(grad_sample.sum(dim=0), p.grad))
    for i in range(len(seqs)):
        ref = prepared(model)
        loss_fn(ref(seqs[i:i + 1]), targets[i:i + 1]).backward()  # type: ignore[no-untyped-call]
        ref_params = [q for q in ref.parameters() if q.requires_grad]
        for p, q in zip(params, ref_params, strict=True):
            grad_sample = getattr(p, "grad_sample", None)
            if q.grad is not None and grad_sample is not None:
                worst = max(worst, rel(grad_sample[i], q.grad))
    gsm._close()
    return worst
