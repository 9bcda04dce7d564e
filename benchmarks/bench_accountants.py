"""RDP against PRV for the DP-SGD recipe: the noise each needs for the same user-level ε.

For the recipe's sampling (privacy.batch_fraction, Poisson) and steps (privacy.dp_epochs /
batch_fraction), at δ = 1/(10·users), each accountant calibrates the noise multiplier σ that
reaches ε; a smaller σ at the same ε is less noise in every step. The last column is the ε the
RDP accountant would report for the σ that PRV calibrated, i.e. how much RDP over-states what
the same training costs. No training: the accountants only (Opacus). Takes ~30 s.

    .venv/bin/python benchmarks/bench_accountants.py [--users 20000 40000 610]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, nargs="+", default=[20_000, 40_000, 610])
    ap.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0])
    ap.add_argument("--batch-fraction", type=float, default=None,
                    help="default: privacy.batch_fraction's default")
    ap.add_argument("--epochs", type=int, default=None, help="default: privacy.dp_epochs' default")
    args = ap.parse_args()
    if any(u < 2 for u in args.users) or any(e <= 0 for e in args.epsilons):
        ap.error("--users must be at least 2 and --epsilons positive")

    from opacus.accountants.utils import get_noise_multiplier
    from rich.console import Console
    from rich.table import Table

    from recops.config_training import PrivacySettings
    from recops.training.privacy import epsilon_for

    defaults = PrivacySettings()
    q = args.batch_fraction or defaults.batch_fraction
    epochs = args.epochs or defaults.dp_epochs
    if not 0 < q <= 1 or epochs < 1:
        ap.error("--batch-fraction must lie in (0, 1] and --epochs be at least 1")
    steps = round(epochs / q)
    warnings.filterwarnings("ignore")  # Opacus warns about its own optimal-order choice
    t = Table(title=f"noise multiplier σ for user-level ε: Poisson rate {q}, {steps} steps "
                    f"({epochs} epochs), δ = 1/(10·users)")
    for col in ("users", "ε", "σ RDP", "σ PRV", "PRV's σ ÷ RDP's", "RDP's ε at PRV's σ",
                "s RDP", "s PRV"):
        t.add_column(col, justify="right")
    for users in args.users:
        delta = 1.0 / (10 * users)
        for eps in args.epsilons:
            sigma, took = {}, {}
            for acc in ("rdp", "prv"):
                t0 = time.perf_counter()
                sigma[acc] = get_noise_multiplier(target_epsilon=eps, target_delta=delta,
                                                  sample_rate=q, steps=steps, accountant=acc,
                                                  epsilon_tolerance=0.01)
                took[acc] = time.perf_counter() - t0
            rdp_eps = epsilon_for(sigma["prv"], q, steps, delta, "rdp")
            t.add_row(f"{users:,}", f"{eps:g}", f"{sigma['rdp']:.3f}", f"{sigma['prv']:.3f}",
                      f"{sigma['prv'] / sigma['rdp']:.3f}", f"{rdp_eps:.2f}",
                      f"{took['rdp']:.1f}", f"{took['prv']:.1f}")
    Console(width=140).print(t)


if __name__ == "__main__":
    main()
