"""Event roles in training: do positive weights and negatives-as-training-negatives help?

Both datasets go through ``data.event_roles`` (recops.core.roles) with the default role table:

* ``ml-latest-small``: every event is a rating; above 3 a positive (weight 1), 2.5-3 a weak
  positive (``rating_between_weight`` 0.5), 2 or below a negative (13% of the ratings).
* ``synthetic``: the generator's events made implicit (no ratings at all), typed by the
  generator's own rating of them (the user's taste for the item's cluster plus noise):
  >= 4.5 purchase, 4 like, 3-3.5 click, 2-2.5 view, <= 1.5 dislike.

The split (leave-last-out over the positives), the evaluated users and their labels are the
same for every row; rows differ only in ``train.event_weights`` and
``train.feedback_negatives``. Reported: validation and test NDCG@10, and each row's NDCG@10
minus the unweighted row's, paired per user, with its 95% interval. Defaults are chosen on the
validation columns only.

    .venv/bin/python benchmarks/bench_event_roles.py                 # both datasets
    .venv/bin/python benchmarks/bench_event_roles.py --datasets synthetic --epochs 10
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # local_data, also when imported
from local_data import movielens_dir  # noqa: E402

ROWS: dict[str, dict[str, Any]] = {
    "unweighted": {"train.event_weights": False, "train.feedback_negatives": False},
    "weighted": {"train.event_weights": True, "train.feedback_negatives": False},
    "negatives": {"train.event_weights": False, "train.feedback_negatives": True},
    "weighted+negatives": {"train.event_weights": True, "train.feedback_negatives": True},
}
REFERENCE = "unweighted"


def implicit(interactions: pd.DataFrame) -> pd.DataFrame:
    """The synthetic events typed by their generated rating, the rating dropped."""
    r = interactions["rating"].to_numpy(np.float64)
    kind = np.select([r >= 4.5, r >= 4.0, r >= 3.0, r >= 2.0],
                     ["purchase", "like", "click", "view"], "dislike")
    return interactions.assign(event_type=kind, rating=np.nan)


def load(name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    if name == "ml-latest-small":
        from recops.data.movielens import read_movielens

        folder = movielens_dir()
        if not (folder / "ratings.csv").exists():
            raise SystemExit(f"{folder} not found")
        t = read_movielens(folder, "ml-latest-small")
        return t.interactions, t.items
    from recops.data.synthetic import generate

    # Over 2,048 items, so SASRec's sampled softmax (train.negatives) is what trains, and the
    # users' negatives have a softmax to join (the full one holds every item already).
    t = generate(n_users=600, n_items=4_000, n_interactions=30_000, seed=0)
    return implicit(t.interactions), t.items


def data_for(interactions: pd.DataFrame, items: pd.DataFrame, max_len: int) -> tuple[Any, dict]:
    from recops.config_events import EventSettings
    from recops.core.roles import split_roles
    from recops.training.sequences import SequenceData

    roles = split_roles(interactions, EventSettings())
    data = SequenceData.from_interactions(roles.positives, items, max_len,
                                          negatives=roles.negatives)
    counts = {**roles.counts(), "types": interactions["event_type"].value_counts().to_dict(),
              "users_with_negatives": int(sum(len(n) > 0 for n in data.negatives or []))}
    return data, counts


def run_row(data: Any, overrides: dict[str, Any], home: Path, epochs: int,
            threads: int) -> dict[str, Any]:
    from recops.config import load_settings
    from recops.training.evaluation import rank_targets
    from recops.training.metrics import ndcg_gains
    from recops.training.trainer import train_model

    settings = load_settings(overrides={
        **overrides, "home": home, "train.num_threads": threads, "train.epochs": epochs,
        "train.max_minutes": 1e6, "train.patience": 1000})
    t0 = time.perf_counter()
    res = train_model(settings, data, progress=sys.stderr.isatty())
    wall = time.perf_counter() - t0
    out: dict[str, Any] = {"wall_s": wall, "epochs": len(res.history)}
    for split in ("valid", "test"):
        ranks, _ = rank_targets(res.model, data, split)
        gains = ndcg_gains(ranks, 10)
        out[f"{split}_ndcg@10"] = float(gains.mean())
        out[f"{split}_gains"] = gains.tolist()
    return out


def main(argv: list[str] | None = None) -> None:
    from recops.training.metrics import paired_difference

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="ml-latest-small,synthetic")
    ap.add_argument("--rows", default="unweighted,weighted,negatives")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    results: list[dict[str, Any]] = []
    for dataset in args.datasets.split(","):
        interactions, items = load(dataset)
        data, counts = data_for(interactions, items, args.max_len)
        print(f"{dataset}: {counts}", file=sys.stderr)
        for name in args.rows.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                row = run_row(data, {**ROWS[name], "model.max_len": args.max_len},
                              Path(tmp) / "home", args.epochs, args.threads)
            results.append({"dataset": dataset, "row": name, "counts": counts, **row})
            print(f"  {name}: valid {row['valid_ndcg@10']:.4f} test {row['test_ndcg@10']:.4f}"
                  f" ({row['wall_s']:.0f} s)", file=sys.stderr)
    print(f"\n| dataset | row | valid NDCG@10 | vs {REFERENCE} (valid, 95%) | test NDCG@10 | "
          f"vs {REFERENCE} (test, 95%) | s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        ref = next((x for x in results if x["dataset"] == r["dataset"]
                    and x["row"] == REFERENCE), None)
        cells = []
        for split in ("valid", "test"):
            if ref is None or ref is r:
                cells.append("-")
                continue
            d, h = paired_difference(np.asarray(r[f"{split}_gains"]),
                                     np.asarray(ref[f"{split}_gains"]))
            r[f"{split}_vs_reference"] = [d, h]
            cells.append(f"{d:+.4f} ± {h:.4f}")
        print(f"| {r['dataset']} | {r['row']} | {r['valid_ndcg@10']:.4f} | {cells[0]} | "
              f"{r['test_ndcg@10']:.4f} | {cells[1]} | {r['wall_s']:.0f} |")
    if args.out is None:
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([{k: v for k, v in r.items() if not k.endswith("_gains")}
                                    for r in results], indent=2, default=str))


if __name__ == "__main__":
    main()
