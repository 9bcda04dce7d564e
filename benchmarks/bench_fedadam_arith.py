"""DP-FedAdam's arithmetic in one process: which server Adam, at which population size.

Flower's simulation costs about 50 s a round at 20,000 virtual clients on 2 cores, nearly all
of it the engine's dispatch (docs/federated.md); the arithmetic of a round is a few seconds.
This benchmark runs that arithmetic alone, so server settings can be compared across seeds
and population sizes in minutes: each round samples ``--fraction`` of the users without
replacement; each sampled user, from the global weights, takes one SGD step at
``--client-lr`` per window of its whole training history (batch 1, shuffled: what
``federated/client_app.py`` does for a one-user client with ``client_optimizer: sgd``); its
update is clipped to ``--clip`` (L2, all parameters); Gaussian noise σ·clip goes on the sum
and the mean is the server's update, on which ``--forms`` steps:

* ``torch``: ``federated.server_opt.ServerOptimizer`` (``torch.optim.Adam``'s step, β₂ 0.999,
  ε 1e-8), what recops ships;
* ``fedadam``: FedAdam's usual form (Reddi et al. 2021; Flower's ``FedAdam``), β₂ 0.99 and
  τ = 1e-3 inside the bias-corrected rate, what recops shipped before.

σ is calibrated to the user-level ``--epsilon`` over ``--rounds`` (δ = 1/(10·users), PRV), as
in ``bench_dp_fedavg.py``. Synthetic data as there (public: choosing on it costs no privacy).
Rows: validation and test NDCG@10 over all users, the paired 95% interval of the test gap to
the first form with the same seed, wall seconds. Not Flower: the figures of record for the
federation are ``bench_dp_fedavg.py``'s; this one says what a setting changes.

    .venv/bin/python benchmarks/bench_fedadam_arith.py                       # 1,000 users
    .venv/bin/python benchmarks/bench_fedadam_arith.py --users 20000 --rounds 40 --fraction 0.05 \\
        --server-lr 0.03 --seeds 0 1
"""

from __future__ import annotations

import argparse
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

FORMS = ("torch", "fedadam")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--items", type=int, default=300)
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--fraction", type=float, default=0.2)
    p.add_argument("--epsilon", type=float, default=8.0, help="user-level ε to calibrate σ for")
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--client-lr", type=float, default=1.0)
    p.add_argument("--server-lr", type=float, default=0.01)
    p.add_argument("--forms", nargs="+", default=list(FORMS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = p.parse_args(argv)
    if args.users < 1000:
        p.error(f"--users must be at least 1000 (cross-device), got {args.users}")
    if not 0 < args.fraction <= 1:
        p.error(f"--fraction must lie in (0, 1], got {args.fraction}")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    if not (args.epsilon > 0 and args.clip > 0 and args.client_lr > 0 and args.server_lr > 0):
        p.error("--epsilon, --clip, --client-lr and --server-lr must be > 0")
    if bad := [f for f in args.forms if f not in FORMS]:
        p.error(f"--forms must be among {FORMS}, got {bad}")
    return args


class FedAdamForm:
    """FedAdam as Reddi et al. write it: x ← x + η·√(1−β₂ᵗ)/(1−β₁ᵗ)·m / (√v + τ)."""

    def __init__(self, lr: float, beta_1: float = 0.9, beta_2: float = 0.99,
                 tau: float = 1e-3) -> None:
        self.lr, self.b1, self.b2, self.tau = lr, beta_1, beta_2, tau
        self.first: dict[str, np.ndarray] = {}
        self.second: dict[str, np.ndarray] = {}
        self.current: dict[str, np.ndarray] = {}
        self.steps = 0

    def step(self, delta: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.steps += 1
        for k, d in delta.items():
            self.first[k] = self.b1 * self.first.get(k, 0.0) + (1 - self.b1) * d
            self.second[k] = self.b2 * self.second.get(k, 0.0) + (1 - self.b2) * d * d
        rate = self.lr * np.sqrt(1 - self.b2 ** self.steps) / (1 - self.b1 ** self.steps)
        return {k: self.current[k] + rate * self.first[k] / (np.sqrt(self.second[k]) + self.tau)
                for k in delta}


def run(form: str, seed: int, args: argparse.Namespace, data: Any, sigma: float,
        per_user: list[tuple[Any, Any]]) -> tuple[float, np.ndarray, float]:
    """One DP-FedAdam training; (validation NDCG@10, per-user test gains, wall seconds)."""
    import torch
    from bench_dp_fedavg import MODEL, test_gains

    from federated.server_opt import ServerOptimizer
    from recops.config import load_settings
    from recops.training.evaluation import evaluate_model
    from recops.training.trainer import build_model

    settings = load_settings(overrides={**MODEL, "home": tempfile.gettempdir()})
    torch.manual_seed(settings.seed)  # the same initial model for every form and seed
    model = build_model(settings, data.n_items)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    server: Any = (ServerOptimizer(None, "adam", args.server_lr)  # type: ignore[arg-type]
                   if form == "torch" else FedAdamForm(args.server_lr))
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    per_round = int(args.users * args.fraction)
    started = time.perf_counter()
    for _ in range(args.rounds):
        glob = {n: p.detach().clone() for n, p in params.items()}
        server.current = {n: g.double().numpy() for n, g in glob.items()}
        total = {n: torch.zeros_like(g) for n, g in glob.items()}
        for u in rng.choice(args.users, per_round, replace=False):
            x, y = per_user[u]
            if not len(x):
                continue  # no window: the user sends no update (counted in the mean as zero)
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(glob[n])
            sgd = torch.optim.SGD(params.values(), lr=args.client_lr)
            model.train()
            for i in torch.randperm(len(x), generator=gen):
                sgd.zero_grad(set_to_none=True)
                model.training_loss(x[i:i + 1], y[i:i + 1], 0).mean().backward()
                sgd.step()
            with torch.no_grad():
                update = {n: p - glob[n] for n, p in params.items()}
                norm = float(torch.sqrt(sum((d ** 2).sum() for d in update.values())))
                scale = min(1.0, args.clip / max(norm, 1e-12))
                for n, d in update.items():
                    total[n] += d * scale
        mean = {n: ((t + torch.normal(0.0, sigma * args.clip, t.shape, generator=gen))
                    / per_round).double().numpy() for n, t in total.items()}
        new = server.step(mean)
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(torch.from_numpy(new[n]).to(p.dtype))
    wall = time.perf_counter() - started
    model.eval()
    valid = float(evaluate_model(model, data, "valid", segments=False).overall["ndcg@10"])
    return valid, test_gains(model, data), wall


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    warnings.simplefilter("ignore")
    import torch
    from bench_dp_fedavg import calibrate

    from recops.data.synthetic import generate
    from recops.training.metrics import paired_difference
    from recops.training.samples import history_windows, training_pairs
    from recops.training.sequences import SequenceData

    torch.set_num_threads(1)
    t = generate(n_users=args.users, n_items=args.items, n_interactions=30 * args.users,
                 n_clusters=8, days=30, seed=1)
    data = SequenceData.from_interactions(t.interactions, t.items, 30)
    per_user = [training_pairs(history_windows([h], 30), 30) for h in data.train_histories]
    sigma = calibrate(args, "prv")  # reads users, fraction, rounds, epsilon
    rows = []
    for seed in args.seeds:
        ref = None
        for form in args.forms:
            valid, gains, wall = run(form, seed, args, data, sigma, per_user)
            if ref is None:
                ref, gap = gains, "–"
            else:
                gap = "{:+.4f} ± {:.4f}".format(*paired_difference(gains, ref))
            rows.append(f"| {form} | {seed} | {valid:.4f} | {float(np.mean(gains)):.4f} | "
                        f"{gap} | {wall:.0f} |")
            print(f"# {form} seed {seed}: valid {valid:.4f}", file=sys.stderr, flush=True)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"\n{args.users} synthetic users, {args.items} items; {args.rounds} rounds × "
          f"{int(args.users * args.fraction)} users, σ {sigma:.3f}, clip {args.clip}, "
          f"server rate {args.server_lr}; uptime: {uptime}\n")
    print(f"| server Adam | seed | valid NDCG@10 | test NDCG@10 | paired test gap to "
          f"{args.forms[0]}, 95% | wall s |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
