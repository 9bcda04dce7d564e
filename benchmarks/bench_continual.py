"""Continual learning: replay ml-latest-small in time order and compare three update policies.

The events before the first cutoff train an initial SASRec. Then, period by period, each policy's
current model is scored on the *next* period (users whose last event falls in it: leave-last-out
test label, full ranking, seen items masked, NDCG@10/HR@10), and updated with that period:

    (a) static   trained once, never updated
    (b) full     retrained from scratch on everything seen so far
    (c) warm     warm-started from its previous model (``train_model(init=...)``) and fine-tuned
                 on the period's active users plus a replay sample of the others

Reported per period: users scored, NDCG@10 of each policy, training seconds of (b) and (c).
The same functions the retrain DAG uses (``train_model``, ``evaluate_model``); the pandas
history (``SequenceData.from_interactions``) instead of Feast, to measure learning, not I/O.

    .venv/bin/python benchmarks/bench_continual.py            # 4 half-year periods
    .venv/bin/python benchmarks/bench_continual.py --quick    # 2 periods, tiny model
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ML_SMALL = REPO.parent / "shared" / "data" / "ml-latest-small"
# The project's default model and optimiser (what the retrain DAG trains), with early stopping
# checked every 2 epochs so a full retraining stops once it plateaus.
FULL = {"train.epochs": 20, "train.patience": 2, "train.eval_every": 2}
QUICK = {"model.max_len": 20, "model.d_model": 16, "model.n_layers": 1, "model.n_heads": 1,
         "train.epochs": 4, "train.eval_every": 2, "train.patience": 2}


def periods(ts_max: Any, n: int, months: int) -> list[Any]:
    """n+1 cutoffs, ``months`` apart, ending at the month after the last event."""
    import pandas as pd

    end = (ts_max + pd.offsets.MonthBegin(1)).normalize()
    return [end - pd.DateOffset(months=months * (n - i)) for i in range(n + 1)]


def upto(ev: Any, t: Any) -> Any:
    from recops import schema

    return ev[ev[schema.EVENT_TIMESTAMP] < t]


def data_of(ev: Any, items: Any, max_len: int) -> Any:
    from recops.sequences import SequenceData

    return SequenceData.from_interactions(ev, items, max_len)


def next_period_users(ev: Any, start: Any, end: Any) -> list[int]:
    """Users whose test label (last event up to ``end``) falls in [start, end)."""
    from recops import schema
    from recops.splits import leave_last_out_labels

    lab = leave_last_out_labels(upto(ev, end), train_only_rows=False)
    test = lab[lab["split"] == "test"]
    ts = test[schema.EVENT_TIMESTAMP]
    return sorted(int(u) for u in test.loc[(ts >= start) & (ts < end), schema.USER_ID])


def score(ckpt: dict[str, Any], data: Any) -> dict[str, float]:
    from recops.evaluation import evaluate_model
    from recops.pipeline import model_on_data

    model, d = model_on_data(ckpt, data)
    return evaluate_model(model, d, "test", segments=False).overall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 periods, a tiny model, few epochs")
    ap.add_argument("--periods", type=int, default=None)
    ap.add_argument("--months", type=int, default=6)
    ap.add_argument("--replay", type=float, default=0.3)
    ap.add_argument("--finetune-epochs", type=int, default=None)
    args = ap.parse_args()

    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from recops import schema
    from recops.config import load_settings
    from recops.data.movielens import read_movielens
    from recops.training import train_model

    if not (ML_SMALL / "ratings.csv").exists():
        raise SystemExit(f"{ML_SMALL} not found")
    n = args.periods or (2 if args.quick else 4)
    cfg = {**FULL, **(QUICK if args.quick else {})}
    ft_epochs = args.finetune_epochs or max(2, cfg["train.epochs"] // 4)
    tables = read_movielens(ML_SMALL, "ml-latest-small")
    ev, items = tables.interactions, tables.items
    cuts = periods(ev[schema.EVENT_TIMESTAMP].max(), n, args.months)
    home = Path(tempfile.mkdtemp(prefix="bench-continual-"))
    settings = load_settings(overrides={"home": home, **cfg, "train.num_threads": 2})
    ft = settings.model_copy(update={"train": settings.train.model_copy(
        update={"epochs": ft_epochs})})
    console = Console()
    rng = np.random.default_rng(settings.seed)

    def fit(s: Any, data: Any, init: dict | None = None) -> tuple[dict, float]:
        t0 = time.perf_counter()
        res = train_model(s, data, init=init, progress=False)
        return res.checkpoint, time.perf_counter() - t0

    first = data_of(upto(ev, cuts[0]), items, settings.model.max_len)
    base, base_s = fit(settings, first)
    models = {"static": base, "full": base, "warm": base}
    console.print(f"initial model: {first.n_users} users, events < {cuts[0].date()}, "
                  f"{base_s:.1f} s")
    table = Table(title=f"ml-latest-small, {n} periods of {args.months} months: next-period "
                        f"NDCG@10 (HR@10) and training seconds")
    for col in ("period", "users", "(a) static", "(b) full", "(c) warm+replay",
                "train s (b)", "train s (c)"):
        table.add_column(col, justify="right" if col != "period" else "left")
    totals = {"static": [], "full": [], "warm": [], "cost_full": 0.0, "cost_warm": 0.0}
    for p in range(n):
        start, end = cuts[p], cuts[p + 1]
        seen = upto(ev, end)
        users = next_period_users(ev, start, end)
        row = [f"{start.date()}..{end.date()}", str(len(users))]
        if users:
            test = data_of(seen, items, settings.model.max_len).subset(users)
            for k in ("static", "full", "warm"):
                m = score(models[k], test)
                totals[k].append((m["ndcg@10"], len(users)))
                row.append(f"{m['ndcg@10']:.4f} ({m['hr@10']:.3f})")
        else:
            row += ["-", "-", "-"]
        # Update with the period just scored (what a retrain cycle at `end` does).
        all_data = data_of(seen, items, settings.model.max_len)
        models["full"], cost_full = fit(settings, all_data)
        in_period = seen[seen[schema.EVENT_TIMESTAMP] >= start][schema.USER_ID].unique()
        active = set(int(u) for u in in_period)
        others = np.asarray(sorted(set(int(u) for u in all_data.train_users) - active))
        replay = rng.choice(others, size=int(round(args.replay * len(others))), replace=False) \
            if len(others) else others
        warm_data = all_data.subset(active | set(int(u) for u in replay))
        if len(warm_data.eval_users):
            models["warm"], cost_warm = fit(ft, warm_data, init=models["warm"])
        else:
            cost_warm = 0.0
        totals["cost_full"] += cost_full
        totals["cost_warm"] += cost_warm
        table.add_row(*row, f"{cost_full:.1f}", f"{cost_warm:.1f}")
    def mean(k: str) -> str:
        pairs = totals[k]
        w = sum(u for _, u in pairs)
        return f"{sum(v * u for v, u in pairs) / w:.4f}" if w else "-"

    table.add_row("user-weighted mean / total", "", mean("static"), mean("full"), mean("warm"),
                  f"{totals['cost_full']:.1f}", f"{totals['cost_warm']:.1f}", style="bold")
    console.print(table)
    console.print(f"settings: {cfg}; fine-tune epochs {ft_epochs}; replay {args.replay}")


if __name__ == "__main__":
    main()
