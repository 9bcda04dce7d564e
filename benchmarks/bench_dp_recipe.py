"""The DP-SGD recipe: what each step buys, and ε against NDCG@10 at two population sizes.

    .venv/bin/python benchmarks/bench_dp_recipe.py --quick                # 2,000 users, CPU
    .venv/bin/python benchmarks/bench_dp_recipe.py --users 20000 40000 --device cuda --jobs 12 \
        --movielens "$RECOPS_DATA__ROOT" --text-dir .dpdata

Everything runs on the synthetic generator (public data: choosing the recipe on it costs no
privacy). Each population is split by the leave-last-out protocol; every row is one
``recops.training.trainer.train_model`` run (user-level DP-SGD through Opacus when ε is set).
Rows are chosen by *validation* NDCG@10; test NDCG@10 is reported with a paired 95% interval
against the same architecture trained without DP (same users, same test items). Rows run in
parallel worker processes (``--jobs``) that load the data the parent built.

Stages, per population:
  1. no DP (the default training recipe) and the previous DP recipe (batch 256, 8 epochs);
  2. at ε = 8, the grid of batch fraction × epochs × learning rate, and the text item side;
  3. ε ∈ {1, 2, 4, 8} with the recipe that validated best at ε = 8, on every population
     (the other synthetic size, and ml-latest-small with ``--movielens``); with ``--text-dir``,
     the recipe with text-initialised items, trained or frozen (``privacy.item_side: text``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Filled in the parent before the workers fork (copy-on-write, nothing pickled).
DATA: dict[str, Any] = {}
TEXT: dict[str, np.ndarray] = {}
ARGS: argparse.Namespace | None = None


def build(name: str, args: argparse.Namespace) -> None:
    """Population ``name`` ("synthetic-N" or "ml-latest-small") as sequence data, with its
    item text vectors when ``--text-dir`` is given (encoded once, then read from there)."""
    from recops.training.sequences import SequenceData

    t0 = time.perf_counter()
    if name == "ml-latest-small":
        from recops.data.movielens import load_movielens

        tables = load_movielens(name, Path(args.movielens), Path(tempfile.mkdtemp()),
                                download=False)
    else:
        from recops.data.synthetic import generate

        n_users = int(name.split("-")[1])
        tables = generate(n_users=n_users, n_items=args.items,
                          n_interactions=n_users * args.per_user, seed=args.seed)
    DATA[name] = SequenceData.from_interactions(tables.interactions, tables.items, 50,
                                                tables.users)
    vec = Path(args.text_dir or "") / f"text-{name}-{args.items}-{args.seed}.npy"
    if args.text_dir and vec.exists():
        TEXT[name] = np.load(vec)
    elif args.text_dir is not None:
        from recops.features.text_encoder import encode_texts, item_texts

        # data.items is aligned to the model's item index (what training's text path encodes).
        TEXT[name] = encode_texts(item_texts(DATA[name].items))
        vec.parent.mkdir(parents=True, exist_ok=True)
        np.save(vec, TEXT[name])
    print(f"# {name}: {DATA[name].n_users} users, data built in "
          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)


def run(job: dict[str, Any]) -> dict[str, Any]:
    """One training run in a worker; returns its validation and per-user test figures."""
    import torch

    from recops.config import load_settings
    from recops.training.evaluation import rank_targets
    from recops.training.metrics import ndcg_gains
    from recops.training.privacy import PrivacyLedger
    from recops.training.trainer import train_model

    assert ARGS is not None
    torch.set_num_threads(ARGS.threads)
    data = DATA[job["pop"]]
    with tempfile.TemporaryDirectory() as home:
        over = {"home": home, "train.num_threads": ARGS.threads, "train.device": ARGS.device,
                "privacy.budget_epsilon": 1e6, **ARGS.base, **job["settings"]}
        if job.get("eps") is not None:
            over.update({"privacy.enabled": True, "privacy.target_epsilon": job["eps"]})
        s = load_settings(overrides=over)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = train_model(s, data, progress=False,
                              text_vectors=TEXT.get(job["pop"]),
                              ledger=PrivacyLedger(Path(home) / "ledger.jsonl"))
        wall = time.perf_counter() - t0
    ranks, _ = rank_targets(res.model, data, "test")
    p = res.privacy or {}
    return {**job, "valid_ndcg": res.valid_metrics["ndcg@10"], "test_gains":
            ndcg_gains(ranks, 10).tolist(), "wall_s": wall, "epochs_run": len(res.history),
            "spent_eps": p.get("epsilon"), "sigma": p.get("noise_multiplier"),
            "q": p.get("sample_rate"), "steps": p.get("steps")}


def _load(path: str, args: argparse.Namespace) -> None:
    """Worker start: the parent's data from its pickle (a forked child of a process that ran
    torch's thread pool can hang, so workers are spawned)."""
    global ARGS
    import pickle

    with open(path, "rb") as f:
        data, text = pickle.load(f)
    DATA.update(data)
    TEXT.update(text)
    ARGS = args


def run_all(jobs: list[dict[str, Any]], n: int, shared: str) -> list[dict[str, Any]]:
    """Every job, ``n`` at a time; rows come back in the jobs' order."""
    assert ARGS is not None
    out: dict[int, dict[str, Any]] = {}
    with ProcessPoolExecutor(max_workers=n, mp_context=get_context("spawn"), initializer=_load,
                             initargs=(shared, ARGS)) as pool:
        futures = {pool.submit(run, job): i for i, job in enumerate(jobs)}
        for fut in as_completed(futures):
            r = out[futures[fut]] = fut.result()
            if ARGS.json:  # row by row, so a run cut short still leaves what it finished
                with open(ARGS.json + ".rows", "a") as f:
                    f.write(json.dumps(r) + "\n")
            print(f"  {r['pop']} {r['name']:<34} valid {r['valid_ndcg']:.4f}  test "
                  f"{np.mean(r['test_gains']):.4f}  {r['wall_s']:.0f} s", file=sys.stderr,
                  flush=True)
    return [out[i] for i in range(len(jobs))]


def stage_jobs(pop: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    old = {"privacy.batch_size": 256, "privacy.dp_epochs": 8, "privacy.dp_lr": 3e-3}
    jobs: list[dict[str, Any]] = [
        {"name": "no DP (defaults)", "pop": pop, "eps": None, "settings": {}},
        {"name": "ε=8, previous recipe", "pop": pop, "eps": 8.0, "settings": old}]
    for frac in args.fractions:
        for epochs in args.epochs:
            for lr in args.lrs:
                jobs.append({"name": f"ε=8 frac {frac:g} ep {epochs} lr {lr:g}", "pop": pop,
                             "eps": 8.0, "recipe": True,
                             "settings": {"privacy.batch_fraction": frac,
                                          "privacy.dp_epochs": epochs, "privacy.dp_lr": lr}})
    return jobs


def paired(a: list[float], b: list[float]) -> str:
    from recops.training.metrics import paired_difference

    d, h = paired_difference(np.asarray(a), np.asarray(b))
    return f"{d:+.4f} ± {h:.4f}"


def table(rows: list[dict[str, Any]], ref: dict[str, Any]) -> None:
    base = float(np.mean(ref["test_gains"]))
    print("| run | target ε | spent ε | σ | q | steps | epochs | valid NDCG@10 | test NDCG@10 "
          "| × no DP | paired gap to no DP, 95% | wall (s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        t = float(np.mean(r["test_gains"]))
        dp = r.get("eps") is not None
        gap = paired(r["test_gains"], ref["test_gains"]) if r is not ref else "–"
        print(f"| {r['name']} | {r['eps'] if dp else '∞'} | "
              f"{(r['spent_eps'] or 0):.2f} | {(r['sigma'] or 0):.2f} | {(r['q'] or 0):.3f} | "
              f"{r['steps'] or '–'} | {r['epochs_run']} | {r['valid_ndcg']:.4f} | {t:.4f} | "
              f"{t / base:.2f} | {gap} | {r['wall_s']:.0f} |")


def main() -> None:
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, nargs="+", default=[20_000, 40_000])
    ap.add_argument("--items", type=int, default=2_000)
    ap.add_argument("--per-user", type=int, default=50, help="mean events per user")
    ap.add_argument("--movielens", help="a folder holding ml-latest-small/: its users too")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=1, help="training runs at once")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per run")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.02, 0.05, 0.1, 0.2])
    ap.add_argument("--epochs", type=int, nargs="+", default=[10, 30])
    ap.add_argument("--lrs", type=float, nargs="+", default=[3e-3, 1e-2])
    ap.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0])
    ap.add_argument("--text-dir", help="item text vectors (.npy, encoded here when missing) for "
                                       "the text item-side rows; unset: no text rows")
    ap.add_argument("--json", help="write every row here (and each as it ends to JSON.rows)")
    ap.add_argument("--quick", action="store_true", help="2,000 users, a small grid, CPU")
    ap.add_argument("--prepare", action="store_true", help="build the data and text vectors "
                                                           "(--text-dir), train nothing")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    if args.quick:
        args.users, args.fractions, args.epochs, args.lrs = [2_000], [0.1], [4], [1e-2]
        args.epsilons = [1.0, 8.0]
    args.base = {"train.epochs": 3} if args.quick else {}
    ARGS = args
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    pops = [f"synthetic-{n}" for n in args.users]
    if args.movielens:
        pops.append("ml-latest-small")
    for name in pops:
        build(name, args)
    if args.prepare:
        return
    import pickle

    shared = Path(tempfile.mkdtemp()) / "data.pkl"
    shared.write_bytes(pickle.dumps((DATA, TEXT)))
    grid_pop = pops[0]  # the recipe is chosen on the first (synthetic) population

    t0 = time.perf_counter()
    print(f"# stage 1-2: {grid_pop}", file=sys.stderr, flush=True)
    grid = run_all(stage_jobs(grid_pop, args), args.jobs, str(shared))
    best = max((r for r in grid if r.get("recipe")), key=lambda r: r["valid_ndcg"])
    recipe = dict(best["settings"])
    later: list[dict[str, Any]] = []
    for name in pops:
        if name != grid_pop:
            later.append({"name": "no DP (defaults)", "pop": name, "eps": None, "settings": {}})
        for eps in args.epsilons:
            if name != grid_pop or eps != 8.0:
                later.append({"name": f"ε={eps:g} chosen recipe", "pop": name, "eps": eps,
                              "settings": recipe})
        if name in TEXT:
            text = {**recipe, "model.text_init": True}
            later.append({"name": "no DP, text init", "pop": name, "eps": None,
                          "settings": {"model.text_init": True}})
            later.append({"name": "ε=8 chosen + text init (trained)", "pop": name, "eps": 8.0,
                          "settings": text})
            for eps in (1.0, 8.0):
                later.append({"name": f"ε={eps:g} chosen + text item side", "pop": name,
                              "eps": eps, "settings": {**text, "privacy.item_side": "text"}})
    print("# stage 3", file=sys.stderr, flush=True)
    rows = grid + run_all(later, args.jobs, str(shared))
    print(f"\n### DP-SGD recipe ({args.items}-item synthetic catalogue, ~{args.per_user} events "
          f"a user; SASRec defaults; device {args.device}; {time.perf_counter() - t0:.0f} s)\n")
    print(f"Chosen on validation NDCG@10 at ε = 8, {grid_pop}: {recipe}")
    for name in pops:
        mine = [r for r in rows if r["pop"] == name]
        ref = next(r for r in mine if r["eps"] is None)
        print(f"\n#### {name} ({DATA[name].n_users} users, {len(ref['test_gains'])} "
              "evaluated)\n")
        table(mine, ref)
    if args.json:
        Path(args.json).write_text(json.dumps({"recipe": recipe, "rows": rows}))


if __name__ == "__main__":
    main()
