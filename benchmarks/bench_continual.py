"""Continual learning: replay ml-latest-small in time order and compare three update policies.

The events before the first cutoff train an initial SASRec. Then, period by period, each policy's
current model is scored on the *next* period, and updated with that period. Scoring is streaming
next-item prediction: every event of the period whose user has earlier events is a target, its
input the user's last max_len items before it (strictly earlier time), full ranking with the
user's earlier items masked, NDCG@10 and HR@10. The model is frozen at the period's start, as a
served model is until the next cycle. (ml-latest-small has only 20-40 users per half-year whose
*last* event falls in it, too few to tell policies apart; it has thousands of events.)

    (a) static   trained once, never updated
    (b) full     retrained from scratch on everything seen so far
    (c) warm     warm-started from its previous model (``train_model(init=...)``) and fine-tuned
                 on the period's active users plus a replay sample of the others

Reported per period: events scored, NDCG@10 (HR@10) of each policy, training seconds of (b)
and (c), and event-weighted means with a 95% interval of (c) - (a) and (c) - (b), paired over the
same events.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))  # local_data, also when imported
from local_data import movielens_dir  # noqa: E402

ML_SMALL = movielens_dir()
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
    from recops.training.sequences import SequenceData

    return SequenceData.from_interactions(ev, items, max_len)


def period_targets(ev: Any, start: Any, end: Any, max_len: int) -> tuple[list, Any, list]:
    """(input item ids, target item id, earlier item ids) of each event in [start, end) whose
    user has an earlier event (strictly earlier time): the next-item targets of the period."""
    import numpy as np
    import pandas as pd

    from recops import schema

    seen = upto(ev, end).sort_values([schema.USER_ID, schema.EVENT_TIMESTAMP, schema.ITEM_ID],
                                     kind="stable")
    t_start = np.datetime64(pd.Timestamp(start).tz_convert("UTC").tz_localize(None), "us")
    inputs, targets, earlier = [], [], []
    for _, g in seen.groupby(schema.USER_ID, sort=True):
        items = g[schema.ITEM_ID].to_numpy()
        ts = g[schema.EVENT_TIMESTAMP].to_numpy(dtype="datetime64[us]")  # UTC
        for j in np.flatnonzero(ts >= t_start):
            n_before = int(np.searchsorted(ts, ts[j], side="left"))  # strictly earlier events
            if n_before == 0:
                continue
            inputs.append(items[max(0, n_before - max_len):n_before])
            targets.append(items[j])
            earlier.append(np.unique(items[:n_before]))
    return inputs, np.asarray(targets, dtype=np.int64), earlier


def score_events(ckpt: dict[str, Any], data: Any, targets: tuple[list, Any, list]) -> Any:
    """Per-event NDCG@10 and hit@10 of the checkpoint's model on ``period_targets`` rows."""
    import numpy as np

    from recops.training.evaluation import model_for_data, rank_sequences
    from recops.training.metrics import ndcg_gains
    model, d = model_for_data(ckpt, data)
    idx = d.index.to_index
    inputs, target_ids, earlier = targets
    ranks, _ = rank_sequences(model, [idx(x) for x in inputs], idx(target_ids),
                              [idx(x) for x in earlier], k=10)
    return ndcg_gains(ranks, 10), (np.asarray(ranks) <= 10).astype(float)


def paired(a: Any, b: Any) -> str:
    """Mean of a - b over the same events, ± its 95% interval."""
    from recops.training.metrics import paired_difference

    if len(a) < 2:
        return "-"
    mean, half = paired_difference(a, b)
    return f"{mean:+.4f} ± {half:.4f}"


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
    from recops.training.trainer import train_model

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
                        f"NDCG@10 (HR@10) over every event, and training seconds")
    for col in ("period", "events", "(a) static", "(b) full", "(c) warm+replay",
                "train s (b)", "train s (c)"):
        table.add_column(col, justify="right" if col != "period" else "left")
    per_event: dict[str, list] = {"static": [], "full": [], "warm": []}
    costs = {"full": 0.0, "warm": 0.0}
    for p in range(n):
        start, end = cuts[p], cuts[p + 1]
        seen = upto(ev, end)
        targets = period_targets(ev, start, end, settings.model.max_len)
        row = [f"{start.date()}..{end.date()}", f"{len(targets[1]):,}"]
        all_data = data_of(seen, items, settings.model.max_len)
        if len(targets[1]):
            for k in ("static", "full", "warm"):
                gains, hits = score_events(models[k], all_data, targets)
                per_event[k].append(gains)
                row.append(f"{gains.mean():.4f} ({hits.mean():.3f})")
        else:
            row += ["-", "-", "-"]
        # Update with the period just scored (what a retrain cycle at `end` does).
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
        costs["full"] += cost_full
        costs["warm"] += cost_warm
        table.add_row(*row, f"{cost_full:.1f}", f"{cost_warm:.1f}")
    flat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in per_event.items()}
    table.add_row("event-weighted mean / total", f"{len(flat['static']):,}",
                  *(f"{flat[k].mean():.4f}" if len(flat[k]) else "-"
                    for k in ("static", "full", "warm")),
                  f"{costs['full']:.1f}", f"{costs['warm']:.1f}", style="bold")
    console.print(table)
    console.print(f"(c) - (a): {paired(flat['warm'], flat['static'])};  (c) - (b): "
                  f"{paired(flat['warm'], flat['full'])};  (b) - (a): "
                  f"{paired(flat['full'], flat['static'])}  (mean NDCG@10 difference over the "
                  "same events, 95% interval)")
    console.print(f"training cost (c) / (b): {costs['warm'] / max(costs['full'], 1e-9):.2f}")
    console.print(f"settings: {cfg}; fine-tune epochs {ft_epochs}; replay {args.replay}")


if __name__ == "__main__":
    main()
