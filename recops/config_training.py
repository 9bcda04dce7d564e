"""The settings sections of training: the model (``model``), how it trains (``train``) and
with what privacy (``privacy``). Sections of the one :class:`recops.config.Settings`; kept here
so recops/config.py stays short."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from recops.config_base import Section

# The recommenders recops trains (recops.training.models.MODELS).
ModelKind = Literal["sasrec", "mf", "pop", "ease", "itemknn"]


class ModelSettings(Section):
    kind: ModelKind = "sasrec"
    max_len: int = Field(50, ge=2, le=1024)
    d_model: int = Field(64, ge=4)
    n_layers: int = Field(2, ge=1)
    n_heads: int = Field(2, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    text_init: bool = False
    # mf: BPR with mf_negatives uniform negatives per position, or the full softmax.
    mf_loss: Literal["bpr", "softmax"] = "bpr"
    mf_negatives: int = Field(1, ge=1, le=1000)
    # ease: the L2 strength of its ridge regression. Validation NDCG@10 on ml-latest-small is
    # flat for 50..1000 (0.040-0.043, within noise; 2000: 0.037); 200 was best at K=200.
    ease_lambda: float = Field(200.0, gt=0)
    # ease, itemknn: the weights kept per item (the sparse top-K a checkpoint stores); for EASE
    # on ml-latest-small, K=200 validates as K=1000 (and 16 MB against 380 MB dense).
    neighbours: int = Field(200, ge=1)

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelSettings:
        if self.d_model % self.n_heads:
            raise ValueError(f"model.d_model ({self.d_model}) must be divisible by "
                             f"model.n_heads ({self.n_heads})")
        return self


class DistributedSettings(Section):
    """Data-parallel training across processes (torchrun, DistributedDataParallel)."""

    SECTION: ClassVar[str] = "train.distributed"

    nproc_per_node: int = Field(1, ge=1, le=1024, description=(
        "Training processes per node, launched by torchrun (1 with nnodes 1: one process, no "
        "torchrun). Each takes train.batch_size / nproc_per_node samples a step and "
        "train.num_threads / nproc_per_node threads."))
    nnodes: int = Field(1, ge=1, le=1024, description=(
        "Nodes taking part (torchrun --nnodes); every node runs the same command against a "
        "shared RECOPS_HOME."))
    rdzv_endpoint: str = Field("127.0.0.1:29400", description=(
        "host:port of torchrun's c10d rendezvous (on one node: a free local port)."))
    rdzv_id: str = Field("recops", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description=(
        "Rendezvous run id: the nodes of one training run share it."))

    @field_validator("rdzv_endpoint")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"must be host:port with a port in 1..65535, e.g. 127.0.0.1:29400 "
                             f"(got {value!r})")
        return value


class TrainSettings(Section):
    mode: Literal["centralised", "federated"] = Field(
        "centralised", description="Training mode: centralised PyTorch, or Flower federated.")
    # Chosen on ml-latest-small's validation split within a 5-minute budget (docs/quality.md),
    # where the recipe trained ~50 epochs on a quiet 2-core machine (5.5 s each). Epochs, not
    # the clock, end a default run (same seed, same model); max_minutes only caps a slow one.
    epochs: int = Field(50, ge=1, description=(
        "Training epochs without DP (at most: early stopping may end sooner); DP-SGD trains "
        "privacy.dp_epochs."))
    # Measured on ml-latest-small (610 users): batch 128 / lr 1e-3 gives ~5 steps an epoch and
    # stays at popularity's NDCG@10 (0.019); batch 32 / lr 2e-3 reaches 0.035 in 20 epochs.
    batch_size: int = Field(32, ge=1)
    lr: float = Field(2e-3, gt=0, description=(
        "Adam's learning rate without DP (DP-SGD: privacy.dp_lr); also the federated clients' "
        "rate unless federated.client_lr is set."))
    weight_decay: float = Field(0.0, ge=0)
    # Validation NDCG@10 over a few hundred users is noisy from epoch to epoch: on
    # ml-latest-small it went 12-35 epochs without a new best before rising again, so a short
    # patience stops far too early (patience 5: 0.0339 at epoch 20 against 0.0404).
    patience: int = Field(30, ge=1)
    eval_every: int = Field(1, ge=1)
    num_threads: int = Field(2, ge=1)
    # Where gradient-trained models train: "cpu", "cuda" or "cuda:N" (saved back on the CPU).
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$")
    # One training sample (docs/quality.md): "last", a user's last model.max_len items;
    # "windows", a user's whole history cut into windows of max_len + 1 items, so every event
    # is a target once. DP-SGD always trains on "last": one sample per user, its privacy unit.
    samples: Literal["last", "windows"] = "windows"
    # How a batch's loss averages: "sequence", each sample's mean over its positions, then over
    # samples; "position", over every predicted position alike (long histories weigh more).
    loss_weighting: Literal["sequence", "position"] = "sequence"
    # SASRec: each target's softmax runs over this many items drawn uniformly per batch
    # instead of the whole catalogue (0: the full softmax; DP-SGD always uses the full one).
    negatives: int = Field(2048, ge=0)
    # "cosine": the learning rate falls from lr to 0 along a half cosine over the budget
    # (epochs, or max_minutes when that runs out first).
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    # Wall-time budget of one model's training (closed-form fits excepted): it stops after the
    # epoch in which the budget runs out, keeping the best validated epoch. None: no limit.
    max_minutes: float | None = Field(6.0, gt=0)
    # data.event_roles in training (docs/quality.md "Event roles"): each target's loss weighted by
    # its event's positive weight; and each sample's softmax also over the user's negative
    # items (their last max_feedback_negatives before the valid label; SASRec's sampled
    # softmax, where the full one has them already). Neither under DP-SGD. Chosen on
    # validation (benchmarks/bench_event_roles.py): weights did not help on ml-latest-small and
    # hurt on typed synthetic events; the negatives helped on both.
    event_weights: bool = Field(False, description=(
        "Weight each target's loss by its event type's weight (data.event_roles.roles)."))
    feedback_negatives: bool = Field(True, description=(
        "Put each user's negative items (dislikes, low ratings) in their samples' softmax."))
    max_feedback_negatives: int = Field(50, ge=1, le=1000)
    # Model selection: train each of these model kinds (centralised, without DP) and keep the one
    # best on validation gate.metric as the challenger. Empty: train model.kind alone.
    candidates: list[ModelKind] = []
    distributed: DistributedSettings = DistributedSettings()


class PrivacySettings(Section):
    SECTION: ClassVar[str] = "privacy"
    # Old names accepted for one release: the dp_ names say they replace train.epochs and
    # train.lr only when DP-SGD trains.
    RENAMED: ClassVar[dict[str, str]] = {"epochs": "dp_epochs", "lr": "dp_lr"}

    enabled: bool = Field(False, description=(
        "Train with user-level differential privacy (Opacus DP-SGD)."))
    target_epsilon: float = Field(8.0, gt=0, description="Target epsilon of one DP run.")
    # Unset: 1 / (10 * number of users), below 1/n as DP-SGD requires.
    delta: float | None = Field(None, gt=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    # ghost: ghost clipping (per-user norms without per-user gradients); flat: per-user
    # gradients clipped as one vector; per_layer: each parameter tensor clipped to
    # max_grad_norm / sqrt(tensors) (the whole gradient still within max_grad_norm);
    # adaptive: the norm follows the median per-user norm (Andrew et al. 2021), starting at
    # max_grad_norm; its clipped-count noise is part of the same σ, so ε is unchanged.
    clipping: Literal["flat", "ghost", "per_layer", "adaptive"] = "ghost"
    # PRV (an upper bound on ε, Opacus' default error 0.01) needs 5-8% less noise than RDP for
    # the same ε at the recipe's sampling and steps (benchmarks/bench_accountants.py).
    accountant: Literal["rdp", "prv"] = "prv"
    # DP-SGD recipe, chosen on synthetic data (docs/privacy.md): exactly `dp_epochs`, last
    # model kept; users per step `batch_size`, unset: batch_fraction of them; Adam at `dp_lr`.
    dp_epochs: int = Field(30, ge=1, description=(
        "DP-SGD trains exactly this many epochs (in place of train.epochs) and keeps the last "
        "model."))
    batch_size: int | None = Field(None, ge=1)
    batch_fraction: float = Field(0.2, gt=0, le=1)
    dp_lr: float = Field(1e-2, gt=0, description=(
        "Adam's learning rate under DP-SGD (in place of train.lr)."))
    # "text": item embeddings/output weights keep their public text start (needs text_init).
    item_side: Literal["trained", "text"] = "trained"
    budget_epsilon: float = Field(16.0, gt=0, description=(
        "Total epsilon the same people may be charged over all runs and retraining cycles "
        "(the gate refuses a model past it)."))


class RetrainSettings(Section):
    """One continual-retraining cycle (recops.orchestration.continual, the recops_retrain DAG)."""

    replay_fraction: float = Field(0.3, ge=0, le=1, description=(
        "Share of the users not active in the new window replayed into fine-tuning, so older "
        "users are not forgotten."))
    finetune_epochs: int | None = Field(None, ge=1, description=(
        "Fine-tuning epochs of the champion (unset: min(train.epochs, 5))."))
