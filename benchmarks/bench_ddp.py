"""Data-parallel training (torchrun, DDP on gloo): training samples/s at 1 and 2 processes, and
the paired validation NDCG@10 of a 2-process model against the 1-process one.

    .venv/bin/python benchmarks/bench_ddp.py throughput      # synthetic, 1M events, 1 epoch
    .venv/bin/python benchmarks/bench_ddp.py quality         # ml-latest-small + synthetic
    .venv/bin/python benchmarks/bench_ddp.py throughput --events 100000 --epochs 1   # quick

Throughput rows: one process in this process (``train_model``, ``train.num_threads`` threads),
then torchrun with 1 and with 2 processes (``recops.training.launch.train_distributed``), each
rank with ``train.num_threads / nproc`` torch threads (OMP_NUM_THREADS the same), so the
processes never ask for more threads than one process would. samples/s counts the training
samples (history windows) of an epoch over that epoch's training loop time (validation, start-up
and the data's hand-over excluded; they are in the wall column). ``train.batch_size`` is the
global batch, split across the ranks.

Quality rows: the same recipe trained by one process and by torchrun with 2; each user's
validation NDCG@10 from both models, and the paired 95% interval of the mean difference
(2 processes - 1 process) over the same users (normal approximation, 1.96 standard errors).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # local_data, also when imported
from local_data import movielens_dir  # noqa: E402


def _settings(home: Path, overrides: dict[str, Any]) -> Any:
    from recops.config import load_settings
    from recops.core.supervisor import free_port

    return load_settings(overrides={"home": str(home), "privacy.budget_epsilon": 1e9,
                                    "train.distributed.rdzv_endpoint":
                                        f"127.0.0.1:{free_port()}", **overrides})


def train(data: Any, home: Path, overrides: dict[str, Any], nproc: int | None) -> tuple[Any, float]:
    """(TrainResult, wall seconds): ``nproc`` None trains in this process, else torchrun."""
    from recops.training.launch import train_distributed
    from recops.training.trainer import train_model

    t0 = time.perf_counter()
    if nproc is None:
        result = train_model(_settings(home, overrides), data, progress=False)
    else:
        s = _settings(home, {**overrides, "train.distributed.nproc_per_node": nproc})
        result = train_distributed(s, data, home / f"job{nproc}")
    return result, time.perf_counter() - t0


def throughput(args: argparse.Namespace) -> None:
    from recops.data.synthetic import generate
    from recops.training.samples import history_windows
    from recops.training.sequences import SequenceData

    t0 = time.perf_counter()
    tables = generate(n_users=args.users, n_items=args.items, n_interactions=args.events, seed=0)
    data = SequenceData.from_interactions(tables.interactions, tables.items, max_len=args.max_len)
    samples = sum(1 for w in history_windows(data.train_histories, args.max_len) if len(w) >= 2)
    print(f"synthetic: {len(tables.interactions):,} events, {data.n_users:,} users, "
          f"{data.n_items:,} items, {samples:,} training samples a epoch (built in "
          f"{time.perf_counter() - t0:.0f} s)", flush=True)
    overrides = {"train.epochs": args.epochs, "train.batch_size": args.batch,
                 "train.num_threads": args.threads, "train.max_minutes": 1e6,
                 "model.max_len": args.max_len, "train.eval_every": 1000}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, nproc in (("1 process", None), ("torchrun, 1 process", 1),
                             ("torchrun, 2 processes", 2)):
            result, wall = train(data, Path(tmp), overrides, nproc)
            seconds = sum(r["train_seconds"] for r in result.history)
            threads = args.threads if nproc is None else max(1, args.threads // nproc)
            rows.append((label, threads, seconds, samples * len(result.history) / seconds, wall,
                         result.valid_metrics["ndcg@10"]))
            print(f"  {label}: {rows[-1][3]:,.0f} samples/s", flush=True)
    print("\n| run | torch threads per process | train s | samples/s | wall s | "
          "valid NDCG@10 |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, threads, seconds, rate, wall, ndcg in rows:
        print(f"| {label} | {threads} | {seconds:.1f} | {rate:,.0f} | {wall:.0f} | {ndcg:.4f} |")


def paired(a: Any, b: Any) -> tuple[float, float, float]:
    """Mean of b - a and its 95% interval (normal approximation)."""
    import numpy as np

    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def quality(args: argparse.Namespace) -> None:
    from recops.data.synthetic import generate
    from recops.training.evaluation import rank_targets
    from recops.training.metrics import ndcg_gains
    from recops.training.sequences import SequenceData

    sets = []
    for name in args.datasets.split(","):
        if name == "ml-latest-small":
            from recops.data.movielens import read_movielens

            tables = read_movielens(movielens_dir(), "ml-latest-small")
        else:
            tables = generate(n_users=2_000, n_items=2_000, n_interactions=150_000, seed=0)
        sets.append((name, SequenceData.from_interactions(tables.interactions, tables.items,
                                                          max_len=args.max_len)))
    overrides = {"train.epochs": args.epochs, "train.max_minutes": 1e6,
                 "train.num_threads": args.threads, "model.max_len": args.max_len}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in sets:
            gains = []
            for nproc in (None, 2):
                result, _ = train(data, Path(tmp), overrides, nproc)
                ranks, _ = rank_targets(result.model, data, "valid")
                gains.append(ndcg_gains(ranks, 10))
            mean, lo, hi = paired(*gains)
            rows.append((name, len(gains[0]), gains[0].mean(), gains[1].mean(), mean, lo, hi))
            print(f"  {name}: done", flush=True)
    print("\n| data | users | 1 process | 2 processes | difference | 95% interval |\n"
          "| --- | ---: | ---: | ---: | ---: | --- |")
    for name, n, one, two, mean, lo, hi in rows:
        print(f"| {name} | {n} | {one:.4f} | {two:.4f} | {mean:+.4f} | [{lo:+.4f}, {hi:+.4f}] |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput", help="training samples/s at 1 and 2 processes")
    t.add_argument("--events", type=int, default=1_000_000)
    t.add_argument("--users", type=int, default=10_000)
    t.add_argument("--items", type=int, default=20_000)
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--batch", type=int, default=256, help="global batch (train.batch_size)")
    t.add_argument("--max-len", type=int, default=50)
    t.add_argument("--threads", type=int, default=2, help="train.num_threads (whole node)")
    q = sub.add_parser("quality", help="paired validation NDCG@10, 2 processes against 1")
    q.add_argument("--datasets", default="ml-latest-small,synthetic")
    q.add_argument("--epochs", type=int, default=20)
    q.add_argument("--max-len", type=int, default=50)
    q.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    throughput(args) if args.what == "throughput" else quality(args)


if __name__ == "__main__":
    main()
