"""SecAgg+ overhead per round against plain FedAvg, at 10 and 100 virtual clients.

Both arms run the project's real ClientApp (a small SASRec: d 16, one block, on synthetic data)
over the in-process loopback grid (``federated.loopback``: every message copied as a transport
would, no SuperLink, no Ray), so the difference is the protocol itself: key agreement, Shamir
shares, pairwise and private masks on the clients, unmasking on the server, and the extra
message rounds (4 per round instead of 1). Plain: the Message-API FedAvg with no evaluation.
SecAgg+: ``federated.secagg.run_secagg`` (Flower's SecAggPlusWorkflow) with no evaluation.
Seconds per round are the mean over the rounds after a warm-up round; "client s" is the time
inside the ClientApp (training, and for SecAgg+ also masking), the rest is server side.

    .venv/bin/python benchmarks/bench_secagg.py              # 10 and 100 clients, ~5 min
    .venv/bin/python benchmarks/bench_secagg.py --clients 10 --rounds 2
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL = {"data.dataset": "synthetic", "model.d_model": 16, "model.n_layers": 1,
         "model.n_heads": 1, "model.max_len": 20, "model.dropout": 0.1, "train.batch_size": 32,
         "train.lr": 0.005, "train.num_threads": 1}
# (clients, shares, threshold): SecAgg+ shares grow like log(n), not n.
SETUPS = {10: (5, 3), 100: (11, 6)}


def _prepare(n: int, shares: int, threshold: int, root: Path) -> tuple[Any, Path, Any]:
    from federated.runner import prepare_run
    from recops.config import load_settings
    from recops.data.synthetic import generate
    from recops.training.sequences import SequenceData

    settings = load_settings(overrides={
        **MODEL, "home": str(root / "home"), "federated.num_clients": n,
        "federated.secure_aggregation": True, "federated.secagg_num_shares": shares,
        "federated.secagg_reconstruction_threshold": threshold})
    t = generate(n_users=20 * n, n_items=200, n_interactions=400 * n, n_clusters=4, days=10,
                 seed=1)
    data = SequenceData.from_interactions(t.interactions, t.items, 20)
    run_dir = root / f"run{n}"
    _, model, manifest = prepare_run(settings, data, run_dir)
    return settings, run_dir, (model, manifest)


def _grid(settings: Any, run_dir: Path, n: int) -> Any:
    from federated import client_app
    from federated.common import run_config_from_settings
    from federated.loopback import LoopbackGrid

    return LoopbackGrid(client_app.app, run_config_from_settings(settings, run_dir), n)


def _plain(settings: Any, run_dir: Path, n: int, model: Any, rounds: int) -> tuple[float, float]:
    from flwr.app import ConfigRecord
    from flwr.serverapp.strategy import FedAvg

    from federated.common import arrays_from_model

    grid = _grid(settings, run_dir, n)
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n,
                      min_evaluate_nodes=0, min_available_nodes=n)
    started = time.perf_counter()
    strategy.start(grid=grid, initial_arrays=arrays_from_model(model), num_rounds=rounds,
                   train_config=ConfigRecord({"client-dp": "off"}))
    return (time.perf_counter() - started) / rounds, grid.client_seconds / rounds


def _secagg(settings: Any, run_dir: Path, n: int, model: Any, manifest: dict,
            rounds: int) -> tuple[float, float]:
    from flwr.app import Context, RecordDict

    from federated.common import arrays_from_model
    from federated.secagg import run_secagg

    grid = _grid(settings, run_dir, n)
    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    fed = settings.federated.model_copy(update={"rounds": rounds})
    initial = {k: v.numpy() for k, v in arrays_from_model(model).items()}
    started = time.perf_counter()
    run_secagg(grid, ctx, fed=fed, num_clients=n, initial=initial,
               max_weight=float(max(c["n_users"] for c in manifest["clients"])),
               round_timeout=600.0, train_metrics=lambda replies: {},
               evaluate=lambda rnd, weights: {})
    return (time.perf_counter() - started) / rounds, grid.client_seconds / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="*", default=sorted(SETUPS))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    rows = []
    for n in args.clients:
        shares, threshold = SETUPS.get(n, (min(n, 5) | 1, min(n, 5) // 2 + 1))
        with tempfile.TemporaryDirectory() as tmp:
            settings, run_dir, (model, manifest) = _prepare(n, shares, threshold, Path(tmp))
            n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
            _plain(settings, run_dir, n, model, 1)  # warm-up: imports, first data loads
            plain, plain_client = _plain(settings, run_dir, n, model, args.rounds)
            secure, secure_client = _secagg(settings, run_dir, n, model, manifest, args.rounds)
        rows.append((n, shares, threshold, n_params, plain, plain_client, secure, secure_client))
        print(f"done {n} clients", file=sys.stderr, flush=True)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"\nSecAgg+ vs plain FedAvg, s per round (mean of {args.rounds}); uptime: {uptime}\n")
    print("| clients | shares / threshold | parameters | FedAvg s | of which client s "
          "| SecAgg+ s | of which client s | overhead s | × |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n, sh, t, p, plain, pc, secure, sc in rows:
        print(f"| {n} | {sh} / {t} | {p:,} | {plain:.2f} | {pc:.2f} | {secure:.2f} | {sc:.2f} "
              f"| {secure - plain:+.2f} | {secure / plain:.2f} |")


if __name__ == "__main__":
    main()
