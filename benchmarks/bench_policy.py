"""Serving policies on the simulator (recops.policy.simulator): the off-policy estimators' bias
and the coverage of their 95% intervals over many seeds, and the true click rate of greedy
against epsilon-greedy over a long run in which each learns from its own feedback.

Part 1: each seed draws a world (200 users, 60 items, each user's 10 candidates ranked by a noisy
model, position-biased clicks), logs ``--lists`` lists served by epsilon-greedy (0.3, top 10) and
estimates target policies' click rate per slot; the truth is exact (from the click model).
Part 2: every user gets the same 20 candidates (a cold, popularity-like model with a
mis-specified item bias); a policy re-ranks them by a per-item click-rate estimate that starts
at a pessimistic prior and is updated from the clicks on what that policy showed.

    .venv/bin/python benchmarks/bench_policy.py                 # ~1 min on 2 cores
    .venv/bin/python benchmarks/bench_policy.py --seeds 100     # quicker
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recops.policy import ope  # noqa: E402
from recops.policy.policies import EpsilonGreedy, Greedy, Policy  # noqa: E402
from recops.policy.simulator import (  # noqa: E402
    learning_run,
    make_world,
    simulate_log,
    true_value,
)

LOGGING = EpsilonGreedy(0.3, 10)
TARGETS: list[Policy] = [Greedy(), EpsilonGreedy(0.05, 10), EpsilonGreedy(1.0, 10)]
ESTIMATORS = ("ips", "snips", "dr", "dm")
WINDOWS = ((0, 100), (100, 250), (250, 500), (500, 1000))


def estimator_table(seeds: int, lists: int) -> None:
    print(f"\n## Off-policy estimates: logging {LOGGING.tag}, {lists} lists, {seeds} seeds")
    print("| target | true value (mean) | estimator | bias | RMSE | mean 95% width | coverage |")
    print("|---|---|---|---|---|---|---|")
    for target in TARGETS:
        err: dict[str, list[float]] = {e: [] for e in ESTIMATORS}
        width: dict[str, list[float]] = {e: [] for e in ESTIMATORS}
        hits = dict.fromkeys(ESTIMATORS, 0)
        truths = []
        for seed in range(seeds):
            world = make_world(seed)
            truth = true_value(world, target)
            truths.append(truth)
            logged = simulate_log(world, LOGGING, lists, np.random.default_rng(10_000 + seed))
            for name, est in ope.estimate_all(logged, target.marginals, seed=seed).items():
                err[name].append(est.value - truth)
                width[name].append(est.high - est.low)
                hits[name] += est.covers(truth)
        for name in ESTIMATORS:
            e = np.asarray(err[name])
            print(f"| {target.tag} | {np.mean(truths):.4f} | {name.upper()} | {e.mean():+.5f} "
                  f"| {np.sqrt((e ** 2).mean()):.5f} | {np.mean(width[name]):.4f} "
                  f"| {hits[name] / seeds:.3f} |")


def reward_table(seeds: int, rounds: int, per_round: int) -> None:
    policies: list[Policy] = [Greedy()] + [EpsilonGreedy(e, 20) for e in (0.05, 0.1, 0.2)]
    curves = {p.tag: np.zeros((seeds, rounds)) for p in policies}
    for seed in range(seeds):
        world = make_world(seed, n_candidates=20, shared=True)
        prior = np.zeros(world.attract.shape[1])
        prior[world.candidates[0]] = 0.5 * world.attract.mean() * (1 - 0.01 * np.arange(20))
        for p in policies:
            curves[p.tag][seed] = learning_run(world, p, rounds=rounds, per_round=per_round,
                                               seed=seed, prior=prior)
    windows = [(a, min(b, rounds)) for a, b in WINDOWS if a < rounds]
    print(f"\n## True click rate per slot over time: {seeds} seeds, {per_round} lists a round "
          "(mean over seeds; gain over greedy with a 95% interval paired over seeds)")
    print("| policy | " + " | ".join(f"rounds {a + 1}-{b}" for a, b in windows)
          + " | gain over greedy, last window |")
    print("|---|" + "---|" * (len(windows) + 1))
    base = curves["greedy"][:, windows[-1][0]:windows[-1][1]].mean(axis=1)
    for tag, c in curves.items():
        cells = [f"{c[:, a:b].mean():.4f}" for a, b in windows]
        last = c[:, windows[-1][0]:windows[-1][1]].mean(axis=1)
        d = last - base
        half = 1.96 * d.std(ddof=1) / np.sqrt(seeds) if seeds > 1 else float("nan")
        gain = "—" if tag == "greedy" else f"{d.mean():+.4f} ± {half:.4f}"
        print(f"| {tag} | " + " | ".join(cells) + f" | {gain} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=500, help="worlds for the estimator table")
    ap.add_argument("--lists", type=int, default=2000, help="logged lists per world")
    ap.add_argument("--reward-seeds", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--per-round", type=int, default=50)
    a = ap.parse_args()
    t0 = time.perf_counter()
    estimator_table(a.seeds, a.lists)
    t1 = time.perf_counter()
    reward_table(a.reward_seeds, a.rounds, a.per_round)
    t2 = time.perf_counter()
    print(f"\nestimators {t1 - t0:.1f} s, learning runs {t2 - t1:.1f} s; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
