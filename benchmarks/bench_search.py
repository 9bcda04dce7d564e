"""Personalised search on ml-latest-small: NDCG@10 personalised against query-only, exact
against an ANN index, and latency beside /recommend (in-process, the service's code path).

Protocol: the split of bench_quality (chronological leave-last-out; second last event =
validation, last = test). Each evaluated user's query is built from the target item's genres
and its most applied tags (tags.csv), never its title; the target is the user's real next item.
Both arms rank the same candidates (top ``--candidates`` by cosine between the query's and the
items' MiniLM vectors), with the user's earlier items masked; the personalised arm re-ranks them
with the SASRec score (serving.search.combine). The weight is chosen on the validation targets;
the test targets are scored once, with that weight. The interval is paired over users.

    .venv/bin/python benchmarks/bench_search.py              # ~5-10 min on 2 cores
    .venv/bin/python benchmarks/bench_search.py --epochs 5   # quicker, weaker model
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # local_data, also when imported
from local_data import movielens_dir  # noqa: E402

ML_SMALL = movielens_dir()
WEIGHTS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
TAGS_PER_QUERY = 3


def queries_for(items: Any, tags_csv: Path) -> dict[int, str]:
    """Per item id: its genres and its most applied tags, as a query (no title)."""
    import pandas as pd

    tags = pd.read_csv(tags_csv)
    tags["tag"] = tags["tag"].astype(str).str.strip().str.lower()
    top = (tags.groupby(["movieId", "tag"]).size().rename("n").reset_index()
           .sort_values(["movieId", "n", "tag"], ascending=[True, False, True])
           .groupby("movieId")["tag"].apply(lambda s: ", ".join(s.head(TAGS_PER_QUERY))))
    out = {}
    for iid, genres in zip(items["item_id"], items["genres"].fillna(""), strict=True):
        g = ", ".join(x for x in str(genres).split("|") if x)
        t = top.get(int(iid), "")
        out[int(iid)] = ". ".join(p for p in (g, t) if p) or "movie"
    return out


def ranks_of(cos: Any, model: Any, targets: np.ndarray, seen: list[np.ndarray], *,
             weight: float, candidates: int) -> np.ndarray:
    """1-based rank of each user's target in the top 10 of the rule (11 when not there)."""
    import torch

    from serving.search import combine

    out = np.full(len(targets), 11)
    for u, t in enumerate(targets):
        c = cos[u].clone()
        if len(seen[u]):
            c[torch.as_tensor(seen[u], dtype=torch.long)] = -torch.inf
        top = combine(c, model[u] if model is not None else None, 10, weight=weight,
                      candidates=candidates).indices
        if int(t) in top:
            out[u] = top.index(int(t)) + 1
    return out


def ivf_index(vectors: np.ndarray, n_lists: int, seed: int = 0) -> tuple[np.ndarray, list]:
    """An inverted-file ANN index (coarse k-means, exact scan of the probed lists)."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=n_lists, n_init=1, random_state=seed).fit(vectors)
    lists = [np.flatnonzero(km.labels_ == c) for c in range(n_lists)]
    cents = km.cluster_centers_.astype(np.float32)
    return cents, lists


def exact_vs_ann(mat: np.ndarray, queries: np.ndarray, k: int = 10) -> list[tuple]:
    """Recall@k against exact, and per-query latency (ms) of exact (torch, as the service) and
    of IVF probes (numpy), all on one thread."""
    import torch
    from threadpoolctl import threadpool_limits

    rows = []
    times = []
    exact = []
    tmat = torch.from_numpy(mat)
    for q in queries:
        tq = torch.from_numpy(q)
        t0 = time.perf_counter()
        with torch.inference_mode():
            top = torch.topk(tmat @ tq, k).indices
        times.append(time.perf_counter() - t0)
        exact.append(set(top.tolist()))
    rows.append(("exact (matrix product)", "-", 1.0, 1e3 * float(np.median(times)),
                 1e3 * float(np.percentile(times, 99))))
    n_lists = int(np.sqrt(len(mat)))
    cents, lists = ivf_index(mat, n_lists)
    limit = threadpool_limits(1)  # numpy's BLAS on one thread, like torch in a worker
    for probe in (1, 4, 8, 16):
        times, rec = [], []
        for q, ex in zip(queries, exact, strict=True):
            t0 = time.perf_counter()
            near = np.argpartition(-(cents @ q), probe)[:probe]
            cand = np.concatenate([lists[c] for c in near])
            s = mat[cand] @ q
            top = cand[np.argpartition(-s, min(k, len(s) - 1))[:k]]
            times.append(time.perf_counter() - t0)
            rec.append(len(ex & set(top.tolist())) / k)
        rows.append((f"IVF, {n_lists} lists", str(probe), float(np.mean(rec)),
                     1e3 * float(np.median(times)), 1e3 * float(np.percentile(times, 99))))
    limit.unregister()
    return rows


def retrieval_table(console: Any, vec: np.ndarray, qv: np.ndarray, uptime: Any) -> None:
    from rich.table import Table

    rows = exact_vs_ann(vec, qv)
    t3 = Table(title=f"candidate retrieval, {len(vec)} items × {vec.shape[1]}, 1 thread, "
                     f"{len(qv)} queries; load: {uptime()}")
    for c in ("index", "probes", "recall@10 vs exact", "p50 ms", "p99 ms"):
        t3.add_column(c, justify="left" if c == "index" else "right")
    for name, probe, rec, p50, p99 in rows:
        t3.add_row(name, probe, f"{rec:.3f}", f"{p50:.3f}", f"{p99:.3f}")
    console.print(t3)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--home", type=Path, default=Path("/tmp/recops-bench-search"),
                    help="scratch home (the item text vectors are cached there)")
    ap.add_argument("--latency-requests", type=int, default=300)
    ap.add_argument("--retrieval-only", action="store_true",
                    help="only exact against ANN (no training; needs the cached vectors)")
    args = ap.parse_args(argv)

    import torch
    from rich.console import Console
    from rich.table import Table

    from recops.config import load_settings
    from recops.data.movielens import read_movielens
    from recops.features.text_encoder import encode_texts, item_text_vectors
    from recops.release.registry import RegisteredModel
    from recops.training.metrics import ndcg_gains, paired_difference
    from recops.training.sequences import SequenceData
    from recops.training.trainer import train_model
    from serving.engine import Engine
    from serving.search import Searcher

    console = Console()
    uptime = lambda: subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()  # noqa: E731
    console.print(f"start: {uptime()}")
    tables = read_movielens(ML_SMALL, "ml-latest-small")
    settings = load_settings(overrides={
        "home": args.home, "model.kind": "sasrec", "model.max_len": 50, "model.d_model": 64,
        "model.n_layers": 2, "model.n_heads": 2, "model.dropout": 0.3, "train.lr": 1e-3,
        "train.batch_size": 64, "train.epochs": args.epochs, "train.eval_every": 2,
        "train.patience": 3, "train.num_threads": 2, "data.dataset": "ml-latest-small"})
    data = SequenceData.from_interactions(tables.interactions, tables.items, 50, tables.users)
    if args.retrieval_only:
        torch.set_num_threads(1)
        vec = item_text_vectors(settings, data.items)
        qtext = queries_for(data.items, ML_SMALL / "tags.csv")
        ids = data.items["item_id"].to_numpy()
        retrieval_table(console, vec, encode_texts(
            [qtext[int(ids[t - 1])] for t in data.test_targets[:300]]), uptime)
        return
    console.print(f"{data}; training SASRec ({args.epochs} epochs at most)")
    t0 = time.perf_counter()
    res = train_model(settings, data, progress=sys.stderr.isatty())
    console.print(f"SASRec: {len(res.history)} evaluations, valid NDCG@10 "
                  f"{res.valid_metrics['ndcg@10']:.4f}, {time.perf_counter() - t0:.0f} s")
    items = data.items
    reg = RegisteredModel("bench:search", res.checkpoint, {}, items[["item_id", "title"]],
                          [int(i) for i in items["item_id"]], args.home)
    torch.set_num_threads(1)  # as a serving worker
    engine = Engine(reg)
    console.print("encoding the items' text (cached under --home)")
    vec = item_text_vectors(settings, items)  # row i = index i + 1 (data.items is sorted)
    mat = torch.nn.functional.normalize(torch.cat([torch.zeros(1, vec.shape[1]),
                                                   torch.from_numpy(vec)]), dim=1)
    searcher = Searcher(engine, mat, "features", lambda q: encode_texts([q])[0])
    qtext = queries_for(items, ML_SMALL / "tags.csv")
    ids = engine.item_ids

    def split(name: str) -> tuple[Any, Any, np.ndarray, list[np.ndarray]]:
        inputs = getattr(data, f"{name}_inputs")
        targets = getattr(data, f"{name}_targets")
        seen = getattr(data, f"{name}_seen")
        qv = encode_texts([qtext[int(ids[t])] for t in targets])
        cos = torch.stack([searcher.cosine(q) for q in qv])
        with torch.inference_mode():
            model = torch.cat([searcher.model_scores(list(map(int, h))).unsqueeze(0)
                               for h in inputs])
        return cos, model, np.asarray(targets), seen

    console.print("scoring the validation and test queries")
    vcos, vmod, vt, vseen = split("valid")
    valid = {w: ndcg_gains(ranks_of(vcos, vmod, vt, vseen, weight=w,
                                    candidates=args.candidates), 10).mean() for w in WEIGHTS}
    best = max(WEIGHTS, key=lambda w: (valid[w], -w))
    tcos, tmod, tt, tseen = split("test")
    q_only = ndcg_gains(ranks_of(tcos, tmod, tt, tseen, weight=0.0,
                                 candidates=args.candidates), 10)
    pers = ndcg_gains(ranks_of(tcos, tmod, tt, tseen, weight=best,
                               candidates=args.candidates), 10)
    alone = tmod.clone()
    alone[:, 0] = -torch.inf  # padding
    model_only = ndcg_gains(ranks_of(alone, None, tt, tseen, weight=0.0, candidates=10), 10)
    diff, half = paired_difference(pers, q_only)

    table = Table(title=f"search NDCG@10, ml-latest-small, {len(tt)} users "
                        f"(candidates {args.candidates}; weight chosen on validation)")
    for c in ("weight", "valid NDCG@10"):
        table.add_column(c, justify="right")
    for w in WEIGHTS:
        table.add_row(f"{w:.1f}" + (" *" if w == best else ""), f"{valid[w]:.4f}")
    console.print(table)
    t2 = Table(title=f"test split, weight {best}")
    for c in ("ranking", "test NDCG@10", "Δ vs query-only (95%, paired)"):
        t2.add_column(c, justify="left" if c == "ranking" else "right")
    t2.add_row("query only (cosine)", f"{q_only.mean():.4f}", "-")
    t2.add_row(f"personalised (weight {best})", f"{pers.mean():.4f}",
               f"{diff:+.4f} ± {half:.4f}")
    d2, h2 = paired_difference(model_only, q_only)
    t2.add_row("model alone, no query (/recommend)", f"{model_only.mean():.4f}",
               f"{d2:+.4f} ± {h2:.4f}")
    console.print(t2)

    # Exact against ANN on the real query vectors.
    retrieval_table(console, vec, encode_texts([qtext[int(ids[t])] for t in tt[:300]]), uptime)

    # Latency in-process: the handlers' code after the request is parsed (no HTTP, no store).
    hist = [[int(ids[i]) for i in h] for h in data.test_inputs]
    texts = [qtext[int(ids[t])] for t in tt]
    n = min(args.latency_requests, len(hist))

    def timed(fn: Any) -> tuple[float, float]:
        fn(0)
        ts = []
        for i in range(n):
            t0 = time.perf_counter()
            fn(i)
            ts.append(time.perf_counter() - t0)
        return 1e3 * float(np.median(ts)), 1e3 * float(np.percentile(ts, 99))

    w = best
    rows = [
        ("/search, no user", timed(lambda i: searcher.search(texts[i], None, 10, weight=w,
                                                             candidates=args.candidates))),
        ("/search, user with history", timed(lambda i: searcher.search(
            texts[i], hist[i], 10, weight=w, candidates=args.candidates, exclude_seen=True))),
        ("  of which: query encoding", timed(lambda i: searcher.encode(texts[i]))),
        ("/recommend, user with history", timed(lambda i: engine.recommend(hist[i], 10))),
    ]
    t4 = Table(title=f"latency in-process, 1 thread, {n} sequential requests; load: {uptime()}")
    for c in ("request", "p50 ms", "p99 ms"):
        t4.add_column(c, justify="left" if c == "request" else "right")
    for name, (p50, p99) in rows:
        t4.add_row(name, f"{p50:.2f}", f"{p99:.2f}")
    console.print(t4)
    console.print(f"end: {uptime()}")


if __name__ == "__main__":
    main()
