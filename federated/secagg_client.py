"""The ClientApp's side of SecAgg+: Flower's ``secaggplus_mod`` around a clipped-update train.

SecAgg+ messages (they carry Flower's SecAgg+ config record) go through ``secaggplus_mod``; in its
"collect masked vectors" stage it calls the adapter below, which runs the ClientApp's usual
Message-API train on the legacy fit instructions and answers with the *update* (new − global
weights) clipped to L2 norm ``secagg-clipping-range`` (this client's own run config, not the
server's say-so). ``secaggplus_mod`` then quantises and masks it and removes the plain arrays
from the reply. Every other message passes through untouched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

from federated.secagg import PARAM_NAMES_KEY, update_clip
from federated.strategies import NUM_EXAMPLES

CLIP_KEY = "secagg-clipping-range"


def clip_update(update: list[Any], max_norm: float) -> tuple[list[Any], float]:
    """``update`` scaled to L2 norm at most ``max_norm``; also its norm before clipping."""
    norm = math.sqrt(sum(float((u.astype("float64") ** 2).sum()) for u in update))
    if norm <= max_norm:
        return update, norm
    scale = max_norm / norm
    return [(u * scale).astype(u.dtype) for u in update], norm


def secagg_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Route SecAgg+ train messages through ``secaggplus_mod``; pass all others on."""
    if (msg.metadata.message_type != MessageType.TRAIN
            or RECORD_KEY_CONFIGS not in msg.content.config_records):
        return call_next(msg, ctxt)
    from flwr.client.mod import secaggplus_mod

    def train_update(legacy: Message, context: Context) -> Message:
        return _clipped_update(legacy, context, call_next)

    return secaggplus_mod(msg, ctxt, train_update)


def _clipped_update(legacy: Message, ctxt: Context, train: ClientAppCallable) -> Message:
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat

    run_config: Mapping[str, Any] = ctxt.run_config
    if CLIP_KEY not in run_config:
        raise ValueError(f"run config lacks {CLIP_KEY!r}: this client cannot bound its update")
    dp = run_config.get("client-dp", "off")
    max_norm = update_clip(dp, float(run_config.get("client-clipping-norm", 0.0)),
                           float(run_config[CLIP_KEY]))
    fitins = compat.recorddict_to_fitins(legacy.content, keep_input=True)
    cfg: Mapping[str, Any] = fitins.config
    names = str(cfg[PARAM_NAMES_KEY]).split(",")
    start = parameters_to_ndarrays(fitins.parameters)
    if len(names) != len(start):
        raise ValueError(f"{len(start)} tensors arrived for {len(names)} names")
    config = ConfigRecord({k: v for k, v in cfg.items() if k != PARAM_NAMES_KEY})
    arrays = ArrayRecord({n: Array(s) for n, s in zip(names, start, strict=True)})
    request = Message(RecordDict({"arrays": arrays, "config": config}),
                      dst_node_id=legacy.metadata.dst_node_id, message_type=MessageType.TRAIN)
    reply = train(request, ctxt)
    if reply.has_error():
        raise RuntimeError(f"local training failed: {reply.error.reason}")
    trained = reply.content.array_records["arrays"]
    update = [trained[n].numpy() - s for n, s in zip(names, start, strict=True)]
    clipped, _ = clip_update(update, max_norm)
    metrics: dict[str, Any] = dict(reply.content["metrics"])
    # Under DP-FedAvg every client weighs the same (a big client may not move the mean more).
    weight = 1 if dp == "fixed" else int(metrics[NUM_EXAMPLES])
    fitres = FitRes(status=Status(Code.OK, "ok"), parameters=ndarrays_to_parameters(clipped),
                    num_examples=weight, metrics=metrics)
    return Message(compat.fitres_to_recorddict(fitres, keep_input=False), reply_to=legacy)
