"""Recommendation quality of Pop, MF, EASE, ItemKNN, SASRec (+ text, + DP) on MovieLens, synthetic.

Protocol (docs/architecture.md): chronological leave-last-out per user, events ordered by
(timestamp, item id); last event = test, second last = validation (early stopping on NDCG@10),
the rest = training; users with < 3 events train only. Inputs are the last ``max_len`` items
strictly before the label time. Every item of the catalogue is ranked; the user's training
items (and the validation item, for test) are masked. Reported: test HR@10, NDCG@10, MRR,
coverage@10, wall time of training, validation NDCG@10/HR@10, and the test NDCG@10 difference
to the default configuration's SASRec (``sasrec-default``) with its paired 95% interval over the
same users.

    .venv/bin/python benchmarks/bench_quality.py              # ml-latest-small + synthetic
    .venv/bin/python benchmarks/bench_quality.py --quick      # small, minutes
    .venv/bin/python benchmarks/bench_quality.py --rows pop,sasrec --set train.epochs=50
    .venv/bin/python benchmarks/bench_quality.py --datasets ml-latest-small --rows pop \
        --peer recbole --peer-budget 300 --reference pop   # + RecBole's Pop, BPR, SASRec

``--peer recbole`` adds RecBole 1.2.1's rows (``recbole-pop``, ``-bpr``, ``-sasrec``) trained in
their own virtual environment on exactly this split and ranked with recops' masking and metric
code (benchmarks/peer_recbole.py says how, and what differs).
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # local_data, also when imported
from local_data import movielens_dir  # noqa: E402

ML_SMALL = movielens_dir()

# Tuned on ml-latest-small's validation split (see the note): long sequences matter there.
SASREC = {"model.kind": "sasrec", "model.max_len": 200, "model.d_model": 64,
          "model.n_layers": 2, "model.n_heads": 2, "model.dropout": 0.3,
          "train.lr": 1e-3, "train.batch_size": 64, "train.epochs": 200, "train.patience": 5,
          "train.eval_every": 5, "train.weight_decay": 0.0}
ROWS: dict[str, dict[str, Any]] = {
    "pop": {"model.kind": "pop"},
    "mf": {"model.kind": "mf", "model.max_len": 200, "model.d_model": 64, "train.lr": 2e-3,
           "train.batch_size": 64, "train.epochs": 200, "train.patience": 3,
           "train.eval_every": 5, "train.weight_decay": 0.0},
    "mf-softmax": {"model.kind": "mf", "model.mf_loss": "softmax", "model.max_len": 200,
                   "model.d_model": 64, "train.lr": 2e-3, "train.batch_size": 64,
                   "train.epochs": 200, "train.patience": 3, "train.eval_every": 5},
    # Closed form; EASE with the config's defaults (ease_lambda, neighbours chosen on its
    # validation). ItemKNN validates best with few neighbours on ml-latest-small: NDCG@10 0.027
    # for K 10-50, 0.021 for 200-1000.
    "ease": {"model.kind": "ease"},
    "itemknn": {"model.kind": "itemknn", "model.neighbours": 50},
    "sasrec-default": {"model.kind": "sasrec"},  # what a user gets: every other setting default
    # The defaults before the recipe (docs/quality.md): each user's last 50 items, the full
    # softmax, a constant rate, 20 epochs at patience 5, no time budget (None reads as unset).
    "sasrec-previous": {"model.kind": "sasrec", "train.samples": "last", "train.negatives": 0,
                        "train.lr_schedule": "constant", "train.epochs": 20,
                        "train.patience": 5, "train.max_minutes": 1e6},  # no budget
    "sasrec": SASREC,
    "sasrec-text": {**SASREC, "model.text_init": True},
    "sasrec-dp-eps1": {**SASREC, "privacy.enabled": True, "privacy.target_epsilon": 1.0},
    "sasrec-dp-eps4": {**SASREC, "privacy.enabled": True, "privacy.target_epsilon": 4.0},
    "sasrec-dp-eps8": {**SASREC, "privacy.enabled": True, "privacy.target_epsilon": 8.0},
}
# DP runs a fixed, smaller number of epochs with a larger batch (noise averages out) and a
# higher lr; early stopping still picks the best validated epoch within that budget.
DP = {"train.epochs": 20, "train.batch_size": 256, "train.lr": 3e-3, "train.eval_every": 2,
      "train.patience": 100, "privacy.budget_epsilon": 1e9, "privacy.clipping": "ghost"}
QUICK = {"model.max_len": 50, "train.epochs": 10, "train.eval_every": 2}


def load(name: str, quick: bool) -> tuple[Any, str]:
    """(Tables, population name) for a dataset."""
    if name == "ml-latest-small":
        from recops.data.movielens import read_movielens

        if not (ML_SMALL / "ratings.csv").exists():
            raise SystemExit(f"{ML_SMALL} not found")
        return read_movielens(ML_SMALL, "ml-latest-small"), "ml-latest-small"
    from recops.data.synthetic import generate

    n = (300, 500, 15_000) if quick else (2_000, 2_000, 150_000)
    return generate(n_users=n[0], n_items=n[1], n_interactions=n[2], seed=0), "synthetic"


def run_row(name: str, overrides: dict[str, Any], data: Any, dataset: str, home: Path,
            extra: dict[str, Any], threads: int) -> dict[str, Any]:
    from recops.config import load_settings
    from recops.training.evaluation import evaluate_model, rank_targets
    from recops.training.metrics import ndcg_gains
    from recops.training.trainer import train_model

    o = {**overrides}
    if o.get("privacy.enabled"):
        o.update(DP)
    o.update(extra)
    o.update({"home": home, "train.num_threads": threads,
              "data.dataset": "synthetic" if dataset == "synthetic" else dataset})
    settings = load_settings(overrides=o)
    t0 = time.perf_counter()
    res = train_model(settings, data, progress=sys.stderr.isatty())
    wall = time.perf_counter() - t0
    test = evaluate_model(res.model, data, "test")
    ranks, _ = rank_targets(res.model, data, "test")
    best = max(res.history, key=lambda h: h.get("ndcg@10", -1))
    return {"dataset": dataset, "model": name, **{k: test.overall[k] for k in
            ("hr@10", "ndcg@10", "mrr", "coverage@10")},
            "valid_ndcg@10": res.valid_metrics["ndcg@10"],
            "valid_hr@10": res.valid_metrics["hr@10"], "epochs": len(res.history)
            if not res.model.closed_form else 0,
            "test_gains": ndcg_gains(ranks, 10).tolist(),
            "best_epoch": best["epoch"],
            # Time to quality: training seconds until the kept epoch ended (closed form: all).
            "to_best_s": best.get("seconds", wall),
            "epsilon": res.privacy["epsilon"] if res.privacy else None,
            "wall_s": wall, "per_segment": test.per_segment}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="short sequences, few epochs, small synthetic")
    ap.add_argument("--datasets", default="ml-latest-small,synthetic")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"subset of {','.join(ROWS)}")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra setting for every row, e.g. train.epochs=30")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--output", type=Path, help="write the rows as JSON here")
    ap.add_argument("--reference", default=REFERENCE,
                    help="row the paired NDCG@10 differences are taken against")
    ap.add_argument("--peer", choices=["recbole"], help="add a peer library's rows")
    ap.add_argument("--peer-rows", default="pop,bpr,sasrec", help="subset of pop,bpr,sasrec")
    ap.add_argument("--peer-budget", type=float, metavar="SECONDS",
                    help="wall-time budget per peer model (default: none, early stopping only)")
    ap.add_argument("--peer-venv", type=Path,
                    help="the peer's virtual environment (default <home>/peers/recbole-venv)")
    ap.add_argument("--peer-max-len", type=int, default=50,
                    help="RecBole SASRec's MAX_ITEM_LIST_LENGTH (its default: 50)")
    args = ap.parse_args(argv)

    import yaml
    from rich.console import Console
    from rich.table import Table

    from recops.training.sequences import SequenceData

    extra = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    if args.quick:
        extra = {**QUICK, **extra}
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; choose from {list(ROWS)}")
    peer_rows = [r.strip() for r in args.peer_rows.split(",") if r.strip()] if args.peer else []
    if args.peer:
        import peer_recbole

        bad = [r for r in peer_rows if r not in peer_recbole.PEER_ROWS]
        if bad:
            raise SystemExit(f"unknown peer rows {bad}; choose from {peer_recbole.PEER_ROWS}")
    results = []
    console = Console()
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        for ds in [d.strip() for d in args.datasets.split(",") if d.strip()]:
            tables, _ = load(ds, args.quick)
            max_len = int(extra.get("model.max_len", SASREC["model.max_len"]))
            data = SequenceData.from_interactions(tables.interactions, tables.items, max_len,
                                                  tables.users)
            console.print(f"[bold]{ds}[/]: {data.n_users} users, {data.n_items} items, "
                          f"{len(tables.interactions)} events, {len(data.eval_users)} evaluated")
            for name in rows:
                r = run_row(name, ROWS[name], data, ds, Path(tmp) / "home", extra, args.threads)
                console.print(f"  {name}: ndcg@10={r['ndcg@10']:.4f} hr@10={r['hr@10']:.4f} "
                              f"({r['wall_s']:.0f}s, {r['epochs']} epochs)")
                results.append(r)
            if peer_rows:
                results += peer_recbole.run_rows(
                    data, tables, ds, peer_rows, Path(tmp) / "peer" / ds,
                    venv=args.peer_venv or peer_recbole.default_venv(), budget=args.peer_budget,
                    threads=args.threads, max_seq_len=args.peer_max_len, log=console.print)
    paired_to_reference(results, args.reference)
    title = "test split, full ranking, seen items masked" + (" (quick)" if args.quick else "")
    table = Table(title=title)
    for c in ("dataset", "model", "HR@10", "NDCG@10", "MRR", "cov@10", "valid HR@10",
              "valid NDCG@10", f"ΔNDCG@10 vs {args.reference} (95%)", "ε", "epochs", "to best s",
              "wall s"):
        table.add_column(c, justify="left" if c in ("dataset", "model") else "right")
    for r in results:
        d = r.get("vs_reference")
        table.add_row(r["dataset"], r["model"], f"{r['hr@10']:.4f}", f"{r['ndcg@10']:.4f}",
                      f"{r['mrr']:.4f}", f"{r['coverage@10']:.3f}", f"{r['valid_hr@10']:.4f}",
                      f"{r['valid_ndcg@10']:.4f}", f"{d[0]:+.4f} ± {d[1]:.4f}" if d else "-",
                      f"{r['epsilon']:.2f}" if r["epsilon"] is not None else "-",
                      f"{r['epochs']} (best {r['best_epoch']})",
                      f"{r['to_best_s']:.1f}",
                      f"{r['wall_s']:.1f}")
    console.print(table)
    if peer_rows:
        console.print(peer_recbole.details_table(results))
    if args.output:
        args.output.write_text(json.dumps([{k: v for k, v in r.items() if k != "test_gains"}
                                           for r in results], indent=2))


REFERENCE = "sasrec-default"


def paired_to_reference(results: list[dict[str, Any]], reference: str = REFERENCE) -> None:
    """Each row's test NDCG@10 minus the reference row's on the same dataset, paired per user."""
    from recops.training.metrics import paired_difference

    ref = {r["dataset"]: r["test_gains"] for r in results if r["model"] == reference}
    for r in results:
        if r["dataset"] in ref and r["model"] != reference:
            r["vs_reference"] = paired_difference(np.asarray(r["test_gains"]),
                                                  np.asarray(ref[r["dataset"]]))


if __name__ == "__main__":
    main()
