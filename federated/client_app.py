"""Flower ClientApp: trains/evaluates the shared recommender on this client's users only."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable

from federated.cache import cached
from federated.client_data import client_data, client_id
from federated.common import (
    FED_DIR,
    INITIAL_STATE,
    arrays_from_model,
    load_arrays,
    local_batch_size,
    settings_for_run,
)
from federated.partition import read_manifest
from federated.secagg_client import secagg_mod
from federated.strategies import DP_WEIGHT, EVAL_METRICS, NUM_EXAMPLES

if TYPE_CHECKING:
    from recops.training.dp import PrivateTraining

app = ClientApp()


def client_dp_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Client-side update clipping for client-level DP, chosen by the server's train config.

    Attached to train only: on the whole ClientApp a clipping mod also wraps evaluate and
    breaks it.
    """
    mode = msg.content["config"].get("client-dp", "off")
    if mode == "fixed":
        return fixedclipping_mod(msg, ctxt, call_next)
    if mode == "adaptive":
        return adaptiveclipping_mod(msg, ctxt, call_next)
    return call_next(msg, ctxt)


def _read_state(path: Path) -> dict[str, Any]:
    import torch

    return dict(torch.load(path, weights_only=True))


def _model(settings: Any, run_dir: Path, n_items: int) -> Any:
    """The shared architecture with the run's frozen buffers (text vectors) from initial state."""
    import numpy as np

    from recops.training.trainer import build_model

    init = cached(run_dir / FED_DIR / INITIAL_STATE, _read_state)
    text = None
    if "text" in init:  # frozen text vectors: a placeholder here, the real ones come with init
        text = np.zeros((n_items, init["text"].shape[1]), dtype=np.float32)
    model = build_model(settings, n_items, text_vectors=text)
    model.load_state_dict(init)
    return model


def _dp_metrics(pt: PrivateTraining, epochs: int) -> dict[str, Any]:
    """What the server's accountant needs from a client's DP-SGD round."""
    return {"dp-noise": float(pt.noise_multiplier), "dp-rate": float(pt.sample_rate),
            "dp-steps": int(pt.steps_taken), "dp-delta": float(pt.delta),
            "dp-clip": float(pt.max_grad_norm), "dp-epochs": int(epochs)}


# SecAgg+ outermost: its protocol messages never reach the other mods in legacy form.
@app.train(mods=[secagg_mod, client_dp_mod])
def train(msg: Message, context: Context) -> Message:
    """Local epochs from the global weights; reply with the new weights and what DP spent."""
    import torch

    from recops.training.local import client_options, start_local, train_local
    from recops.training.samples import make_train_loader

    run_dir, settings = settings_for_run(context.run_config)
    pid = client_id(context.node_config, context.node_id)
    data = client_data(run_dir, context.node_config, settings.model.max_len)
    # The server's ConfigRecord of scalars (flwr types a record's values as any of its kinds).
    cfg: Mapping[str, Any] = msg.content["config"]
    server_round = int(cfg["server-round"])
    torch.set_num_threads(max(1, int(settings.train.num_threads)))
    torch.manual_seed((settings.seed * 100_003 + server_round * 1_009 + pid) % 2**63)

    model = _model(settings, run_dir, data.n_items)
    load_arrays(model, msg.content["arrays"])
    # Steps-matched batches need every client's user count; the server knows it only when it
    # partitioned (n_users 0: clients with their own data train with train.batch_size).
    total_users = int(read_manifest(run_dir)["n_users"]) or data.n_users
    settings.train.batch_size = local_batch_size(
        int(context.run_config.get("local-batch-size", 0)), settings.train.batch_size,
        data.n_users, total_users)
    loader = make_train_loader(data, settings,
                               seed=(settings.seed + 7919 * server_round + pid) % 2**32)
    started = time.perf_counter()
    # σ is calibrated once for the whole run (all rounds × local epochs), so each round spends
    # its share; the server sums the steps each client actually took.
    local = start_local(model, loader, settings,
                        client_options(settings, float(cfg.get("proximal-mu", 0.0))))
    result = train_local(local, epochs=settings.federated.local_epochs)
    metrics: dict[str, Any] = {NUM_EXAMPLES: int(data.n_users), DP_WEIGHT: 1.0,
                               "partition-id": pid, "batch-size": settings.train.batch_size,
                               "train-loss": float(result.loss),
                               "train-seconds": time.perf_counter() - started}
    if local.private is not None:
        metrics.update(_dp_metrics(local.private, settings.federated.local_epochs))
    content = RecordDict({"arrays": arrays_from_model(model), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """NDCG@10 etc. of the global weights on this client's own validation users."""
    import torch

    from recops.training.evaluation import evaluate_model

    run_dir, settings = settings_for_run(context.run_config)
    data = client_data(run_dir, context.node_config, settings.model.max_len)
    torch.set_num_threads(max(1, int(settings.train.num_threads)))
    model = _model(settings, run_dir, data.n_items)
    load_arrays(model, msg.content["arrays"])
    n_eval = int(len(data.eval_users))
    # Every reply carries the same keys (Flower checks); the server weighs by eval-users.
    metrics: dict[str, Any] = {NUM_EXAMPLES: n_eval, DP_WEIGHT: 1.0, "eval-users": n_eval}
    if n_eval:
        res = evaluate_model(model, data, split="valid", k=10, segments=False)
        metrics.update({k: float(v) for k, v in res.overall.items()})
    else:
        metrics.update({k: 0.0 for k in EVAL_METRICS})
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
