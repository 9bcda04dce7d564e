"""Local training: the one step loop that centralised training and every Flower client run.

:func:`start_local` builds the optimiser (and, under DP, Opacus' private model, optimiser and
loader) for a model and its loader once; :func:`train_local` runs epochs of it and returns the
loss and the steps taken. :func:`centralised_options` and :func:`client_options` derive how a
party steps from the settings: the centralised trainer keeps one session across its epochs
(early stopping, resume), a client opens one per round.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from recops.errors import TrainingError
from recops.training.models import Recommender

if TYPE_CHECKING:
    from recops.config import Settings
    from recops.training.distributed import Ranks
    from recops.training.dp import PrivateTraining
    from recops.training.schedule import TrainingBudget

Loader = DataLoader[tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class LocalOptions:
    """How one party steps: optimiser, rate, regularisers, loss, and DP-SGD when ``dp_epochs``.

    ``dp_epochs`` > 0 trains with user-level DP-SGD, σ calibrated over that many epochs (all
    the party will ever run, so each call spends its share); ``dp_batch_size`` is the expected
    users per DP step (unset: the loader's batch) and ``dp_noise_seed`` seeds Opacus' noise
    (unset: torch's global generator).
    """

    lr: float
    weight_decay: float = 0.0
    optimizer: Literal["adam", "sgd"] = "adam"
    proximal_mu: float = 0.0
    loss_weighting: str = "sequence"
    negatives: int = 0
    dp_epochs: int = 0
    dp_batch_size: int | None = None
    dp_noise_seed: int | None = None


@dataclass(frozen=True)
class LocalResult:
    """What some epochs of local training did: the last epoch's mean per-sample loss and the
    optimiser steps taken (noise-only DP steps included)."""

    loss: float
    steps: int


@dataclass
class LocalTraining:
    """A model, its loader and optimiser (and DP-SGD) ready to train; see :func:`start_local`.

    ``optimizer`` is the plain optimiser (under DP the one Opacus wraps): its state is what a
    resume restores. ``global_params`` are the starting weights FedProx pulls towards.
    ``ddp`` is the model's :class:`BatchLoss` in DistributedDataParallel (training across
    processes without DP): each step's loss goes through it, so the gradients are averaged
    over the ranks.
    """

    model: nn.Module
    loader: Loader
    optimizer: torch.optim.Optimizer
    options: LocalOptions
    private: PrivateTraining | None = None
    global_params: list[torch.Tensor] | None = None
    ddp: nn.Module | None = None


class BatchLoss(nn.Module):
    """A batch's loss without DP as a module (what DistributedDataParallel wraps: DDP averages
    the gradients of what its forward computed). Returns (the loss to step on, its per-sample
    mean for reporting); ``loss_weighting`` "position" averages over predicted positions."""

    def __init__(self, core: Recommender, loss_weighting: str = "sequence",
                 negatives: int = 0) -> None:
        super().__init__()
        self.core, self.loss_weighting, self.negatives = core, loss_weighting, negatives

    def forward(self, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None,
                user_negs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        per_sample = self.core.training_loss(x, y, self.negatives, weights=weights,
                                             user_negatives=user_negs)
        if self.loss_weighting == "position":
            n_pos = (self.core._clip_len(y) > 0).sum(1).to(per_sample.dtype)
            return (per_sample * n_pos).sum() / n_pos.sum().clamp(min=1), per_sample.mean()
        loss = per_sample.mean()
        return loss, loss


def centralised_options(settings: Settings, n_samples: int) -> LocalOptions:
    """``train``'s optimiser and loss; under ``privacy.enabled`` the DP recipe's rate and epochs,
    its batch of users (:func:`recops.training.dp.dp_batch_size` of ``n_samples``) and seeded
    noise."""
    cfg = settings.train
    base = LocalOptions(lr=cfg.lr, weight_decay=cfg.weight_decay,
                        loss_weighting=cfg.loss_weighting, negatives=cfg.negatives)
    if not settings.privacy.enabled:
        return base
    from recops.training.dp import dp_batch_size

    dp = settings.privacy
    return LocalOptions(lr=dp.dp_lr, weight_decay=cfg.weight_decay, dp_epochs=dp.dp_epochs,
                        dp_batch_size=dp_batch_size(settings, n_samples),
                        dp_noise_seed=settings.seed + 1)


def client_options(settings: Settings, proximal_mu: float = 0.0) -> LocalOptions:
    """A Flower client's round: ``federated.client_optimizer`` at ``federated.client_lr`` (0:
    ``train.lr``), or under ``privacy.enabled`` Adam at ``train.lr`` with DP-SGD calibrated
    over the run's ``rounds × local_epochs``; FedProx's ``proximal_mu`` from the server."""
    cfg, fed = settings.train, settings.federated
    if settings.privacy.enabled:
        return LocalOptions(lr=cfg.lr, weight_decay=cfg.weight_decay, proximal_mu=proximal_mu,
                            dp_epochs=fed.rounds * fed.local_epochs)
    return LocalOptions(lr=fed.client_lr or cfg.lr, weight_decay=cfg.weight_decay,
                        optimizer=fed.client_optimizer, proximal_mu=proximal_mu,
                        loss_weighting=cfg.loss_weighting, negatives=cfg.negatives)


def start_local(model: nn.Module, loader: Loader, settings: Settings,
                options: LocalOptions, ranks: Ranks | None = None) -> LocalTraining:
    """The optimiser over ``model``'s trainable parameters and, with ``options.dp_epochs``,
    Opacus' DP-SGD around it (one loader sample per user); the model trains in place.

    With ``ranks`` (one process of a torch.distributed group) the model trains data-parallel:
    in DistributedDataParallel (``loader`` already this rank's shard), or under DP-SGD in
    Opacus' DPDDP, whose Poisson loader shards ``loader``'s whole dataset itself.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer: torch.optim.Optimizer = (
        torch.optim.SGD(trainable, lr=options.lr, weight_decay=options.weight_decay)
        if options.optimizer == "sgd" else
        torch.optim.Adam(trainable, lr=options.lr, weight_decay=options.weight_decay))
    # The weights training starts from: what FedProx's term measures the distance to.
    global_params = ([p.detach().clone() for p in trainable] if options.proximal_mu > 0
                     else None)
    private = None
    if options.dp_epochs:
        from recops.training.dp import make_private

        generator = None
        if options.dp_noise_seed is not None:
            device = next(model.parameters()).device
            generator = torch.Generator(device).manual_seed(options.dp_noise_seed)
        if ranks is not None:
            from opacus.distributed import DifferentiallyPrivateDistributedDataParallel

            model = DifferentiallyPrivateDistributedDataParallel(model)
        private = make_private(model, optimizer, loader, settings,
                               # torch's Dataset declares no __len__; this one is a TensorDataset.
                               n_users=len(loader.dataset),  # type: ignore[arg-type]
                               epochs=options.dp_epochs, batch_size=options.dp_batch_size,
                               noise_generator=generator)
    ddp = None
    if ranks is not None and private is None:
        from torch.nn.parallel import DistributedDataParallel

        on_gpu = ranks.device.type == "cuda"
        ddp = DistributedDataParallel(
            BatchLoss(_core(model), options.loss_weighting, options.negatives),
            device_ids=[ranks.device] if on_gpu else None)
    return LocalTraining(model, loader, optimizer, options, private, global_params, ddp)


def train_local(local: LocalTraining, *, epochs: int,
                on_batch: Callable[[float], None] | None = None,
                budget: TrainingBudget | None = None) -> LocalResult:
    """Train ``epochs`` passes of ``local``'s loader (its DP loader under DP-SGD).

    ``on_batch`` receives each batch's loss; ``budget`` sets each step's learning rate (its
    schedule) and counts the steps.
    """
    o = local.options
    return fit_epochs(local.model, local.loader, epochs=epochs, lr=o.lr,
                      weight_decay=o.weight_decay, proximal_mu=o.proximal_mu,
                      global_params=local.global_params, optimizer=local.optimizer,
                      private=local.private, on_batch=on_batch,
                      loss_weighting=o.loss_weighting, negatives=o.negatives, budget=budget,
                      ddp=local.ddp)


def _core(model: nn.Module) -> Recommender:
    """The Recommender inside Opacus' GradSampleModule (``_module``) and the data-parallel
    wrappers (``module``), or ``model`` itself."""
    inner: Any = model
    while not isinstance(inner, Recommender):
        inner = getattr(inner, "_module", None) or inner.module
    return inner


def fit_epochs(model: nn.Module, loader: Loader, *, epochs: int, lr: float,
               weight_decay: float = 0.0, proximal_mu: float = 0.0,
               global_params: list[torch.Tensor] | None = None,
               optimizer: torch.optim.Optimizer | None = None,
               private: PrivateTraining | None = None,
               on_batch: Callable[[float], None] | None = None,
               loss_weighting: str = "sequence", negatives: int = 0,
               budget: TrainingBudget | None = None,
               ddp: nn.Module | None = None) -> LocalResult:
    """The step loop: ``epochs`` passes over ``loader`` (what :func:`train_local` runs).

    ``proximal_mu`` with ``global_params`` adds FedProx's (mu/2)·||w - w_global||².
    ``private`` is a :class:`recops.training.dp.PrivateTraining`: its model, optimizer and loss
    are used and empty Poisson batches take a noise-only step. ``loss_weighting`` "position"
    averages a batch over its predicted positions instead of its samples and ``negatives`` > 0
    samples the softmax (neither under DP); ``budget`` sets each step's learning rate (its
    schedule) and counts the steps. Without ``optimizer`` (and ``private``), Adam at ``lr``.
    ``ddp``: the :class:`BatchLoss` in DistributedDataParallel that computes each loss.
    """
    core = _core(private.model if private is not None else model)
    if core.closed_form and core.kind != "pop":
        raise TrainingError(f"model.kind '{core.kind}' is fitted in closed form on all the data "
                            "(train_model), not by epochs; its weights cannot be averaged "
                            "across clients: use train.mode centralised")
    if core.kind == "pop":
        pairs = cast(TensorDataset, loader.dataset).tensors  # make_train_loader's (x, y)
        core.fit_sequences(torch.cat([pairs[0], pairs[1][:, -1:]], dim=1).numpy())
        return LocalResult(0.0, 0)
    if private is not None:
        model, optimizer, loader = private.model, private.optimizer, private.loader
    elif optimizer is None:
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr,
                                     weight_decay=weight_decay)
    if proximal_mu and global_params is None:
        raise TrainingError("proximal_mu > 0 needs global_params (the server's weights)")
    params = [p for p in core.parameters() if p.requires_grad]
    device = next(core.parameters()).device
    model.train()
    mean, steps = 0.0, 0
    for _ in range(epochs):
        total, n = 0.0, 0
        for batch in loader:
            # (x, y), plus the targets' weights and the users' negatives when the loader has
            # them (samples.make_train_loader; never under DP).
            x, y, *extra = batch
            if len(x) == 0:  # Poisson sampling can draw nobody
                if private is not None:
                    private.empty_step()
                    steps += 1
                continue
            if device.type != "cpu":
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                extra = [e.to(device, non_blocking=True) for e in extra]
            weights = extra[0] if extra else None
            user_negs = extra[1] if len(extra) > 1 else None
            optimizer.zero_grad(set_to_none=True)
            if budget is not None:
                step_lr = budget.next_lr()
                for group in optimizer.param_groups:
                    group["lr"] = step_lr
            if ddp is not None:
                loss, mean_loss = ddp(x, y, weights, user_negs)
                value = float(mean_loss.item())
            else:
                loss, value = _batch_loss(core, model, x, y, private, loss_weighting, negatives,
                                          weights, user_negs)
            if proximal_mu and global_params is not None:  # (None was refused above)
                prox = sum(((p - g.detach()) ** 2).sum() for p, g in zip(params, global_params,
                                                                          strict=True))
                loss = loss + proximal_mu / 2 * prox
            loss.backward()
            optimizer.step()
            steps += 1
            total += value * len(x)
            n += len(x)
            if on_batch is not None:
                on_batch(value)
        mean = total / max(n, 1)
    return LocalResult(mean, steps)


def _batch_loss(core: Recommender, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                private: PrivateTraining | None, loss_weighting: str, negatives: int,
                weights: torch.Tensor | None = None,
                user_negs: torch.Tensor | None = None) -> tuple[Any, float]:
    """The loss to step on and its per-sample mean for reporting. ``weights`` [B, L] weigh
    each target (a sample's loss is its weighted mean); ``user_negs`` [B, D] join each
    sample's softmax."""
    if private is not None:
        loss = private.loss(model(x), core._clip_len(y))
        return loss, float(loss.item()) if hasattr(loss, "item") else float(loss)
    loss, mean = BatchLoss(core, loss_weighting, negatives)(x, y, weights, user_negs)
    return loss, float(mean.item())
