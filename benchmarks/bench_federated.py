"""Federated vs centralised SASRec at the same total epochs; simulation scaling; per-round overhead.

Table 1 (quality): centralised training for E epochs against Flower simulations of R = E rounds
x 1 local epoch with 10 clients: FedAvg IID, FedAvg non-IID (Dirichlet over taste clusters),
FedAvg with user-level DP-SGD in each client (Opacus, ε target 8). Valid/test NDCG@10 of the
final model (no early stopping, so every row trains exactly E epochs' worth), and wall time.
Table 2 (scaling): wall time and peak memory (RSS summed over this process and every process
it started: SuperLink, simulation engine, Ray workers) for 10, 50, 100 clients.
Table 3 (overhead): per round, the round's wall time against the local training time it needs
at best: the clients' summed fit seconds spread over the slots that run them at once (CPUs /
CPUs per client, at most the number of clients), or the slowest client if that is longer. The
rest is Flower/Ray messaging, (de)serialisation, client-side evaluation and the global one.

    .venv/bin/python benchmarks/bench_federated.py            # ml-latest-small
    .venv/bin/python benchmarks/bench_federated.py --quick    # small synthetic data, minutes
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # local_data, also when imported
from local_data import movielens_dir  # noqa: E402

ML_SMALL = movielens_dir()
MODEL = {"model.kind": "sasrec", "model.max_len": 100, "model.d_model": 64, "model.n_layers": 2,
         "model.n_heads": 2, "model.dropout": 0.2, "train.lr": 2e-3, "train.batch_size": 32,
         "train.weight_decay": 0.0}
QUICK_MODEL = {**MODEL, "model.max_len": 30, "model.d_model": 32, "model.n_layers": 1}
DP = {"privacy.enabled": True, "privacy.target_epsilon": 8.0, "privacy.clipping": "ghost",
      "privacy.budget_epsilon": 1e9, "train.lr": 3e-3}


class PeakRSS:
    """Peak of the summed RSS of this process and all its descendants, sampled every 0.5 s."""

    def __init__(self) -> None:
        import psutil

        self._me = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for p in [self._me, *self._me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # exited between listing and reading
                    total += p.memory_info().rss
            self.peak = max(self.peak, total)
            self._stop.wait(0.5)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def load(quick: bool) -> tuple[Any, str]:
    if quick:
        from recops.data.synthetic import generate

        t = generate(n_users=300, n_items=300, n_interactions=15_000, n_clusters=6, seed=0)
        return t, "synthetic"
    from recops.data.movielens import read_movielens

    if not (ML_SMALL / "ratings.csv").exists():
        raise SystemExit(f"{ML_SMALL} not found")
    return read_movielens(ML_SMALL, "ml-latest-small"), "ml-latest-small"


def settings_for(home: Path, dataset: str, base: dict, **extra: Any) -> Any:
    from recops.config import load_settings

    o = {**base, **extra, "home": home, "train.num_threads": 1,
         "data.dataset": dataset if dataset != "synthetic" else "synthetic"}
    return load_settings(overrides=o)


def per_user_ndcg(model: Any, data: Any, k: int = 10) -> Any:
    """Each test user's NDCG@k."""
    from recops.training.evaluation import rank_targets
    from recops.training.metrics import ndcg_gains

    return ndcg_gains(rank_targets(model, data, "test", k)[0], k)


def paired_gap(row: Any, base: Any) -> str:
    """Mean per-user NDCG@10 difference to ``base`` on the same test users, ± 95% interval.

    With 610 test users the per-user NDCG is mostly 0, so one model's mean has a standard
    error of about 0.006: a gap inside the interval is not evidence of a difference.
    """
    from recops.training.metrics import paired_difference

    mean, half = paired_difference(row, base)
    return f"{mean:+.4f} ± {half:.4f}"


def quality_row(name: str, settings: Any, data: Any, run_dir: Path) -> dict[str, Any]:
    from recops.core.runs import RunDir
    from recops.training.evaluation import evaluate_model

    t0 = time.perf_counter()
    if settings.train.mode == "federated":
        from federated.runner import train_federated

        res = train_federated(settings, data, run_dir=run_dir)
    else:
        from recops.training.trainer import train_model

        res = train_model(settings, data, progress=False)
    wall = time.perf_counter() - t0
    res.save(RunDir(run_dir))
    test = evaluate_model(res.model, data, "test", segments=False).overall
    eps = res.privacy["epsilon"] if res.privacy else None
    return {"row": name, "valid_ndcg": res.valid_metrics["ndcg@10"], "test_ndcg": test["ndcg@10"],
            "test_hr": test["hr@10"], "wall_s": wall, "eps": eps, "run_dir": run_dir,
            "per_user": per_user_ndcg(res.model, data)}


def print_table(title: str, cols: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for c in cols:
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(*r)
    Console().print(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small synthetic data, few epochs")
    ap.add_argument("--epochs", type=int, default=None, help="total epochs E (default 20; 3 quick)")
    ap.add_argument("--clients", default=None, help="client counts for scaling (10,50,100)")
    ap.add_argument("--skip", default="", help="comma list of tables to skip: quality,scaling")
    args = ap.parse_args()
    import json

    from recops.training.sequences import SequenceData

    epochs = args.epochs or (3 if args.quick else 15)
    default_clients = "10,20" if args.quick else "10,50,100"
    scaling = [int(x) for x in (args.clients or default_clients).split(",")]
    skip = set(filter(None, args.skip.split(",")))
    base = QUICK_MODEL if args.quick else MODEL
    tables, dataset = load(args.quick)
    data = SequenceData.from_interactions(tables.interactions, tables.items,
                                          base["model.max_len"], tables.users)
    print(f"{dataset}: {data!r}; E = {epochs} total epochs; 1 CPU per client", flush=True)
    home = Path(tempfile.mkdtemp(prefix="bench-fed-"))
    fed = {"train.mode": "federated", "federated.rounds": epochs, "federated.local_epochs": 1,
           "federated.num_clients": 10, "federated.min_clients": 2}
    results: list[dict[str, Any]] = []
    if "quality" not in skip:
        plan = [
            ("centralised", {"train.epochs": epochs, "train.eval_every": epochs,
                             "train.patience": epochs}),
            ("fedavg-iid", {**fed, "federated.partition": "iid"}),
            ("fedavg-noniid (dir 0.3)", {**fed, "federated.partition": "dirichlet",
                                         "federated.dirichlet_alpha": 0.3}),
            ("fedavg-iid + DP-SGD ε8", {**fed, **DP, "federated.partition": "iid"}),
        ]
        for i, (name, extra) in enumerate(plan):
            s = settings_for(home, dataset, base, **extra)
            results.append(quality_row(name, s, data, home / "runs" / f"q{i}"))
            r = results[-1]
            print(f"  {name}: valid NDCG@10 {r['valid_ndcg']:.4f}, {r['wall_s']:.0f} s", flush=True)
        central = results[0]["test_ndcg"]
        print_table(f"{dataset}: centralised vs federated at {epochs} total epochs (10 clients)",
                    ["row", "valid NDCG@10", "test NDCG@10", "test HR@10", "vs central",
                     "paired gap, 95%", "ε", "wall s"],
                    [[r["row"], f"{r['valid_ndcg']:.4f}", f"{r['test_ndcg']:.4f}",
                      f"{r['test_hr']:.4f}",
                      f"{100 * (r['test_ndcg'] / central - 1):+.1f}%" if central else "-",
                      paired_gap(r["per_user"], results[0]["per_user"]) if i else "-",
                      "-" if r["eps"] is None else f"{r['eps']:.2f}", f"{r['wall_s']:.0f}"]
                     for i, r in enumerate(results)])
        iid = next(r for r in results if r["row"] == "fedavg-iid")
        rows = json.loads((iid["run_dir"] / "federated_rounds.json").read_text())
        import os

        over = []
        for prev, cur in zip(rows, rows[1:], strict=False):
            round_s = cur["wall_seconds"] - prev["wall_seconds"]
            # 1 CPU per client (federated.num_cpus_per_client): as many run at once as CPUs.
            slots = max(1, min(os.cpu_count() or 1, cur["participants"] or 1))
            local = max(cur.get("client_train_seconds") or 0.0,
                        (cur.get("client_train_seconds_sum") or 0.0) / slots)
            over.append([str(cur["round"]), f"{round_s:.1f}", f"{local:.1f}",
                         f"{round_s - local:.1f}", f"{100 * (round_s - local) / round_s:.0f}%"])
        shares = sorted(float(r[-1].rstrip("%")) for r in over)
        if shares:
            over.append(["median", "", "", "", f"{shares[len(shares) // 2]:.0f}%"])
        print_table("FedAvg IID: per-round overhead (round wall vs the local training it needs "
                    "on this machine's CPUs)",
                    ["round", "round s", "local train s", "overhead s", "overhead share"], over)
    if "scaling" not in skip:
        srows = []
        for n in scaling:
            s = settings_for(home, dataset, base, **{**fed, "federated.num_clients": n,
                                                     "federated.rounds": 2})
            from federated.runner import train_federated
            from recops.errors import TrainingError

            with PeakRSS() as mem:
                t0 = time.perf_counter()
                try:
                    train_federated(s, data, run_dir=home / "runs" / f"scale{n}")
                    status = "ok"
                except TrainingError as exc:  # e.g. Ray failing to start on a loaded machine
                    status = "failed: " + str(exc).splitlines()[0][:60]
                wall = time.perf_counter() - t0
            srows.append([str(n), f"{wall:.0f}", f"{wall / 2:.0f}", f"{mem.peak / 2**30:.2f}",
                          status])
            print(f"  {n} clients: {wall:.0f} s, peak {mem.peak / 2**30:.2f} GiB, {status}",
                  flush=True)
        print_table(f"{dataset}: simulation, 2 rounds x 1 local epoch",
                    ["clients", "wall s", "s / round", "peak RSS GiB", "status"], srows)
    print(f"runs kept under {home}")


if __name__ == "__main__":
    main()
