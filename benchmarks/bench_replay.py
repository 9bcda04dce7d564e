"""The loop closed under the scheduler, measured: ml-latest-small's later events replayed as users.

A champion is trained (pipeline stages, in this process) on ml-latest-small up to the last
``--days`` days; `recops up` starts the platform (Airflow's four daemons and the service) with
the watcher every ``--watch-minutes``; `recops replay` then plays the later events at ``--rate``
events/s, keeping the last ``--after`` back until the service serves a retrained model. Nobody
triggers anything: the watcher fires the asset, `recops_retrain` runs under the scheduler, the
gate decides, the service picks up a promoted model.

Figures: events/s sustained, failed requests, acknowledged events lost (acknowledged but not in
the feedback log), online HR@10 / NDCG@10 of the lists served before and after the retrain (95%
intervals over events, unpaired for the difference), seconds from the asset event to the new
model's first list, the platform's summed RSS (every process of every component's session).

    .venv/bin/python benchmarks/bench_replay.py                        # 180 days, 20 events/s
    .venv/bin/python benchmarks/bench_replay.py --days 60 --rate 10    # smaller
    .venv/bin/python benchmarks/bench_replay.py --synthetic            # the test's data, quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # local_data, also when imported
from local_data import movielens_dir  # noqa: E402

ML_SMALL = movielens_dir()
# The integration test's data and model (tests/orchestration/test_replay_loop.py).
SYNTHETIC: dict[str, Any] = {
    "data.dataset": "synthetic", "data.synthetic.n_users": 200, "data.synthetic.n_items": 100,
    "data.synthetic.n_interactions": 9000, "data.synthetic.days": 30,
    "model.d_model": 16, "model.n_layers": 1, "model.n_heads": 1, "model.max_len": 20,
    "train.epochs": 10, "train.lr": 5e-3, "train.num_threads": 1,
}


def champion(settings: Any, days: int, epochs: int) -> tuple[str, int]:
    """Train and promote a model on the dataset's events before its last ``days`` days."""
    from recops import schema
    from recops.data.loaders import load_dataset
    from recops.data.tables import Tables, stage
    from recops.orchestration import pipeline

    full = load_dataset(settings)
    ev = full.interactions
    ts = ev[schema.EVENT_TIMESTAMP]
    cut = ts.max() - timedelta(days=days)
    first = settings.model_copy(update={"train": settings.train.model_copy(
        update={"epochs": epochs})})
    staged = stage(settings.paths.staging, Tables(ev[ts < cut], full.items, full.users,
                                                  source=f"bench:before-{cut.date()}"))
    version = pipeline.validate(settings, "champion", staged)["dataset_version"]
    pipeline.features(settings, "champion", version)
    rdir = pipeline.train(first, "champion", version)["run_dir"]
    pipeline.evaluate(first, "champion", rdir)
    pipeline.gate(first, "champion", rdir)
    reg = pipeline.register(first, "champion", rdir)
    if not reg["promoted"]:
        raise SystemExit(f"the first model was not promoted: see {rdir}/gate.json")
    return str(reg["tag"]), int((ts < cut).sum())


def asset_fired(state: Any) -> list[str]:
    from recops.orchestration.platform_health import AirflowClient

    client = AirflowClient(state, timeout=30)
    try:
        events = client.request("GET", "assets/events", params={
            "source_dag_id": "recops_feedback_watch", "order_by": "timestamp"})["asset_events"]
        return [str(e["timestamp"]) for e in events]
    finally:
        client.close()


def retrain_runs(state: Any) -> list[dict[str, Any]]:
    from recops.orchestration.platform_health import AirflowClient

    client = AirflowClient(state, timeout=30)
    try:
        runs = client.request("GET", "dags/recops_retrain/dagRuns",
                              params={"order_by": "id", "limit": 100})["dag_runs"]
        return [{k: r.get(k) for k in ("dag_run_id", "run_type", "state", "start_date",
                                       "end_date")} for r in runs]
    finally:
        client.close()


def first_start_done(state: Any, timeout: float = 600) -> None:
    """Wait for recops_retrain's first-start run (its latest daily slot, run at unpause): a
    replay started before it ends races it into a tiny first batch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = retrain_runs(state)
        if runs and all(r["state"] in ("success", "failed") for r in runs):
            return
        time.sleep(2)
    raise SystemExit(f"recops_retrain's first-start run not finished in {timeout:.0f} s")


def fmt(stat: dict[str, Any], sign: bool = False) -> str:
    if stat.get("mean") is None:
        return "-"
    half = stat.get("ci95")
    return (f"{stat['mean']:+.4f}" if sign else f"{stat['mean']:.4f}") + (
        f" ± {half:.4f}" if half is not None else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", action="store_true", help="the integration test's data")
    ap.add_argument("--days", type=int, default=180, help="the last days, replayed")
    ap.add_argument("--epochs", type=int, default=5, help="epochs of the first champion")
    ap.add_argument("--rate", type=float, default=20.0, help="events started per second")
    ap.add_argument("--limit", type=int, default=None, help="events to play (default all)")
    ap.add_argument("--after", type=int, default=500,
                    help="events kept back until a retrained model serves")
    ap.add_argument("--watch-minutes", type=float, default=0.5)
    ap.add_argument("--min-new-events", type=int, default=None,
                    help="the watcher's threshold (default: the events played before the "
                    "hold-back, less 10%%)")
    ap.add_argument("--swap-timeout", type=float, default=900.0,
                    help="seconds the held-back events wait for a new model (a refused "
                    "challenger means none comes)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from recops.config import load_settings
    from recops.core.feedback import FeedbackLog
    from recops.core.supervisor import free_port
    from recops.orchestration import platform, replay
    from recops.orchestration.platform_health import status

    for key in [k for k in os.environ if k.startswith("RECOPS_")]:
        del os.environ[key]
    console = Console()
    home = Path(tempfile.mkdtemp(prefix="bench-replay-")) / "home"
    base: dict[str, Any] = dict(SYNTHETIC) if args.synthetic else {
        "data.root": str(ML_SMALL), "data.download": False, "train.num_threads": 2}
    if args.synthetic:
        args.days = min(args.days, 10)
    base.update({"home": home, "serving.port": free_port(), "platform.airflow_port": free_port(),
                 "platform.feedback_watch_minutes": args.watch_minutes})
    settings = load_settings(overrides=base)
    t0 = time.perf_counter()
    tag, n_before = champion(settings, args.days, args.epochs)
    console.print(f"champion {tag}: {n_before:,} events before the last {args.days} days, "
                  f"{time.perf_counter() - t0:.0f} s")
    events, cut, _ = replay.later_events(settings)
    n = min(len(events), args.limit or len(events))
    after = min(args.after, n // 2)
    threshold = args.min_new_events or max(1, int(0.9 * (n - after)))
    settings = load_settings(overrides={**base, "platform.min_new_events": threshold})
    load0 = os.getloadavg()
    t1 = time.perf_counter()
    up = platform.up(settings)
    up_s = time.perf_counter() - t1
    console.print(f"recops up: {up_s:.0f} s (load {load0[0]:.1f})")
    state = up.state
    rss_mb: float | None = None
    try:
        assert state.service_url is not None
        first_start_done(state)
        opts = replay.ReplayOptions(rate=args.rate, limit=n, concurrency=4, after_swap=after,
                                    swap_timeout=args.swap_timeout)
        result = replay.replay(settings, state.service_url, opts)
        s = result.summary()
        st = status(settings)
        rss_mb = sum(c.rss_mb for c in st.components)
        n_procs = sum(c.processes for c in st.components)
        fired = asset_fired(state)
        runs = retrain_runs(state)
    finally:
        platform.down(settings)
    load1 = os.getloadavg()
    logged, _ = FeedbackLog(settings.paths.feedback).read(0)
    acked = {o.event_id for o in result.outcomes if o.acknowledged}
    lost = len(acked - set(logged["event_id"]))
    to_new = None
    if s["new_model_first_served_at"] and fired:
        to_new = (datetime.fromisoformat(s["new_model_first_served_at"])
                  - datetime.fromisoformat(fired[0])).total_seconds()

    gates = {}  # each retrain cycle's gate decision
    for gate_file in sorted(settings.paths.runs.glob("*/gate.json")):
        if gate_file.parent.name != "champion":
            g = json.loads(gate_file.read_text())
            gates[gate_file.parent.name] = (g["promote"], g["reasons"][0] if not g["promote"]
                                            else g["checks"]["metric"]["reason"])
    k = s["k"]
    table = Table(title=f"{settings.data.dataset}: {s['events_played']:,} later events replayed "
                        f"(after {cut.date()}), target {args.rate:g} events/s")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("events/s sustained", f"{s['rate_sustained']}"),
        ("failed requests", f"{s['failed']['total']}"),
        ("acknowledged / lost", f"{s['acknowledged']:,} / {lost}"),
        ("watcher threshold (events)", f"{threshold}"),
        ("asset events fired", f"{len(fired)}"),
        ("retrain runs (type: state)", ", ".join(f"{r['run_type']}: {r['state']}"
                                                 for r in runs)),
        ("gate decisions", "; ".join(f"{'promoted' if ok else 'refused'}: {why}"
                                     for ok, why in gates.values()) or "-"),
        ("first model / new model", f"{s['first_model']} / {s['new_model']}"),
        ("asset event → new model serving", "-" if to_new is None else f"{to_new:.0f} s"),
        ("waited for the new model (held back)", f"{s['waited_for_swap_s']:.0f} s"),
        (f"HR@{k} before ({s['before']['events']:,} events)", fmt(s["before"][f"hr@{k}"])),
        (f"HR@{k} after ({s['after']['events']:,} events)", fmt(s["after"][f"hr@{k}"])),
        (f"HR@{k} after − before (unpaired)", fmt(s["after_minus_before"][f"hr@{k}"], True)),
        (f"NDCG@{k} before", fmt(s["before"][f"ndcg@{k}"])),
        (f"NDCG@{k} after", fmt(s["after"][f"ndcg@{k}"])),
        (f"NDCG@{k} after − before (unpaired)",
         fmt(s["after_minus_before"][f"ndcg@{k}"], True)),
        ("platform RSS summed (processes)", f"{rss_mb:.0f} MB ({n_procs})"),
        ("recops up until healthy", f"{up_s:.0f} s"),
        ("load average (1 min) before / after", f"{load0[0]:.1f} / {load1[0]:.1f}"),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps({
            "summary": s, "lost": lost, "asset_events": fired, "retrain_runs": runs,
            "asset_to_new_model_s": to_new, "gates": gates, "rss_mb": rss_mb, "processes": n_procs,
            "up_s": up_s, "load": [load0, load1], "home": str(home),
            "args": {k: str(v) for k, v in vars(args).items()}}, indent=2, default=str))
    console.print(f"home {home}")


if __name__ == "__main__":
    main()
