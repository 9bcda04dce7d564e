"""DP cost: SASRec training throughput and peak memory without DP, with DP-SGD (hooks) and ghost
clipping, and ε against NDCG@10 on ml-latest-small.

    .venv/bin/python benchmarks/bench_dp.py            # full: ml-latest-small shapes
    .venv/bin/python benchmarks/bench_dp.py --quick    # small shapes, few epochs

Throughput rows each run in a fresh subprocess (so ru_maxrss is that mode's peak alone) on
synthetic full-length sequences shaped like the dataset (n_items, max_len), one sample = one
user. The ε-vs-NDCG rows train with ``recops.training.trainer.train_model`` (DP through
``recops.training.dp.make_private``) and report full-ranking test NDCG@10 under the
leave-last-out protocol (docs: recops/training/evaluation.py).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # local_data, also when imported
from local_data import data_root  # noqa: E402

MODES = ("no-dp", "no-dp-dense", "dp-sgd-hooks", "dp-sgd-ghost")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(args: argparse.Namespace) -> dict:
    """One throughput measurement in this process; prints a JSON line."""
    import torch

    from recops.config import load_settings
    from recops.training.dp import make_private
    from recops.training.models.base import sequence_ce
    from recops.training.models.sasrec import SASRec

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n, length, v = args.users, args.max_len, args.items
    x = torch.randint(1, v + 1, (n, length))
    y = torch.roll(x, -1, 1)
    y[:, -1] = torch.randint(1, v + 1, (n,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                         batch_size=args.batch, shuffle=True)
    model = SASRec(v, max_len=length, d_model=args.d_model, n_layers=args.layers, n_heads=2,
                   dropout=0.2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    pt = None
    if args.worker.startswith("dp-sgd"):
        with tempfile.TemporaryDirectory() as home:
            s = load_settings(overrides={"home": home, "privacy.enabled": True,
                                         "privacy.clipping": "ghost" if args.worker.endswith(
                                             "ghost") else "flat"})
            pt = make_private(model, opt, loader, s, n_users=n, epochs=1)
    base_rss = _rss_mb()

    def batches():
        while True:
            yield from (pt.loader if pt else loader)

    def step(xb, yb) -> None:
        if pt is not None:
            if len(xb) == 0:
                pt.empty_step()
                return
            pt.optimizer.zero_grad(set_to_none=True)
            pt.loss(pt.model(xb), yb).backward()
            pt.optimizer.step()
            return
        opt.zero_grad(set_to_none=True)
        if args.worker == "no-dp-dense":
            sequence_ce(model(xb), yb).mean().backward()
        else:  # what training.fit_epochs runs without DP
            model.training_loss(xb, yb).mean().backward()
        opt.step()

    it = batches()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.train()
        xb, yb = next(it)
        step(xb, yb)  # warm-up: allocator, hook set-up
        seqs, t0 = 0, time.perf_counter()
        for _ in range(args.steps):
            xb, yb = next(it)
            step(xb, yb)
            seqs += len(xb)
        wall = time.perf_counter() - t0
    out = {"mode": args.worker, "seqs_per_s": seqs / wall, "steps": args.steps, "seqs": seqs,
           "wall_s": wall, "peak_rss_mb": _rss_mb(), "rss_before_training_mb": base_rss,
           "params": sum(p.numel() for p in model.parameters())}
    print(json.dumps(out))
    return out


def throughput(args: argparse.Namespace) -> list[dict]:
    rows = []
    for mode in MODES:
        cmd = [sys.executable, __file__, "--worker", mode, "--users", str(args.users),
               "--items", str(args.items), "--max-len", str(args.max_len), "--d-model",
               str(args.d_model), "--layers", str(args.layers), "--batch", str(args.batch),
               "--steps", str(args.steps), "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode:
            raise SystemExit(f"{mode} worker failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


def epsilon_vs_ndcg(args: argparse.Namespace) -> list[dict]:
    from recops.config import load_settings
    from recops.data.loaders import load_dataset
    from recops.training.evaluation import evaluate_model
    from recops.training.privacy import PrivacyLedger
    from recops.training.sequences import SequenceData
    from recops.training.trainer import train_model

    rows = []
    with tempfile.TemporaryDirectory() as home:
        base = {"home": home, "data.dataset": "ml-latest-small", "data.root": args.data_root,
                "data.download": False, "train.epochs": args.epochs,
                "train.batch_size": args.train_batch, "train.lr": args.lr,
                "train.num_threads": args.threads,
                "model.max_len": args.max_len, "model.d_model": args.d_model,
                "model.n_layers": args.layers, "privacy.budget_epsilon": 1e6}
        s0 = load_settings(overrides=base)
        tables = load_dataset(s0)
        data = SequenceData.from_interactions(tables.interactions, tables.items,
                                              s0.model.max_len, tables.users)
        for eps in [None, *args.epsilons]:
            over = dict(base)
            if eps is not None:
                over.update({"privacy.enabled": True, "privacy.target_epsilon": eps})
            s = load_settings(overrides=over)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                res = train_model(s, data, progress=False,
                                  ledger=PrivacyLedger(Path(home) / f"ledger-{eps}.jsonl"))
            test = evaluate_model(res.model, data, "test", segments=False).overall
            p = res.privacy or {}
            rows.append({"target_eps": eps, "spent_eps": p.get("epsilon"), "delta": p.get("delta"),
                         "sigma": p.get("noise_multiplier"), "q": p.get("sample_rate"),
                         "steps": p.get("steps"), "epochs_run": len(res.history),
                         "ndcg@10": test["ndcg@10"], "hr@10": test["hr@10"],
                         "wall_s": time.perf_counter() - t0})
            print(f"  trained eps={eps}: ndcg@10={test['ndcg@10']:.4f}", file=sys.stderr)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shapes and few epochs")
    ap.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--users", type=int)
    ap.add_argument("--items", type=int)
    ap.add_argument("--max-len", type=int)
    ap.add_argument("--d-model", type=int)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, help="training epochs for the ε-vs-NDCG rows")
    ap.add_argument("--train-batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 4.0, 8.0])
    ap.add_argument("--data-root", default=data_root())
    ap.add_argument("--skip-quality", action="store_true", help="throughput and memory only")
    ap.add_argument("--skip-throughput", action="store_true", help="ε vs NDCG@10 only")
    args = ap.parse_args()
    quick = args.quick
    # Full defaults: ml-latest-small's catalogue (9,742 items), SASRec defaults (L=50, d=64).
    for name, full, small in [("users", 1024, 256), ("items", 9742, 2000), ("max_len", 50, 20),
                              ("d_model", 64, 32), ("batch", 128, 64), ("steps", 8, 4),
                              ("epochs", 20, 3)]:
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    if args.worker:
        worker(args)
        return

    if not args.skip_throughput:
        print_throughput(args, throughput(args))
    if args.skip_quality:
        return
    print_quality(args)


def print_throughput(args: argparse.Namespace, rows: list[dict]) -> None:
    base = rows[0]["seqs_per_s"]
    print(f"\n### DP training cost (SASRec, {rows[0]['params']:,} params, {args.items} items, "
          f"L={args.max_len}, d={args.d_model}, {args.layers} layers, batch {args.batch}, "
          f"{args.threads} threads, {args.steps} steps)\n")
    print("| mode | sequences/s | time vs no-DP | peak RSS (MB) | RSS before training (MB) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['mode']} | {r['seqs_per_s']:.1f} | {base / r['seqs_per_s']:.2f}x | "
              f"{r['peak_rss_mb']:.0f} | {r['rss_before_training_mb']:.0f} |")


def print_quality(args: argparse.Namespace) -> None:
    if not (Path(args.data_root) / "ml-latest-small" / "ratings.csv").exists():
        print(f"\n(ε vs NDCG@10 skipped: no ml-latest-small under {args.data_root})")
        return
    q = epsilon_vs_ndcg(args)
    sys.stdout.flush()
    print(f"\n### ε vs test NDCG@10 (ml-latest-small, leave-last-out, full ranking, seen masked; "
          f"L={args.max_len}, d={args.d_model}; no DP: up to {args.epochs} epochs with early "
          f"stopping, batch {args.train_batch}, Adam lr {args.lr:g}; DP: the privacy recipe's "
          "defaults, docs/privacy.md)\n")
    print("| target ε | spent ε | δ | σ | q | steps | epochs | NDCG@10 | HR@10 | wall (s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in q:
        if r["target_eps"] is None:
            print(f"| no DP | – | – | – | – | – | {r['epochs_run']} | {r['ndcg@10']:.4f} | "
                  f"{r['hr@10']:.4f} | {r['wall_s']:.0f} |")
        else:
            print(f"| {r['target_eps']:g} | {r['spent_eps']:.2f} | {r['delta']:.1e} | "
                  f"{r['sigma']:.2f} | {r['q']:.3f} | {r['steps']} | {r['epochs_run']} | "
                  f"{r['ndcg@10']:.4f} | {r['hr@10']:.4f} | {r['wall_s']:.0f} |")


if __name__ == "__main__":
    main()
