"""Cross-device DP-FedAvg (every user a virtual client) against centralised training without DP.

Synthetic data of ``--users`` users. Centralised: SASRec trained for ``--epochs`` epochs, no DP.
Federated: Flower's simulation engine (``flwr run`` on a simulation SuperLink, virtual clients
in Ray, not one process per client) with one client per user, a fraction ``--fraction`` sampled
per round, each client's update clipped to ``--clip`` (L2) and Gaussian noise σ·clip on the sum
(Flower's DifferentialPrivacyClientSideFixedClipping), for ``--rounds`` rounds; user-level ε
from the RDP accountant over the rounds (sampled Gaussian mechanism, q = fraction, δ =
1/(10·users)). Validation NDCG@10 of both on the same users; wall seconds; uptime beside.

    .venv/bin/python benchmarks/bench_dp_fedavg.py                     # 1,000 users, minutes
    .venv/bin/python benchmarks/bench_dp_fedavg.py --users 20000 --rounds 200 --fraction 0.02
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL = {"data.dataset": "synthetic", "model.kind": "sasrec", "model.d_model": 32,
         "model.n_layers": 1, "model.n_heads": 1, "model.max_len": 30, "model.dropout": 0.1,
         "train.batch_size": 64, "train.lr": 3e-3, "train.num_threads": 1,
         "privacy.budget_epsilon": 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--noise", type=float, default=0.8)
    parser.add_argument("--clip", type=float, default=0.5)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=5, help="centralised epochs")
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)

    from federated.runner import train_federated
    from recops.config import load_settings
    from recops.data.synthetic import generate
    from recops.training.sequences import SequenceData
    from recops.training.trainer import train_model

    t = generate(n_users=args.users, n_items=args.items, n_interactions=30 * args.users,
                 n_clusters=8, days=30, seed=1)
    data = SequenceData.from_interactions(t.interactions, t.items, 30)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        home = str(Path(tmp) / "home")
        central = load_settings(overrides={**MODEL, "home": home, "train.epochs": args.epochs,
                                           "train.patience": args.epochs})
        started = time.perf_counter()
        res = train_model(central, data, progress=False)
        rows.append(("centralised, no DP", res.valid_metrics["ndcg@10"], None,
                     time.perf_counter() - started, f"{args.epochs} epochs"))
        print(f"centralised done: {rows[-1]}", file=sys.stderr, flush=True)
        fed = load_settings(overrides={
            **MODEL, "home": home, "federated.users_as_clients": True,
            "federated.client_dp": "fixed", "federated.client_noise_multiplier": args.noise,
            "federated.client_clipping_norm": args.clip, "federated.fraction_train": args.fraction,
            "federated.rounds": args.rounds, "federated.local_epochs": args.local_epochs,
            "federated.engine": "simulation"})
        started = time.perf_counter()
        res = train_federated(fed, data, run_dir=Path(tmp) / "runs" / "dpfedavg",
                              engine="simulation", timeout=3600.0)
        eps = res.privacy["epsilon"] if res.privacy else None
        per_round = int(fed.federated.num_clients * args.fraction)
        rows.append((f"DP-FedAvg, {fed.federated.num_clients} clients", res.valid_metrics[
            "ndcg@10"], eps, time.perf_counter() - started,
            f"{args.rounds} rounds × {per_round} clients, σ {args.noise}, clip {args.clip}"))
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    base = rows[0][1]
    print(f"\n{args.users} synthetic users, {args.items} items; uptime: {uptime}\n")
    print("| row | valid NDCG@10 | vs centralised | user-level ε (δ = 1/(10·users)) | wall s "
          "| setting |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, ndcg, eps, secs, setting in rows:
        print(f"| {name} | {ndcg:.4f} | {ndcg / base:.2f}× | "
              f"{'—' if eps is None else f'{eps:.2f}'} | {secs:.0f} | {setting} |")


if __name__ == "__main__":
    main()
