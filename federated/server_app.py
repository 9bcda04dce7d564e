"""Flower ServerApp: runs the configured strategy and records every round for the report."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    MetricRecord,
    MetricRecordValues,
    RecordDict,
)
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from federated.accounting import SampleLevelTracker, client_level_delta
from federated.common import (
    DP_CLIENTS_FILE,
    FED_DIR,
    FINAL_STATE,
    INITIAL_STATE,
    ROUNDS_FILE,
    SUMMARY_FILE,
    arrays_from_model,
    load_arrays,
    settings_for_run,
)
from federated.partition import load_server_valid, read_manifest
from federated.strategies import EVAL_METRICS, NUM_EXAMPLES, build_strategy
from recops.config import Settings
from recops.core.atomic import write_json
from recops.errors import TrainingError
from recops.training.dp import MECHANISMS

app = ServerApp()


def _metrics(reply: RecordDict) -> Mapping[str, Any]:
    """A client's "metrics" record: the scalars our client app sends (flwr types a record's
    values as any of its kinds)."""
    metrics: Mapping[str, Any] = reply["metrics"]
    return metrics


class RoundRecorder:
    """Collects per-round replies (through the strategy's aggregation hooks); writes rows."""

    def __init__(self, path: Path, info: dict[str, Any], settings: Settings,
                 num_clients: int) -> None:
        self.path, self.info, self.settings = path, info, settings
        self.rows: list[dict[str, Any]] = []
        self.pending: dict[str, Any] = {}
        self.dp_users = SampleLevelTracker()
        self.client_rounds = 0
        self.started = time.perf_counter()
        self.client_delta = (client_level_delta(num_clients, settings.privacy.delta)
                             if info["client_dp"] != "off" else None)

    def train_aggr(self, contents: list[RecordDict], weight_key: str) -> MetricRecord:
        """Mean train loss over the replies that arrived; also tracks per-client DP-SGD steps."""
        return MetricRecord(self.train_metrics([_metrics(rd) for rd in contents], weight_key))

    def train_metrics(self, replies: list[Mapping[str, Any]],
                      weight_key: str = NUM_EXAMPLES) -> dict[str, MetricRecordValues]:
        """:meth:`train_aggr` on the clients' metrics themselves (the SecAgg+ path's form)."""
        losses, weights, seconds = [], [], []
        for m in replies:
            losses.append(float(m["train-loss"]))
            weights.append(float(m[weight_key]))
            seconds.append(float(m.get("train-seconds", 0.0)))
            if "dp-steps" in m:
                self.dp_users.add(
                    int(m["partition-id"]), noise_multiplier=float(m["dp-noise"]),
                    sample_rate=float(m["dp-rate"]), steps=int(m["dp-steps"]),
                    delta=float(m["dp-delta"]), max_grad_norm=float(m["dp-clip"]),
                    epochs=int(m["dp-epochs"]),
                    mechanism=MECHANISMS[self.settings.privacy.clipping])
        total = sum(weights) or 1.0
        loss = sum(x * w for x, w in zip(losses, weights, strict=True)) / total
        self.pending.update(participants=len(replies), train_loss=loss,
                            client_train_seconds=max(seconds) if seconds else 0.0,
                            client_train_seconds_sum=sum(seconds))
        return {"train-loss": loss, "participants": len(replies)}

    def eval_aggr(self, contents: list[RecordDict], weight_key: str) -> MetricRecord:
        """Client-side validation metrics, weighted by each client's number of validation users."""
        n = [int(_metrics(rd)["eval-users"]) for rd in contents]
        total = sum(n)
        out: dict[str, MetricRecordValues] = {}
        for key in EVAL_METRICS:
            vals = [float(_metrics(rd)[key]) for rd in contents]
            out[key] = sum(v * w for v, w in zip(vals, n, strict=True)) / total if total else 0.0
        self.pending["client_eval"] = out
        return MetricRecord(out)

    def epsilon_so_far(self, rounds_done: int) -> dict[str, float | None]:
        from recops.training.privacy import epsilon_for

        eps: dict[str, float | None] = {"client_level": None, "sample_level": None}
        if self.client_delta is not None and rounds_done:
            eps["client_level"] = epsilon_for(
                self.info["client_noise_multiplier"], self.info["sample_rate"], rounds_done,
                self.client_delta, self.settings.privacy.accountant)
        if self.dp_users.clients:
            eps["sample_level"] = self.dp_users.epsilon(self.settings.privacy.accountant)[0]
        return eps

    def record(self, server_round: int, global_metrics: Mapping[str, MetricRecordValues]) -> None:
        row = {"round": server_round, "participants": self.pending.get("participants", 0),
               "sampled": self.info["clients_per_round"] if server_round else 0,
               "train_loss": self.pending.get("train_loss"),
               "client_train_seconds": self.pending.get("client_train_seconds"),
               "client_train_seconds_sum": self.pending.get("client_train_seconds_sum"),
               "client_eval": self.pending.get("client_eval"),
               **{f"global_{k}": v for k, v in global_metrics.items()},
               "wall_seconds": time.perf_counter() - self.started}
        row["failures"] = max(0, row["sampled"] - row["participants"]) if server_round else 0
        if server_round:
            self.client_rounds += 1
        row["epsilon"] = self.epsilon_so_far(self.client_rounds)
        self.rows.append(row)
        self.pending = {}
        # Per-client DP-SGD steps first: if the run dies later, what ran is still accounted.
        write_json(self.path.parent / FED_DIR / DP_CLIENTS_FILE, self.dp_users.clients)
        write_json(self.path, self.rows)


def _wait_for_nodes(grid: Grid, expected: int, timeout: float) -> None:
    """Wait until every SuperNode of the partition plan is connected.

    Flower's samplers size a round from the nodes connected *now*; in deployment the first
    round could otherwise start with whichever SuperNodes came up first.
    """
    deadline = time.monotonic() + timeout
    while (n := len(list(grid.get_node_ids()))) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {n} of {expected} SuperNodes connected within "
                               f"{timeout:.0f} s")
        time.sleep(1.0)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Start the strategy from the runner's initial weights; save the final weights and rounds."""
    import torch

    from recops.training.evaluation import evaluate_model
    from recops.training.trainer import build_model

    run_dir, settings = settings_for_run(context.run_config)
    fed_dir = run_dir / FED_DIR
    manifest = read_manifest(run_dir)
    num_clients = int(manifest["num_partitions"])
    torch.set_num_threads(max(1, int(settings.train.num_threads)))
    strategy, info = build_strategy(settings.federated, num_clients, lr=settings.train.lr)
    round_timeout = float(context.run_config.get("round-timeout", 600.0))
    _wait_for_nodes(grid, num_clients, round_timeout)
    info["sample_rate"] = info["clients_per_round"] / num_clients
    inner = strategy
    while hasattr(inner, "strategy"):  # DP and server-optimiser wrappers hold the base strategy
        inner = inner.strategy
    if not isinstance(inner, FedAvg):  # every base strategy build_strategy makes is a FedAvg
        raise TrainingError(f"the base strategy {type(inner).__name__} has no metric hooks")
    recorder = RoundRecorder(run_dir / ROUNDS_FILE, info, settings, num_clients)
    inner.train_metrics_aggr_fn = recorder.train_aggr
    inner.evaluate_metrics_aggr_fn = recorder.eval_aggr

    valid = load_server_valid(run_dir)
    model = build_model(settings, valid.n_items)
    model.load_state_dict(torch.load(fed_dir / INITIAL_STATE, weights_only=True))

    def global_eval(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        load_arrays(model, arrays)
        res = evaluate_model(model, valid, split="valid", k=10, segments=False)
        metrics: dict[str, MetricRecordValues] = {
            k: float(v) for k, v in res.overall.items() if math.isfinite(float(v))}
        recorder.record(server_round, metrics)
        return MetricRecord(metrics)

    if settings.federated.secure_aggregation:
        # SecAgg+ exists only on Flower's workflow API: this path alone runs on it.
        from federated.secagg import run_secagg

        def secagg_eval(server_round: int, weights: dict[str, Any]) -> dict[str, Any]:
            return dict(global_eval(server_round, ArrayRecord(
                {k: Array(v) for k, v in weights.items()})))

        initial = {k: v.numpy() for k, v in arrays_from_model(model).items()}
        final = run_secagg(
            grid, context, fed=settings.federated, num_clients=num_clients, initial=initial,
            max_weight=float(max((c["n_users"] for c in manifest["clients"]), default=1)),
            round_timeout=round_timeout, train_metrics=recorder.train_metrics,
            evaluate=secagg_eval)
        load_arrays(model, ArrayRecord({k: Array(v) for k, v in final.items()}))
    else:
        train_config = ConfigRecord({"client-dp": settings.federated.client_dp})
        result = strategy.start(
            grid=grid, initial_arrays=arrays_from_model(model),
            num_rounds=settings.federated.rounds,
            timeout=round_timeout,
            train_config=train_config, evaluate_fn=global_eval)
        if len(result.arrays):  # empty when no round aggregated (every client failed)
            load_arrays(model, result.arrays)
    torch.save(model.state_dict(), fed_dir / FINAL_STATE)
    accountant = settings.privacy.accountant
    summary = {"strategy": info, "rounds": recorder.rows, "num_clients": num_clients,
               "client_level_delta": recorder.client_delta, "accountant": accountant,
               "completed_rounds": recorder.client_rounds}
    write_json(fed_dir / SUMMARY_FILE, summary)
