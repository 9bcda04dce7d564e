"""Compliance report build time, audit-chain verification time, and a screenshot of the report.

    .venv/bin/python benchmarks/bench_report.py            # 3 sizes, 5 repeats each
    .venv/bin/python benchmarks/bench_report.py --quick    # the small size, 2 repeats
    .venv/bin/python benchmarks/bench_report.py --home H --model TAG --screenshot docs/x.png

Without --home, each size builds its records with the real APIs in a temporary home: lake
batches, a privacy ledger of client-level spends from Opacus' accountant, federated rounds,
a registered BentoML model. Prints one table: gather (read records + draw figures), render
(jinja2), build (both + write + audit record), HTML size, and `verify` of an audit log.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZES = {  # name: (federated rounds, ledger entries, user segments, audit records)
    "small": (5, 3, 4, 100),
    "medium": (50, 30, 8, 2_000),
    "large": (200, 200, 16, 10_000),
}


def build_records(settings: Any, rounds_n: int, ledger_n: int, segments: int,
                  audit_n: int) -> str:
    """A registered federated DP model with ``rounds_n`` rounds and ``ledger_n`` ledger spends."""
    from federated.accounting import client_level_spend
    from recops.core.audit import AuditLog
    from recops.core.lake import Lake
    from recops.release import registry
    from recops.release.gate import decide
    from recops.training.models import create_model, make_checkpoint
    from recops.training.privacy import PrivacyLedger, epsilon_for

    rng = np.random.default_rng(0)
    n_users, n_items, n_events = 200, 100, 5_000
    items = pd.DataFrame({"item_id": np.arange(1, n_items + 1)})
    items["title"] = [f"Movie {i}" for i in items.item_id]
    items["genres"] = "Drama"
    items["text"] = items.title
    inter = pd.DataFrame({
        "user_id": rng.integers(1, n_users + 1, n_events),
        "item_id": rng.integers(1, n_items + 1, n_events), "rating": 4.0,
        "event_type": "rating",
        "event_timestamp": pd.Timestamp("2024-01-01", tz="UTC")
        + pd.to_timedelta(rng.integers(0, 30 * 86400, n_events), unit="s")})
    lake = Lake(settings.paths.lake)
    lake.append("items", items, "bench")
    lake.append("users", pd.DataFrame({"user_id": np.arange(1, n_users + 1)}), "bench")
    for lo in range(0, n_events, n_events // 4):
        lake.append("interactions", inter.iloc[lo:lo + n_events // 4], "bench")
    version = lake.dataset_version()
    log = AuditLog(settings.paths.audit_log)
    for i in range(audit_n):
        log.append("train" if i % 3 else "ingest", run_id=f"old-{i // 10}", inputs={"i": i},
                   outputs={"sha": f"{i:064x}"}, details={"note": "filler"})
    sigma, q, delta = 1.0, 0.5, 1e-3
    ledger = PrivacyLedger(settings.paths.privacy_ledger)
    spend = None
    for i in range(ledger_n):
        spend = client_level_spend(noise_multiplier=sigma, clipping_norm=1.0, sample_rate=q,
                                   rounds=max(1, rounds_n // max(1, ledger_n)), delta=delta,
                                   mechanism="client-level-fixed", population="bench",
                                   run_id="bench-run" if i == ledger_n - 1 else f"old-{i}")
        ledger.append(spend)
    rounds = [{"round": r, "participants": 8 if r else 0, "sampled": 10 if r else 0,
               "failures": 2 if r else 0, "train_loss": 5.0 / (1 + r) if r else None,
               "global_ndcg@10": 0.1 + 0.001 * r, "global_hr@10": 0.2 + 0.001 * r,
               "epsilon": {"client_level": epsilon_for(sigma, q, r, delta) if r else None,
                           "sample_level": None}} for r in range(rounds_n + 1)]
    rdir = settings.paths.runs / "bench-run"
    rdir.mkdir(parents=True, exist_ok=True)
    history = [{"epoch": r["round"], "loss": r["train_loss"] or 0.0,
                "ndcg@10": r["global_ndcg@10"], "hr@10": r["global_hr@10"]} for r in rounds]
    for name, obj in (("history.json", history), ("federated_rounds.json", rounds),
                      ("privacy.json", spend.to_dict()),
                      ("train.json", {"dataset_version": version, "mode": "federated"})):
        (rdir / name).write_text(json.dumps(obj))
    per_seg = {f"segment-{s:02d}": {"hr@10": float(v), "ndcg@10": float(v) / 2,
                                    "mrr": float(v) / 3, "n_users": 10.0}
               for s, v in enumerate(rng.uniform(0.1, 0.5, segments))}
    meta = {"run_id": "bench-run", "metrics": {"hr@10": 0.3, "ndcg@10": 0.15, "mrr": 0.1,
                                               "coverage@10": 0.4},
            "per_segment": per_seg, "privacy": spend.to_dict(), "data_version": version,
            "training_mode": "federated",
            "federated": {"num_clients": 10, "rounds": rounds_n, "completed_rounds": rounds_n,
                          "strategy": "fedavg", "partition": "iid", "client_dp": "fixed"},
            "validation": {"passed": True, "report": None}}
    decision = decide(settings, meta, None)
    (rdir / "gate.json").write_text(json.dumps({"passed": decision.promote,
                                                **decision.to_dict()}))
    args = {"max_len": 10, "d_model": 8, "n_layers": 1, "n_heads": 1, "dropout": 0.0}
    ckpt = make_checkpoint(create_model("sasrec", n_items, args), list(range(1, n_items + 1)),
                           model_settings=args, train_settings={})
    return registry.register(settings, ckpt, meta, items=items, interactions=inter)


def timed(fn: Any, repeats: int) -> tuple[float, float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), max(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small size only, 2 repeats")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--home", type=Path, help="report on an existing home instead")
    ap.add_argument("--model", default="champion", help="with --home: the model tag")
    ap.add_argument("--screenshot", type=Path, help="save a Chromium screenshot of the report")
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from recops.compliance.chromium import screenshot
    from recops.compliance.report import build_report, collect, render_html
    from recops.config import load_settings
    from recops.core.audit import AuditLog, verify

    repeats = 2 if args.quick else args.repeats
    table = Table(title=f"compliance report build (median / max of {repeats})")
    for col in ("records", "rounds", "ledger", "segments", "audit recs", "gather s",
                "render s", "build s", "html KiB", "verify s"):
        table.add_column(col, justify="right" if col != "records" else "left")
    last_html: Path | None = None
    cases: list[tuple[str, Any, str, tuple]] = []
    tmp = tempfile.TemporaryDirectory(prefix="recops-bench-report-")
    if args.home:
        s = load_settings(overrides={"home": args.home})
        cases.append((str(args.home), s, args.model, ("-", "-", "-", "-")))
    else:
        for name in (["small"] if args.quick else list(SIZES)):
            s = load_settings(overrides={"home": Path(tmp.name) / name})
            tag = build_records(s, *SIZES[name])
            cases.append((name, s, tag, SIZES[name]))
    for name, s, tag, size in cases:
        g_med, g_max, data = timed(lambda: collect(s, tag), repeats)  # noqa: B023
        r_med, r_max, page = timed(lambda: render_html(data), repeats)  # noqa: B023
        b_med, b_max, path = timed(lambda: build_report(s, tag), repeats)  # noqa: B023
        v_med, v_max, _ = timed(lambda: verify(AuditLog(s.paths.audit_log)), repeats)  # noqa: B023
        table.add_row(name, *[str(x) for x in size], f"{g_med:.2f} / {g_max:.2f}",
                      f"{r_med:.3f} / {r_max:.3f}", f"{b_med:.2f} / {b_max:.2f}",
                      f"{len(page) / 1024:.0f}", f"{v_med:.3f} / {v_max:.3f}")
        last_html = path
    Console(width=160).print(table)
    if args.screenshot and last_html is not None:
        t0 = time.perf_counter()
        shot = screenshot(last_html, args.screenshot, size="1200,4200")
        print(f"screenshot of {last_html} -> {shot} ({time.perf_counter() - t0:.1f} s)")
    tmp.cleanup()


if __name__ == "__main__":
    main()
