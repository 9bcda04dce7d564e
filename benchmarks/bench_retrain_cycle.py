"""One retraining cycle through Airflow: wall time per task of `recops_retrain`.

A champion is trained (pipeline stages, in this process) on ml-latest-small up to the last
``--feedback-days`` days; the events of those days are then logged as serving feedback, and
`airflow dags test recops_retrain` runs one real cycle on them (collect → validate → features →
train (warm start + replay) → evaluate → gate → register → report). Airflow's task start/end
lines give each task's wall time; the cycle's own stage timer is not used, so the figures
include what a task costs in Airflow (process start, imports, XCom).

    .venv/bin/python benchmarks/bench_retrain_cycle.py                  # ml-latest-small
    .venv/bin/python benchmarks/bench_retrain_cycle.py --synthetic      # small synthetic data
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # local_data, also when imported
from local_data import movielens_dir  # noqa: E402

ML_SMALL = movielens_dir()
TASKS = ("collect", "validate", "features", "train", "evaluate", "gate", "register", "report")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", action="store_true", help="5k synthetic events, not MovieLens")
    ap.add_argument("--feedback-days", type=int, default=90,
                    help="the last days of events that arrive as feedback")
    ap.add_argument("--epochs", type=int, default=5, help="epochs of the champion")
    ap.add_argument("--finetune-epochs", type=int, default=3)
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from recops import schema
    from recops.config import load_settings
    from recops.core.feedback import FeedbackLog
    from recops.data.tables import Tables, stage
    from recops.orchestration import airflow_runner, pipeline

    for key in [k for k in os.environ if k.startswith("RECOPS_")]:
        del os.environ[key]
    if args.synthetic:
        from recops.data.synthetic import generate

        full, dataset = generate(n_users=100, n_items=150, n_interactions=5000, days=60,
                                 seed=3), "synthetic"
    else:
        from recops.data.movielens import read_movielens

        if not (ML_SMALL / "ratings.csv").exists():
            raise SystemExit(f"{ML_SMALL} not found (use --synthetic)")
        full, dataset = read_movielens(ML_SMALL, "ml-latest-small"), "ml-latest-small"
    ev = full.interactions
    ts = ev[schema.EVENT_TIMESTAMP]
    cut = ts.max() - timedelta(days=args.feedback_days)
    home = Path(tempfile.mkdtemp(prefix="bench-retrain-")) / "home"
    settings = load_settings(overrides={"home": home, "train.epochs": args.epochs,
                                        "train.num_threads": 2})
    console = Console()

    t0 = time.perf_counter()
    run_id = "champion"
    staged = stage(settings.paths.staging, Tables(ev[ts < cut], full.items, full.users,
                                                  source=f"{dataset}:before-{cut.date()}"))
    version = pipeline.validate(settings, run_id, staged)["dataset_version"]
    pipeline.features(settings, run_id, version)
    rdir = pipeline.train(settings, run_id, version)["run_dir"]
    pipeline.evaluate(settings, run_id, rdir)
    pipeline.gate(settings, run_id, rdir)
    assert pipeline.register(settings, run_id, rdir)["promoted"]
    console.print(f"champion: {int((ts < cut).sum()):,} events before {cut.date()}, "
                  f"{time.perf_counter() - t0:.0f} s")

    feedback = ev[ts >= cut]
    log = FeedbackLog(settings.paths.feedback)
    for row in feedback.itertuples(index=False):
        log.append({schema.USER_ID: int(row.user_id), schema.ITEM_ID: int(row.item_id),
                    schema.RATING: float(row.rating), schema.EVENT_TYPE: str(row.event_type),
                    schema.EVENT_TIMESTAMP: row.event_timestamp.isoformat()})
    console.print(f"feedback: {len(feedback):,} events from "
                  f"{feedback[schema.USER_ID].nunique()} users in the last "
                  f"{args.feedback_days} days")

    result = airflow_runner.dags_test(settings, "recops_retrain",
                                      {"finetune_epochs": args.finetune_epochs}, timeout=3000)
    if not result.ok:
        raise SystemExit(f"retrain cycle failed: {result.failed_tasks} {result.error} "
                         f"(log {result.log_path})")
    total = sum(result.task_seconds.get(t, 0.0) for t in TASKS)
    table = Table(title=f"{dataset}: one recops_retrain cycle through `airflow dags test` "
                        f"({len(feedback):,} feedback events, fine-tune "
                        f"{args.finetune_epochs} epochs)")
    for col in ("task", "wall s", "share"):
        table.add_column(col, justify="right" if col != "task" else "left")
    for t in TASKS:
        s = result.task_seconds.get(t)
        table.add_row(t, "-" if s is None else f"{s:.1f}",
                      "-" if s is None or not total else f"{100 * s / total:.0f}%")
    table.add_row("sum of tasks", f"{total:.1f}", "")
    table.add_row("`airflow dags test` wall", f"{result.wall_s:.1f}", "")
    console.print(table)
    import json

    rdir = settings.paths.runs / result.run_id
    challenger = json.loads((rdir / "metrics.json").read_text())["overall"]["ndcg@10"]
    champion = json.loads((rdir / "champion_metrics.json").read_text())["overall"]["ndcg@10"]
    promoted = json.loads((rdir / "register.json").read_text())["promoted"]
    console.print(f"newest-period NDCG@10: challenger {challenger:.4f}, champion {champion:.4f}; "
                  f"promoted: {promoted}; home {home}")


if __name__ == "__main__":
    main()
