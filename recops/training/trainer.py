"""Training: build a model from settings, fit it on user sequences, early-stop, resume.

Plain PyTorch, shared by centralised training (:func:`train_model`), the Flower client
(:func:`build_model`; samples from :mod:`recops.training.samples`, steps from
:mod:`recops.training.local`) and the CLI. Under ``settings.privacy.enabled`` one sample is one
user, the privacy unit (DP-SGD through :func:`recops.training.dp.make_private`);
``train.max_minutes`` and ``train.lr_schedule`` spend the budget
(:mod:`recops.training.schedule`).
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from recops.core.runs import RunDir
from recops.errors import TrainingError
from recops.training.evaluation import evaluate_model
from recops.training.local import centralised_options, start_local, train_local
from recops.training.models import (
    Pop,
    Recommender,
    create_model,
    extend_checkpoint,
    load_checkpoint,
    make_checkpoint,
    save_checkpoint,
)
from recops.training.progress import EpochProgress
from recops.training.samples import make_train_loader
from recops.training.schedule import TrainingBudget
from recops.training.sequences import ItemIndex, SequenceData

if TYPE_CHECKING:
    from recops.config import Settings
    from recops.training.distributed import Ranks
    from recops.training.privacy import PrivacyLedger


@dataclass
class TrainResult:
    """What every trainer (centralised or federated) returns; the caller decides what to keep."""

    model: Recommender
    checkpoint: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    valid_metrics: dict[str, float] = field(default_factory=dict)
    privacy: dict[str, Any] | None = None

    def save(self, run: RunDir) -> None:
        """Keep the result in ``run``: the checkpoint, the per-epoch (or per-round) history and
        the privacy record."""
        save_checkpoint(self.checkpoint, run.file(RunDir.CHECKPOINT))
        run.write_json(RunDir.HISTORY, self.history)
        run.write_json(RunDir.PRIVACY, self.privacy)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; returns a torch generator for loaders."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def build_model(settings: Settings, n_items: int,
                text_vectors: np.ndarray | None = None) -> Recommender:
    """A fresh model of ``settings.model.kind``; text vectors ([n_items, dim], row i-1 = index i)
    are used when ``settings.model.text_init`` (SASRec only)."""
    m = settings.model
    args: dict[str, Any] = {"max_len": m.max_len, "d_model": m.d_model}
    if m.kind == "sasrec":
        args.update(n_layers=m.n_layers, n_heads=m.n_heads, dropout=m.dropout)
        if m.text_init:
            if text_vectors is None:
                raise TrainingError("model.text_init is on but no item text vectors were given "
                                    "(features.text_encoder.item_text_vectors computes them)")
            tv = np.asarray(text_vectors, dtype=np.float32)
            if tv.ndim != 2 or tv.shape[0] != n_items:
                raise TrainingError(f"text vectors must be [{n_items}, dim] (one row per item "
                                    f"index), got shape {tv.shape}")
            args.update(text_dim=tv.shape[1], text_vectors=torch.from_numpy(tv))
    elif m.kind == "mf":
        args.update(mf_loss=m.mf_loss, mf_negatives=m.mf_negatives)
    elif m.kind in ("ease", "itemknn"):
        args.update(neighbours=m.neighbours)
        if m.kind == "ease":
            args.update(ease_lambda=m.ease_lambda)
    return create_model(m.kind, n_items, args)


def training_device(settings: Settings) -> torch.device:
    """``train.device``, refused with a clear error where it does not exist."""
    dev = torch.device(settings.train.device)
    if dev.type == "cuda" and (not torch.cuda.is_available()
                               or (dev.index or 0) >= torch.cuda.device_count()):
        raise TrainingError(f"train.device is {settings.train.device!r} but this machine has "
                            f"{torch.cuda.device_count()} usable CUDA device(s); set "
                            "train.device: cpu")
    return dev


def freeze_item_side(model: Recommender) -> None:
    """Stop training the items' own free parameters (privacy.item_side "text"): their input
    embeddings and output weights keep the text-derived start."""
    for name in ("item_emb.weight", "out.weight"):
        model.get_parameter(name).requires_grad_(False)


def training_histories(data: SequenceData) -> list[np.ndarray]:
    """Every user's whole training history: what closed-form kinds (pop, ease, itemknn) fit on.

    ``valid_seen`` holds evaluated users' whole train history (``train_seqs`` only its last
    ``max_len`` items); train-only users count with their sequences.
    """
    evaluated = set(data.eval_users.tolist())
    return [*data.valid_seen, *(s for u, s in zip(data.train_users, data.train_seqs, strict=True)
                                if int(u) not in evaluated)]


def fit_popularity(model: Pop, data: SequenceData) -> Pop:
    """Count every training event into a popularity model (the baseline the gate compares to)."""
    model.fit_sequences(training_histories(data))
    return model.eval()


def item_text(settings: Settings, data: SequenceData) -> np.ndarray:
    """The sentence vectors of the data's items, row i-1 = index i (cached by content hash)."""
    from recops.features.text_encoder import item_text_vectors

    return item_text_vectors(settings, data.items)


def initial_model(settings: Settings, data: SequenceData, init: dict[str, Any] | None = None,
                  text_vectors: np.ndarray | None = None) -> tuple[Recommender, SequenceData]:
    """The model training starts from, and the data in its item index.

    Fresh (``init`` None): a new ``model.kind`` model, item embeddings from the items' text when
    ``model.text_init``. Warm start: the ``init`` checkpoint's model grown to the data's new
    items (new items' text rows from ``text_vectors``, aligned to the data's own index), and
    the data re-expressed in that index so the champion's rows keep their meaning.
    """
    text_model = settings.model.kind == "sasrec" and settings.model.text_init
    if init is None:
        if text_model and text_vectors is None:
            text_vectors = item_text(settings, data)
        return build_model(settings, data.n_items, text_vectors), data
    if init.get("kind") != settings.model.kind:
        raise TrainingError(f"warm start: the init checkpoint is a '{init.get('kind')}' model "
                            f"but model.kind is '{settings.model.kind}'")
    merged = ItemIndex(np.asarray(init["item_ids"], dtype=np.int64)).extend(data.index.item_ids)
    new_ids = merged.item_ids[len(init["item_ids"]):].tolist()
    new_text = None
    if new_ids and init["model_settings"].get("text_dim"):
        tv = text_vectors if text_vectors is not None else item_text(settings, data)
        new_text = np.asarray(tv)[data.index.to_index(new_ids) - 1]
    model = load_checkpoint(extend_checkpoint(init, new_ids, new_text, seed=settings.seed),
                            where="warm-start checkpoint")
    return model, data.reindexed(merged)


def train_model(settings: Settings, data: SequenceData, *, init: dict[str, Any] | None = None,
                text_vectors: np.ndarray | None = None, progress: bool = True,
                ledger: PrivacyLedger | None = None, run_id: str | None = None,
                resume_from: dict[str, Any] | None = None,
                on_epoch: Callable[[dict[str, Any]], None] | None = None,
                ranks: Ranks | None = None) -> TrainResult:
    """Train ``settings.model.kind`` on ``data``, early-stopping on validation ``gate.metric``.

    Writes no file: the caller keeps the result (``TrainResult.save``).
    ``init`` warm-starts from a checkpoint (its item index extended by new items).
    ``on_epoch`` receives the resumable state after every epoch; ``resume_from`` is such a state
    to continue from. With privacy on, the projected spend is checked against the budget in
    ``ledger`` before training and the actual spend appended after.

    ``ranks``: this process is one rank of a torch.distributed group (torchrun): it trains on
    its shard of the samples (``train.batch_size`` is the global batch) in
    DistributedDataParallel, or under DP-SGD in Opacus' DPDDP; rank 0 evaluates, decides early
    stopping for all and returns the checkpoint (the other ranks return it empty).
    """
    from recops.training import distributed as ddp

    torch.set_num_threads(ddp.rank_threads(settings) if ranks else settings.train.num_threads)
    seed_everything(settings.seed)
    if data.n_users == 0:
        raise TrainingError("no users to train on: the sequence data is empty")
    if not len(data.eval_users):
        raise TrainingError("no user has 3 or more events, so there is no validation split to "
                            "early-stop on; add data")
    cfg, metric = settings.train, settings.gate.metric
    model, data = initial_model(settings, data, init, text_vectors)
    model.train()
    history: list[dict[str, Any]] = []
    privacy: dict[str, Any] | None = None
    model_settings = settings.model.model_dump()
    train_settings = {**cfg.model_dump(), "seed": settings.seed,
                      "privacy": (settings.privacy.model_dump() if settings.privacy.enabled
                                  else None)}

    def checkpoint(m: Recommender, valid: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return make_checkpoint(m, data.index.item_ids, model_settings=model_settings,
                               train_settings=train_settings, valid_metrics=valid,
                               history=history, privacy=privacy, run_id=run_id,
                               n_users=data.n_users, n_eval_users=int(len(data.eval_users)),
                               **extra)

    if model.closed_form:
        if settings.privacy.enabled:
            raise TrainingError(f"privacy.enabled with model.kind='{model.kind}': a closed-form "
                                "fit (counts, item-item weights) is not trained with DP-SGD; "
                                "use sasrec or mf")
        model.fit_sequences(training_histories(data))
        ev = evaluate_model(model, data, "valid")
        history.append({"epoch": 0, "loss": 0.0, **ev.overall})
        return TrainResult(model.eval(), checkpoint(model, ev.overall,
                                                    valid_per_segment=ev.per_segment),
                           history, ev.overall, None)

    device = ranks.device if ranks is not None else training_device(settings)
    main = ranks is None or ranks.main
    dp = settings.privacy if settings.privacy.enabled else None
    # Under DP the recipe's own epochs (its batch and learning rate: centralised_options).
    epochs = cfg.epochs
    if dp is not None:
        if resume_from is not None:
            raise TrainingError("resume is not supported with privacy.enabled: the accountant's "
                                "state is not checkpointed; start the run again")
        epochs = dp.dp_epochs
        if dp.item_side == "text":
            freeze_item_side(model)
    model.to(device)
    loader = make_train_loader(data, settings, settings.seed, max_len=model.max_len)
    if ranks is not None and dp is None:  # DP: Opacus' Poisson loader shards the whole set
        loader = ddp.shard_loader(loader, ranks, ddp.rank_batch(settings, ranks.world_size))
    local = start_local(model, loader, settings, centralised_options(
        settings, len(loader.dataset)), ranks)  # type: ignore[arg-type]
    optimizer, private = local.optimizer, local.private
    if private is not None:
        from recops.training.privacy import PrivacyLedger

        (ledger or PrivacyLedger(settings.paths.privacy_ledger)).check_budget(
            settings, private.projected_epsilon(), private.population)

    start_epoch, best, best_state, bad, spent = 1, -1.0, None, 0, (0.0, 0)
    if resume_from is not None:
        state = resume_from
        model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer_state"])
        start_epoch, best, best_state, bad = (state["epoch"] + 1, state["best"],
                                              state["best_state"], state["bad"])
        history = state["history"]
        spent = state.get("budget_spent", spent)
        torch.set_rng_state(state["torch_rng"])
        loader.generator.set_state(state["loader_rng"])
        if bad >= cfg.patience:
            start_epoch = epochs + 1

    # Without DP: train.lr_schedule over the epochs or train.max_minutes (DP keeps its recipe's
    # fixed epochs at a constant rate).
    budget = None if dp is not None else TrainingBudget(
        epochs, len(loader), cfg.max_minutes, lr=cfg.lr, schedule=cfg.lr_schedule,
        elapsed=spent[0], steps=spent[1],
        clock=ddp.synced_clock(device) if ranks is not None else time.monotonic)
    if ranks is not None and ranks.rank:  # each rank its own dropout, negatives, Poisson draws
        torch.manual_seed(settings.seed + ranks.rank)
    with EpochProgress(progress and main, epochs, len(private.loader if private else loader),
                       metric) as bar:
        bar.advance_to(start_epoch - 1)
        for epoch in range(start_epoch, epochs + 1):
            started = time.perf_counter()
            loss = train_local(local, epochs=1, on_batch=bar.batch, budget=budget).loss
            row: dict[str, Any] = {"epoch": epoch, "loss": loss,
                                   "train_seconds": round(time.perf_counter() - started, 3)}
            # One reading of the clock per epoch (across ranks, each reading is a collective).
            elapsed = budget.elapsed if budget is not None else 0.0
            out_of_time = (budget is not None and budget.max_seconds is not None
                           and elapsed >= budget.max_seconds)
            if budget is not None:
                row["seconds"] = round(elapsed, 3)
            stop = False
            # Under DP, validation data is private too: it is scored once, after the last
            # epoch, and chooses nothing (the last model is kept), so ε covers every use of it.
            if not main:
                pass  # rank 0 evaluates and decides for every rank (below)
            elif dp is not None and epoch == epochs:
                ev = evaluate_model(model, data, "valid", segments=False)
                row.update(ev.overall)
            elif dp is None and (epoch % cfg.eval_every == 0 or epoch == epochs
                                 or out_of_time):
                ev = evaluate_model(model, data, "valid", segments=False)
                row.update(ev.overall)
                if metric not in ev.overall:
                    raise TrainingError(f"gate.metric {metric!r} is not a validation metric; "
                                        f"expected one of {sorted(ev.overall)}")
                if ev.overall[metric] > best:
                    best, bad = ev.overall[metric], 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    bad += 1
                    stop = bad >= cfg.patience
                stop = stop or out_of_time
            if ranks is not None:
                row, stop = ddp.from_main((row, stop))
            history.append(row)
            bar.epoch_done(epoch, row)
            if on_epoch is not None and main:
                on_epoch({"epoch": epoch, "model_state": model.state_dict(),
                          "optimizer_state": optimizer.state_dict(), "best": best,
                          "best_state": best_state, "bad": bad, "history": history,
                          "torch_rng": torch.get_rng_state(),
                          "loader_rng": loader.generator.get_state(),
                          "budget_spent": (elapsed, budget.steps) if budget else (0.0, 0)})
            if stop:
                break
    if not main:
        return TrainResult(model.to("cpu").eval(), {}, history)
    if best_state is not None and dp is None:
        model.load_state_dict(best_state)
    model.to("cpu").eval()
    if private is not None:
        spend = private.spend(run_id=run_id)
        privacy = spend.to_dict()
        (ledger or PrivacyLedger(settings.paths.privacy_ledger)).append(spend)
    ev = evaluate_model(model, data, "valid")
    ckpt = checkpoint(model, ev.overall, valid_per_segment=ev.per_segment)
    return TrainResult(model, ckpt, history, ev.overall, privacy)
