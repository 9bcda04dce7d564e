"""DP-SGD clipping: flat (ghost) against per-layer and adaptive, at the same ε, on synthetic users.

Synthetic data (public: choosing a setting on it costs no privacy), leave-last-out. Each row
is one ``recops.training.trainer.train_model`` run with the DP-SGD recipe of docs/privacy.md
and ``privacy.clipping`` set; the first row trains the same architecture without DP. Test
NDCG@10 over all users with the paired 95% interval of the gap to the ghost-clipping row and
the ratio to no DP; validation NDCG@10 beside (what a choice would be made on). Every
``--modes`` entry runs at the first of ``--epsilons``; the other ε run the first mode only
(ε against NDCG@10).

    .venv/bin/python benchmarks/bench_dp_clipping.py                          # 5,000 users
    .venv/bin/python benchmarks/bench_dp_clipping.py --users 5000 --epsilons 8 4 2 1
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

MODES = ("ghost", "per_layer", "adaptive", "flat")
SMALL = {"model.d_model": 32, "model.n_layers": 1, "model.n_heads": 1, "model.max_len": 30}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=5000)
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--epsilons", type=float, nargs="+", default=[8.0])
    p.add_argument("--modes", nargs="+", default=["ghost", "per_layer", "adaptive"])
    p.add_argument("--model", choices=("small", "default"), default="small",
                   help="small: d 32, 1 block, 30 positions; default: the shipped SASRec")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    if args.users < 100:
        p.error(f"--users must be at least 100, got {args.users}")
    if bad := [m for m in args.modes if m not in MODES]:
        p.error(f"--modes must be among {MODES}, got {bad}")
    if any(not e > 0 for e in args.epsilons):
        p.error("--epsilons must be > 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    warnings.simplefilter("ignore")
    import torch

    from recops.config import load_settings
    from recops.data.synthetic import generate
    from recops.training.evaluation import rank_targets
    from recops.training.metrics import ndcg_gains, paired_difference
    from recops.training.privacy import PrivacyLedger
    from recops.training.sequences import SequenceData
    from recops.training.trainer import train_model

    torch.set_num_threads(args.threads)
    t = generate(n_users=args.users, n_items=args.items, n_interactions=50 * args.users,
                 seed=1)
    base = {"data.dataset": "synthetic", "train.num_threads": args.threads,
            "privacy.budget_epsilon": 1e9, **(SMALL if args.model == "small" else {})}
    data = SequenceData.from_interactions(t.interactions, t.items,
                                          int(base.get("model.max_len", 50)))
    jobs: list[tuple[str, dict[str, Any]]] = [("no DP", {})]
    for i, eps in enumerate(args.epsilons):  # every mode at the first ε, the first mode after
        jobs += [(f"ε={eps:g} {mode}", {"privacy.enabled": True, "privacy.target_epsilon": eps,
                                          "privacy.clipping": mode})
                 for mode in (args.modes if i == 0 else args.modes[:1])]
    rows = []
    for name, over in jobs:
        with tempfile.TemporaryDirectory() as home:
            s = load_settings(overrides={**base, **over, "home": home})
            t0 = time.perf_counter()
            res = train_model(s, data, progress=False,
                              ledger=PrivacyLedger(Path(home) / "ledger.jsonl"))
            wall = time.perf_counter() - t0
        ranks, _ = rank_targets(res.model, data, "test")
        p = res.privacy or {}
        rows.append({"name": name, "valid": res.valid_metrics["ndcg@10"],
                     "gains": ndcg_gains(ranks, 10), "eps": p.get("epsilon"), "wall": wall,
                     "sigma": p.get("noise_multiplier")})
        print(f"# {name}: valid {rows[-1]['valid']:.4f}, {wall:.0f} s", file=sys.stderr,
              flush=True)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"\n{args.users} synthetic users, {args.items} items, {args.model} SASRec; "
          f"uptime: {uptime}\n")
    print("| run | ε | σ | valid NDCG@10 | test NDCG@10 | × no DP | gap to ghost at that ε, 95% "
          "| wall s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    ref = float(np.mean(rows[0]["gains"]))
    for r in rows:
        ghost = next((g for g in rows if g["eps"] is not None and r["eps"] is not None
                      and g["name"].endswith(" ghost") and g["name"].split()[0]
                      == r["name"].split()[0]), None)
        gap = "–" if ghost is None or ghost is r else "{:+.4f} ± {:.4f}".format(
            *paired_difference(r["gains"], ghost["gains"]))
        test = float(np.mean(r["gains"]))
        eps = "∞" if r["eps"] is None else f"{r['eps']:.2f}"
        sigma = "–" if r["sigma"] is None else f"{r['sigma']:.2f}"
        print(f"| {r['name']} | {eps} | {sigma} | {r['valid']:.4f} | {test:.4f} | "
              f"{test / ref:.2f}× | {gap} | {r['wall']:.0f} |")


if __name__ == "__main__":
    main()
