"""Cross-device DP-FedAvg (every user a virtual client) against centralised training without DP.

Synthetic data of ``--users`` users (public data: choosing settings on it costs no privacy).
Centralised: SASRec trained with the default recipe (early stopping on validation), no DP.
Federated: Flower's simulation engine (``flwr run`` on a simulation SuperLink, virtual clients
in Ray actors, not one process per client) with one client per user, a fraction
``--fraction`` sampled per round, each client's update clipped to ``--clip`` (L2) and Gaussian
noise σ·clip on the sum (Flower's DifferentialPrivacyClientSideFixedClipping), for
``--rounds`` rounds; σ is calibrated so that the user-level ε after the last round is
``--epsilon`` (δ = 1/(10·users), ``privacy.accountant``) unless ``--noise`` gives it. Each
``--strategies`` entry is one federated row: fedavg (the noised mean is the new model),
fedavgm or fedadam (a server momentum/Adam step along the noised mean, post-processing).
``--dp-sgd`` adds centralised DP-SGD at the same ε with the same users per step and steps
(q = ``--fraction``, ``--rounds`` × ``--fraction`` epochs; Adam at ``--server-lr`` if given):
what the federation would reach if it were DP-SGD.

Rows: validation and test NDCG@10 over all users, the paired 95% interval of the test gap to
the centralised model, ε, wall seconds, and seconds per round (first round, which starts Ray,
and the median of the others). Uptime beside.

    .venv/bin/python benchmarks/bench_dp_fedavg.py                     # 1,000 users, minutes
    .venv/bin/python benchmarks/bench_dp_fedavg.py --users 5000 --rounds 100 --fraction 0.05
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL = {"data.dataset": "synthetic", "model.kind": "sasrec", "model.d_model": 32,
         "model.n_layers": 1, "model.n_heads": 1, "model.max_len": 30, "model.dropout": 0.1,
         "train.batch_size": 64, "train.lr": 3e-3, "train.num_threads": 1,
         "privacy.budget_epsilon": 1e9}
STRATEGIES = ("fedavg", "fedavgm", "fedadam")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--items", type=int, default=300)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--epsilon", type=float, default=8.0, help="user-level ε to calibrate σ for")
    p.add_argument("--noise", type=float, default=None, help="σ itself (overrides --epsilon)")
    p.add_argument("--clip", type=float, default=0.5)
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--client-lr", type=float, default=0.0, help="0 = train.lr")
    p.add_argument("--client-optimizer", choices=("adam", "sgd"), default="adam")
    p.add_argument("--strategies", nargs="+", default=["fedavg", "fedadam"])
    p.add_argument("--server-lr", type=float, default=0.0, help="0 = the strategy's default")
    p.add_argument("--server-momentum", type=float, default=0.9)
    p.add_argument("--dp-sgd", action="store_true", help="add centralised DP-SGD at the same ε")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    args = p.parse_args(argv)
    if args.users < 1000:
        p.error(f"--users must be at least 1000 (cross-device), got {args.users}")
    if not 0 < args.fraction <= 1:
        p.error(f"--fraction must lie in (0, 1], got {args.fraction}")
    if args.rounds < 1 or args.local_epochs < 1:
        p.error("--rounds and --local-epochs must be at least 1")
    if args.client_lr < 0:
        p.error(f"--client-lr must be >= 0, got {args.client_lr}")
    if not (args.epsilon > 0 and args.clip > 0) or (args.noise is not None and args.noise <= 0):
        p.error("--epsilon, --noise and --clip must be > 0")
    if bad := [s for s in args.strategies if s not in STRATEGIES]:
        p.error(f"--strategies must be among {STRATEGIES}, got {bad}")
    return args


def calibrate(args: argparse.Namespace, accountant: str) -> float:
    from recops.training.privacy import noise_for

    q = int(args.users * args.fraction) / args.users
    return noise_for(args.epsilon, q, args.rounds, 1 / (10 * args.users), accountant,
                     tolerance=0.005)


def test_gains(model: Any, data: Any) -> np.ndarray:
    from recops.training.evaluation import rank_targets
    from recops.training.metrics import ndcg_gains

    ranks, _ = rank_targets(model, data, "test")
    return ndcg_gains(ranks, 10)


def round_seconds(rounds_file: Path) -> tuple[float, float]:
    """(first round, median of the later rounds) from the ServerApp's rows (cumulative wall)."""
    rows = json.loads(rounds_file.read_text())
    walls = [r["wall_seconds"] for r in rows]  # row 0: the initial evaluation
    per = [b - a for a, b in zip(walls, walls[1:], strict=False)]
    return per[0], statistics.median(per[1:]) if len(per) > 1 else float("nan")


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    warnings.simplefilter("ignore")

    from federated.runner import train_federated
    from recops.config import load_settings
    from recops.data.synthetic import generate
    from recops.training.metrics import paired_difference
    from recops.training.sequences import SequenceData
    from recops.training.trainer import train_model

    t = generate(n_users=args.users, n_items=args.items, n_interactions=30 * args.users,
                 n_clusters=8, days=30, seed=1)
    data = SequenceData.from_interactions(t.interactions, t.items, 30)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        home = str(Path(tmp) / "home")
        s = load_settings(overrides={**MODEL, "home": home})
        sigma = args.noise or calibrate(args, s.privacy.accountant)
        started = time.perf_counter()
        res = train_model(s, data, progress=False)
        rows.append({"row": "centralised, no DP", "valid": res.valid_metrics["ndcg@10"],
                     "gains": test_gains(res.model, data), "eps": None,
                     "wall": time.perf_counter() - started,
                     "setting": f"{len(res.history)} epochs, early stopping"})
        print(f"# {rows[-1]['row']}: valid {rows[-1]['valid']:.4f}", file=sys.stderr, flush=True)
        if args.dp_sgd:
            # The same users per step and steps as the federated rows: q = --fraction and
            # --rounds steps (rounds × fraction epochs), Adam at --server-lr when given.
            dp = load_settings(overrides={
                **MODEL, "home": home, "privacy.enabled": True,
                "privacy.target_epsilon": args.epsilon, "privacy.batch_fraction": args.fraction,
                "privacy.dp_epochs": max(1, round(args.rounds * args.fraction)),
                **({"privacy.dp_lr": args.server_lr} if args.server_lr else {})})
            started = time.perf_counter()
            res = train_model(dp, data, progress=False)
            p = res.privacy or {}
            rows.append({"row": "centralised DP-SGD", "valid": res.valid_metrics["ndcg@10"],
                         "gains": test_gains(res.model, data), "eps": p.get("epsilon"),
                         "wall": time.perf_counter() - started,
                         "setting": f"σ {p.get('noise_multiplier', 0):.2f}, q "
                                    f"{p.get('sample_rate', 0):.2f}, {p.get('steps')} steps"})
            print(f"# {rows[-1]['row']}: valid {rows[-1]['valid']:.4f}", file=sys.stderr,
                  flush=True)
        for name in args.strategies:
            fed = load_settings(overrides={
                **MODEL, "home": home, "federated.users_as_clients": True,
                "federated.client_optimizer": args.client_optimizer,
                "federated.client_lr": args.client_lr,
                "federated.strategy": name, "federated.server_lr": args.server_lr,
                "federated.server_momentum": args.server_momentum,
                "federated.client_dp": "fixed", "federated.client_noise_multiplier": sigma,
                "federated.client_clipping_norm": args.clip,
                "federated.fraction_train": args.fraction, "federated.rounds": args.rounds,
                "federated.local_epochs": args.local_epochs, "federated.engine": "simulation"})
            run_dir = Path(tmp) / "runs" / name
            started = time.perf_counter()
            res = train_federated(fed, data, run_dir=run_dir, engine="simulation",
                                  timeout=6 * 3600.0)
            wall = time.perf_counter() - started
            first, later = round_seconds(run_dir / "federated_rounds.json")
            per_round = int(fed.federated.num_clients * args.fraction)
            rows.append({
                "row": f"DP-{name}, {fed.federated.num_clients} clients",
                "valid": res.valid_metrics["ndcg@10"], "gains": test_gains(res.model, data),
                "eps": res.privacy["epsilon"] if res.privacy else None, "wall": wall,
                "first_round": first, "round": later,
                "setting": f"{args.rounds} rounds × {per_round} clients, σ {sigma:.3f}, "
                           f"clip {args.clip}"})
            print(f"# {rows[-1]['row']}: valid {rows[-1]['valid']:.4f}, {later:.1f} s/round",
                  file=sys.stderr, flush=True)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    ref = rows[0]
    print(f"\n{args.users} synthetic users, {args.items} items; uptime: {uptime}\n")
    print("| row | valid NDCG@10 | test NDCG@10 | × centralised | paired test gap, 95% | "
          "user-level ε | wall s | s/round (first / later) | setting |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        test = float(np.mean(r["gains"]))
        gap = "–" if r is ref else "{:+.4f} ± {:.4f}".format(
            *paired_difference(r["gains"], ref["gains"]))
        per = f"{r['first_round']:.1f} / {r['round']:.1f}" if "round" in r else "–"
        eps = "—" if r["eps"] is None else f"{r['eps']:.2f}"
        print(f"| {r['row']} | {r['valid']:.4f} | {test:.4f} | "
              f"{test / float(np.mean(ref['gains'])):.2f}× | {gap} | {eps} | "
              f"{r['wall']:.0f} | {per} | {r['setting']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{k: v for k, v in r.items() if k != "gains"} | {"test": float(np.mean(r["gains"]))}
             for r in rows], indent=1))


if __name__ == "__main__":
    main()
