"""RecBole 1.2.1 as a peer in bench_quality: its Pop, BPR and SASRec on exactly recops' split.

RecBole runs in its own virtual environment (``ensure_venv``: created on first use from the
pinned ``peers/recbole-requirements.txt``, reused afterwards), never in the project's. This
module, in the project's process:

* exports recops' split as RecBole atomic files (``write_atomic``): ``.inter`` rows ordered by
  (user, timestamp, item id), the protocol's order, so that RecBole's stable time sort picks the
  same last (test) and second-last (valid) event per user, and ``.item`` with the whole
  catalogue, so that RecBole ranks the same items recops ranks (unrated movies included);
* runs ``peers/recbole_runner.py`` once per model with the peer venv's python; the runner checks
  that RecBole's valid/test labels equal recops' for every evaluated user (and fails loudly if
  not), trains, and writes every item's score for each evaluated user's valid and test rows;
* ranks those scores with recops' own evaluation code (``rank_sequences``: the user's training
  items masked, and the valid item for test; the target itself never), so the metrics and the
  per-user NDCG@10 gains of the paired comparison are computed exactly as for recops' rows.

Differences from recops' protocol that remain (see also the runner's docstring):

* Inputs of RecBole's SASRec are its own: every event before the label in the (timestamp, item
  id) order, so a test input ends with the valid item even when both share a timestamp; recops'
  inputs stop strictly before the label's time. Masking is recops' in both cases.
* Users with fewer than 3 events: recops trains on all their events and evaluates none. RecBole
  puts a 2-event user's last event into its test set (not trained on; we never score it), and for
  sequential models a 3-event user has only 2 rows, so RecBole gives it no valid row and the
  split check fails. ml-latest-small has no user with fewer than 20 events.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "peers" / "recbole-requirements.txt"
RUNNER = HERE / "peers" / "recbole_runner.py"
PEER_ROWS = ("pop", "bpr", "sasrec")
DATASET = "recops_split"  # not a RecBole built-in name: no dataset defaults of its own apply


def default_venv() -> Path:
    from recops.config import DEFAULT_HOME

    return DEFAULT_HOME / "peers" / "recbole-venv"


def ensure_venv(venv: Path) -> tuple[Path, float]:
    """The peer venv's python, created and installed on first use; and seconds spent installing.

    Reused while its stamp matches the requirements file's hash. Everything is pinned there, so
    pip installs with ``--no-deps``: RecBole's unused hard dependencies (ray, thop, plotly) stay
    out, and nothing is resolved anew (torch==2.13.0 is the local CPU wheel).
    """
    py = venv / "bin" / "python"
    stamp = venv / "recops-requirements.sha256"
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if py.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return py, 0.0
    t0 = time.perf_counter()
    if not py.exists():
        base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
        subprocess.run([str(base), "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-qq", "--no-deps", "-r",
                    str(REQUIREMENTS)], check=True)
    stamp.write_text(want + "\n")
    return py, time.perf_counter() - t0


def write_atomic(interactions: pd.DataFrame, items: pd.DataFrame, directory: Path,
                 name: str = DATASET) -> Path:
    """``<directory>/<name>/<name>.inter`` and ``.item``; returns the ``.inter`` path.

    ``.inter``: user_id:token, item_id:token, timestamp:float (seconds since the epoch), rows in
    the protocol's order (user, timestamp, item id). ``.item``: every catalogue item id, sorted.
    """
    from recops.schema import EVENT_TIMESTAMP, ITEM_ID, USER_ID
    from recops.training.splits import order_events

    ev = order_events(interactions)
    seconds = (ev[EVENT_TIMESTAMP] - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    out = directory / name
    out.mkdir(parents=True, exist_ok=True)
    inter = out / f"{name}.inter"
    pd.DataFrame({"user_id:token": ev[USER_ID].to_numpy(), "item_id:token": ev[ITEM_ID].to_numpy(),
                  "timestamp:float": seconds.to_numpy()}).to_csv(inter, sep="\t", index=False)
    ids = np.unique(np.concatenate([items[ITEM_ID].to_numpy(np.int64),
                                    ev[ITEM_ID].to_numpy(np.int64)]))
    pd.DataFrame({"item_id:token": ids}).to_csv(out / f"{name}.item", sep="\t", index=False)
    return inter


def read_split(inter: Path) -> pd.DataFrame:
    """Leave-last-out labels as RecBole derives them from an ``.inter`` file: a stable sort by
    timestamp (held as float32 by RecBole), rows grouped by user in that order; per user with
    >= 3 events the last row is test and the one before valid. Columns user_id, valid, test
    (ids). For tests of the export."""
    df = pd.read_csv(inter, sep="\t")
    df.columns = [c.split(":")[0] for c in df.columns]
    df = df.assign(timestamp=df["timestamp"].astype(np.float32))
    df = df.sort_values("timestamp", kind="stable")
    rows = []
    for user, g in df.groupby("user_id", sort=True):
        if len(g) >= 3:
            rows.append((int(user), int(g["item_id"].iloc[-2]), int(g["item_id"].iloc[-1])))
    return pd.DataFrame(rows, columns=["user_id", "valid", "test"])


def expected_split(data: Any) -> pd.DataFrame:
    """recops' evaluated users with their valid and test label item ids."""
    return pd.DataFrame({"user_id": data.eval_users,
                         "valid": data.index.to_ids(data.valid_targets),
                         "test": data.index.to_ids(data.test_targets)})


class ScoreTable(torch.nn.Module):
    """Precomputed score rows served as a recops model to ``rank_sequences``: the one-item
    "sequence" of a row is its row number, so recops' masking and ranking code runs unchanged."""

    max_len = 1

    def __init__(self, scores: np.ndarray) -> None:
        super().__init__()
        self.table = torch.as_tensor(scores, dtype=torch.float32)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, -1]]


def recops_order(data: Any, out: dict[str, np.ndarray], split: str) -> np.ndarray:
    """The runner's scores as [eval user, 1 + n_items] in recops' user order and item index."""
    row = {int(u): i for i, u in enumerate(out["users"])}
    missing = [int(u) for u in data.eval_users if int(u) not in row]
    if missing:
        raise SystemExit(f"peer: no scores for evaluated users {missing[:10]}")
    cols = data.index.to_index(out["item_ids"])  # strict: unknown item ids raise
    if len(cols) != data.n_items:
        raise SystemExit(f"peer ranks {len(cols)} items, recops {data.n_items}")
    scores = np.zeros((len(data.eval_users), data.n_items + 1), dtype=np.float32)
    scores[:, cols] = out[f"{split}_scores"][[row[int(u)] for u in data.eval_users]]
    targets = out[f"{split}_targets"][[row[int(u)] for u in data.eval_users]]
    mine = data.index.to_ids(data.valid_targets if split == "valid" else data.test_targets)
    if not np.array_equal(targets, mine):
        raise SystemExit(f"peer: {split} targets differ from recops' for "
                         f"{int((targets != mine).sum())} users")
    return scores


def metrics(data: Any, scores: np.ndarray, split: str) -> tuple[dict[str, float], np.ndarray]:
    """recops' summary metrics and per-user ranks of precomputed scores, recops' mask applied."""
    from recops.training.evaluation import rank_sequences
    from recops.training.metrics import summarize

    targets, seen = ((data.valid_targets, data.valid_seen) if split == "valid"
                     else (data.test_targets, data.test_seen))
    rows = [np.asarray([i]) for i in range(len(targets))]
    ranks, tops = rank_sequences(ScoreTable(scores), rows, targets, seen)  # type: ignore[arg-type]
    return summarize(ranks, tops, data.n_items, 10), ranks


def run_model(py: Path, model: str, workdir: Path, budget: float | None, threads: int,
              max_seq_len: int, epochs: int | None) -> dict[str, Any]:
    """One runner process; its npz arrays and JSON summary (exits with its log when it fails)."""
    out = workdir / model / "scores.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(py), str(RUNNER), "--data-dir", str(workdir), "--dataset", DATASET,
           "--model", model, "--expected", str(workdir / "expected.tsv"), "--out", str(out),
           "--threads", str(threads), "--max-seq-len", str(max_seq_len)]
    if budget is not None:
        cmd += ["--max-seconds", str(budget)]
    if epochs:
        cmd += ["--epochs", str(epochs)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log = workdir / model / "runner.log"
    with log.open("w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"RecBole runner for {model} failed (exit {rc}):\n{tail}")
    with np.load(out) as z:
        arrays = {k: z[k] for k in z.files}
    return {**arrays, "summary": json.loads(out.with_suffix(".json").read_text())}


def run_rows(data: Any, tables: Any, dataset: str, rows: list[str], workdir: Path, *,
             venv: Path, budget: float | None, threads: int, max_seq_len: int = 50,
             epochs: int | None = None, log: Any = print) -> list[dict[str, Any]]:
    """bench_quality rows (``recbole-<row>``) for ``rows`` of PEER_ROWS on ``data``'s split."""
    from recops.training.metrics import ndcg_gains

    py, install_s = ensure_venv(venv)
    if install_s:
        log(f"  peer venv {venv} installed in {install_s:.0f}s")
    write_atomic(tables.interactions, tables.items, workdir)
    expected_split(data).to_csv(workdir / "expected.tsv", sep="\t", index=False, header=False)
    results = []
    for row in rows:
        out = run_model(py, row, workdir, budget, threads, max_seq_len, epochs)
        s = out["summary"]
        valid, _ = metrics(data, recops_order(data, out, "valid"), "valid")
        test, ranks = metrics(data, recops_order(data, out, "test"), "test")
        r = {"dataset": dataset, "model": f"recbole-{row}",
             **{k: test[k] for k in ("hr@10", "ndcg@10", "mrr", "coverage@10")},
             "valid_ndcg@10": valid["ndcg@10"], "valid_hr@10": valid["hr@10"],
             "epochs": s["epochs"], "best_epoch": s["best_epoch"], "epsilon": None,
             "wall_s": s["wall_s"], "to_best_s": s["time_to_best_s"],
             "test_gains": ndcg_gains(ranks, 10).tolist(),
             "per_segment": {}, "peer": {k: v for k, v in s.items() if k != "model"},
             "install_s": install_s}
        log(f"  recbole-{row}: ndcg@10={r['ndcg@10']:.4f} hr@10={r['hr@10']:.4f} "
            f"({r['wall_s']:.0f}s, {r['epochs']} epochs, best {s['best_epoch']} reached at "
            f"{s['time_to_best_s']:.0f}s{', budget spent' if s['stopped_by_budget'] else ''})")
        results.append(r)
    return results


def details_table(results: list[dict[str, Any]]) -> Any:
    """A rich Table of the peer rows' training: epochs, time to the kept model, RecBole's own
    test NDCG@10 (its masking: none for SASRec, history for Pop/BPR; ties broken its way)."""
    from rich.table import Table

    table = Table(title="RecBole peer: training (wall-time budget per model)")
    for c in ("dataset", "model", "epochs", "best epoch", "time to best s", "wall s", "CPU s",
              "budget spent", "RecBole's own test NDCG@10", "load s"):
        table.add_column(c, justify="left" if c in ("dataset", "model") else "right")
    for r in results:
        p = r.get("peer")
        if p:
            table.add_row(r["dataset"], r["model"], str(p["epochs"]), str(p["best_epoch"]),
                          f"{p['time_to_best_s']:.1f}", f"{p['wall_s']:.1f}",
                          f"{p.get('cpu_s', float('nan')):.1f}",
                          "yes" if p["stopped_by_budget"] else "no",
                          f"{p['recbole_test'].get('ndcg@10', float('nan')):.4f}",
                          f"{p['load_s']:.1f}")
    return table
