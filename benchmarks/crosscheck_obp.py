"""Cross-check recops' item-position IPS and SNIPS against Open Bandit Pipeline's slate
estimators (SlateIndependentIPS, SelfNormalizedSlateIndependentIPS) on simulated logs.

obp does not install into recops' pinned environment (obp 0.5.7 needs Python < 3.11 and pins
torch 1.12, numpy 1.23, pandas 1.5, scikit-learn 1.1; docs/policies.md), so this runs with any
Python that has obp and numpy, not in the tests:

    python3.11 -m venv /tmp/obp && /tmp/obp/bin/pip install numpy scipy pandas scikit-learn \\
        matplotlib tqdm seaborn pyyaml && /tmp/obp/bin/pip install --no-deps \\
        --ignore-requires-python obp==0.5.7
    # obp imports torch at start-up: let that venv see one (e.g. a .pth file naming
    # .venv/lib/python3.11/site-packages, appended after its own packages)
    /tmp/obp/bin/python benchmarks/crosscheck_obp.py

obp's estimate is per slate (the sum over slots); recops' is per slot (divided by k). obp's
self-normalised variant normalises each slot separately, recops' SNIPS the list's slots
together: both are consistent, not identical.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from obp.ope import SelfNormalizedSlateIndependentIPS, SlateIndependentIPS  # noqa: E402

from recops.policy import ope  # noqa: E402
from recops.policy.policies import EpsilonGreedy, Greedy  # noqa: E402
from recops.policy.simulator import make_world, simulate_log, true_value  # noqa: E402


def main() -> None:
    logging = EpsilonGreedy(0.3, 10)
    print("| seed | target | truth | recops IPS | obp IIPS / k | recops SNIPS | obp SN-IIPS / k |")
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    for seed in range(5):
        world = make_world(seed)
        logged = simulate_log(world, logging, 2000, np.random.default_rng(10_000 + seed))
        n, k = logged.shown.shape
        for target in (Greedy(), EpsilonGreedy(0.05, 10)):
            pt = ope.target_marginals(logged, target.marginals)
            p_t = np.take_along_axis(pt, logged.shown[:, :, None], axis=2)[:, :, 0]
            args = {"slate_id": np.repeat(np.arange(n), k), "reward": logged.clicks.ravel(),
                    "position": np.tile(np.arange(k), n),
                    "pscore_item_position": logged.propensity.ravel(),
                    "evaluation_policy_pscore_item_position": p_t.ravel()}
            theirs = SlateIndependentIPS(len_list=k).estimate_policy_value(**args) / k
            theirs_sn = SelfNormalizedSlateIndependentIPS(len_list=k).estimate_policy_value(
                **args) / k
            ours, ours_sn = ope.ips(logged, pt).value, ope.snips(logged, pt).value
            worst = max(worst, abs(ours - theirs))
            print(f"| {seed} | {target.tag} | {true_value(world, target):.4f} | {ours:.6f} "
                  f"| {theirs:.6f} | {ours_sn:.6f} | {theirs_sn:.6f} |")
    print(f"\nlargest |recops IPS - obp IIPS/k|: {worst:.2e}")


if __name__ == "__main__":
    main()
