"""Serving load test: /recommend latency and throughput over HTTP vs the in-process floor.

Builds a synthetic world (lake -> Feast sources -> a trained SASRec -> registry champion), then
for each online store (SQLite, Redis): measures the in-process floor (Feast online read + model
forward + top-k, the same code the service runs), starts `bentoml serve`, and drives it from a
separate load-generator process on loopback (`hey` when installed, else benchmarks/loadgen.py)
at concurrency 1, 8, 32 and 64: p50, p99, p99.9, max and req/s. Also: feedback under load (rows
written == requests acknowledged), feedback-to-visible latency, RSS per worker, and int8
dynamic quantisation (forward latency and test NDCG@10). Figures mean something only on a quiet
machine (load average well under the core count; it is printed).

    apt-get install -y hey   # optional: the Go load generator
    .venv/bin/python benchmarks/bench_serving.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loadgen import hey, pct, run  # noqa: E402 - benchmarks/ is this script's own folder

from recops.core.supervisor import free_port, start  # noqa: E402 - the checkout, put on sys.path

# --- server -----------------------------------------------------------------------------------

class Served:
    """An HTTP server in a process group of its own, ready once ``health`` answers 200."""

    def __init__(self, what: str, cmd: list[str], env: dict[str, str], log: Path, health: str,
                 *, cwd: Path = REPO, ready_s: float = 300) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.child = start(what, [*cmd, "--host", "127.0.0.1", "--port", str(self.port)], env,
                           log, cwd=cwd, append=False)
        try:
            self.child.wait_http(self.url + health, timeout=ready_s)
        except BaseException:
            self.child.stop()
            raise

    def stop(self) -> None:
        self.child.stop()


class Server(Served):
    """`bentoml serve` of ``target`` (recops' service by default) with this settings' env."""

    def __init__(self, settings: Any, log: Path, target: str = "serving.service:Recommender",
                 cwd: Path = REPO, env: dict[str, str] | None = None) -> None:
        from recops.environment import child_env

        super().__init__("bentoml serve", [sys.executable, "-m", "bentoml", "serve", target],
                         {**child_env(settings), **(env or {})}, log, "/readyz", cwd=cwd)

    def rss_mb(self) -> dict[str, Any]:
        """RSS of the whole service and of each worker process, in MB."""
        import psutil

        root = psutil.Process(self.child.pid)
        procs = [root, *root.children(recursive=True)]
        workers = [p.memory_info().rss / 2**20 for p in procs
                   if "_bentoml_impl.worker.service" in " ".join(p.cmdline())]
        return {"total": sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20,
                "workers": workers}


class FeastServer(Served):
    """`feast serve` over the same repo, yaml and project: the feature read alone, over HTTP.

    Same worker count as the service; --max-requests is raised so that its workers are not
    recycled every 1,000 requests (the recycling is a stall of its own, not the read's cost).
    """

    def __init__(self, settings: Any, workers: int, log: Path) -> None:
        from recops.environment import child_env
        from recops.features import feast_store

        feast = Path(sys.executable).with_name("feast")
        super().__init__("feast serve", [str(feast), "-c", str(feast_store.REPO), "-f",
                          str(feast_store.yaml_file(settings)), "serve", "--no-access-log",
                          "--workers", str(workers), "--max-requests", "100000000"],
                         child_env(settings), log, "/health", ready_s=120)

    def body(self, user: int) -> dict[str, Any]:
        from recops.features import featurize as f

        return {"features": [f"{f.USER_RECENT_VIEW}:{f.RECENT_ITEMS}"],
                "entities": {"user_id": [user]}}



# --- world ------------------------------------------------------------------------------------

def build_world(home: Path, quick: bool, data: Path | None = None,
                epochs: int | None = None) -> dict[str, Any]:
    from recops import schema
    from recops.config import load_settings
    from recops.core.lake import Lake
    from recops.data.movielens import read_movielens
    from recops.data.synthetic import generate
    from recops.features.featurize import build_sources
    from recops.release import registry
    from recops.training.evaluation import evaluate_model
    from recops.training.sequences import SequenceData
    from recops.training.splits import labelled_frame
    from recops.training.trainer import train_model

    sizes = (300, 1000, 30_000) if quick else (1000, 2000, 100_000)
    settings = load_settings(overrides={"home": home, "train.max_minutes": 1e6,
                                        "train.epochs": epochs or (2 if quick else 5),
                                        "train.num_threads": 2 if data else 1})
    if data is not None:  # a MovieLens release: the catalogue and histories the issue measures
        tables = read_movielens(data, data.name)
        sizes = (len(tables.users), len(tables.items), len(tables.interactions))
    else:
        tables = generate(*sizes, seed=7)
    lake = Lake(settings.paths.lake)
    for table, df in ((schema.ITEMS, tables.items), (schema.USERS, tables.users),
                      (schema.INTERACTIONS, tables.interactions)):
        lake.append(table, df, source="bench")
    build_sources(settings, lake, text_vectors=False)
    inter = lake.read(schema.INTERACTIONS)
    labelled = labelled_frame(inter, settings.model.max_len)
    data = SequenceData.from_labelled(labelled, tables.items, interactions=inter)
    t0 = time.perf_counter()
    result = train_model(settings, data, progress=False)
    train_s = time.perf_counter() - t0
    test = evaluate_model(result.model, data, "test")
    meta = {"run_id": "bench", "metrics": test.overall, "per_segment": test.per_segment,
            "privacy": None, "privacy_total": None, "data_version": lake.dataset_version(),
            "training_mode": "centralised", "federated": None,
            "validation": {"passed": True, "report": None}}
    tag = registry.register(settings, result.checkpoint, meta)
    registry.promote(settings, tag)
    return {"settings": settings, "data": data, "tag": tag, "test": test.overall,
            "train_s": train_s, "interactions": inter, "items": tables.items,
            "sizes": sizes, "checkpoint": result.checkpoint,
            "history": inter.groupby(schema.USER_ID).size().to_dict()}


def quantization(world: dict[str, Any], reps: int) -> list[list[Any]]:
    """Forward+top-k latency and test NDCG@10 of the float and the int8 model."""
    import torch

    from recops.training.evaluation import evaluate_model
    from recops.training.models import load_checkpoint
    from serving.engine import quantize_dynamic

    torch.set_num_threads(1)
    data = world["data"]
    rows = []
    for name, model in (("float32", load_checkpoint(world["checkpoint"])),
                        ("int8 dynamic", quantize_dynamic(load_checkpoint(world["checkpoint"])))):
        seq = torch.randint(1, data.n_items + 1, (1, world["settings"].model.max_len))
        lat = []
        with torch.inference_mode():
            for _ in range(reps):
                t0 = time.perf_counter()
                torch.topk(model.score(seq), 10)
                lat.append(time.perf_counter() - t0)
        ndcg = evaluate_model(model, data, "test", segments=False).overall["ndcg@10"]
        rows.append([name, pct(lat, 50) * 1e3, pct(lat, 99) * 1e3, ndcg])
    return rows


def floor(settings: Any, users: list[int], reps: int) -> dict[str, float]:
    """The service's own work in-process: Feast online read, model forward, top-k, reasons."""
    import torch

    from recops.release import registry
    from serving.engine import Engine
    from serving.online import OnlineFeatures

    torch.set_num_threads(1)
    online = OnlineFeatures(settings)
    engine = Engine(registry.load(settings))
    read, model, total = [], [], []
    for n in range(reps + 10):
        t0 = time.perf_counter()
        hist = online.history(users[n % len(users)]) or []
        t1 = time.perf_counter()
        engine.recommend(hist, 10)
        t2 = time.perf_counter()
        if n >= 10:  # warm-up
            read.append(t1 - t0)
            model.append(t2 - t1)
            total.append(t2 - t0)
    return {"read_p50": pct(read, 50) * 1e3, "model_p50": pct(model, 50) * 1e3,
            "p50_ms": pct(total, 50) * 1e3, "p99_ms": pct(total, 99) * 1e3,
            "rps": 1 / statistics.mean(total)}


def feedback_to_visible(url: str, items: list[int], trials: int) -> list[float]:
    """Seconds from sending a new user's first event to a /recommend that reflects it."""
    import httpx

    out = []
    with httpx.Client(base_url=url, timeout=60) as c:
        for n in range(trials):
            user = 10_000_000 + n
            t0 = time.perf_counter()
            r = c.post("/feedback", json={"user_id": user, "item_id": items[n % len(items)],
                                          "event_type": "click"})
            assert r.status_code == 200, r.text
            while True:
                body = c.post("/recommend", json={"user_id": user, "k": 10}).json()
                if body["history_size"] == 1:
                    break
                if time.perf_counter() - t0 > 30:
                    raise RuntimeError("feedback not visible after 30 s")
            out.append(time.perf_counter() - t0)
    return out


def bench_store(world: dict[str, Any], store: str, args: argparse.Namespace,
                logdir: Path) -> dict[str, Any]:
    from recops.config import load_settings
    from recops.core.feedback import FeedbackLog
    from recops.features import feast_store

    ov = {"home": world["settings"].home, "stores.online": store,
          "stores.feast_project": "bench" + uuid.uuid4().hex[:8], "train.num_threads": 1,
          "serving.workers": args.workers, **args.set}
    settings = load_settings(overrides=ov)
    feast_store.apply(settings)
    feast_store.materialize(settings)
    users = sorted(int(u) for u in world["interactions"].user_id.unique())
    items = [int(i) for i in world["items"].item_id[:200]]
    res: dict[str, Any] = {"store": store}
    try:
        res["floor"] = floor(settings, users, args.requests)
        server = Server(settings, logdir / f"bentoml-{store}.log")
        try:
            # a user with a full history: every request reads and scores max_len items
            heavy = sorted(users, key=lambda u: -world["history"].get(u, 0))
            run(server.url, "/recommend", 4, 200, heavy, tool=args.tool)  # warm-up
            res["http"] = {c: run(server.url, "/recommend", c, args.requests, heavy,
                                  tool=args.tool) for c in args.concurrency}
            log = FeedbackLog(settings.paths.feedback)
            before = log.count()
            fb = run(server.url, "/feedback", 8, args.requests, users, items)
            res["feedback"] = {**fb, "rows_written": log.count() - before}
            vis = feedback_to_visible(server.url, items, 20 if args.quick else 50)
            res["visible"] = {"p50_ms": pct(vis, 50) * 1e3, "p99_ms": pct(vis, 99) * 1e3}
            res["rss_mb"] = server.rss_mb()
        finally:
            server.stop()
        # The framework's floor: the same request model, a constant answer, same workers.
        workers = args.workers or os.cpu_count() or 1
        from recops.environment import bentoml_config

        floor_srv = Server(settings, logdir / f"floor-{store}.log", "floor_service:Floor",
                           REPO / "benchmarks", {"FLOOR_WORKERS": str(workers),
                           "BENTOML_CONFIG_OVERRIDES": json.dumps(bentoml_config(settings,
                                                                                 "floor"))})
        try:
            run(floor_srv.url, "/recommend", 4, 200, heavy, tool=args.tool)  # warm-up
            res["bentoml_floor"] = {c: run(floor_srv.url, "/recommend", c, args.requests, heavy,
                                           tool=args.tool) for c in args.concurrency}
        finally:
            floor_srv.stop()
        if shutil.which("hey"):  # the feature read alone, for the p99 target's reference
            fs = FeastServer(settings, args.workers or os.cpu_count() or 1,
                             logdir / f"feast-{store}.log")
            try:
                url = fs.url + "/get-online-features"
                hey(url, fs.body(heavy[0]), 4, 200)  # warm-up
                res["feast"] = {c: hey(url, fs.body(heavy[0]), c, args.requests)
                                for c in args.concurrency}
            finally:
                fs.stop()
    finally:
        if store == "redis":
            feast_store.teardown(settings)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small world, fewer requests")
    ap.add_argument("--stores", default="sqlite,redis")
    ap.add_argument("--concurrency", default="1,8,32,64")
    ap.add_argument("--requests", type=int, default=None, help="requests per level")
    ap.add_argument("--workers", type=int, default=0, help="serving.workers (0: one per core)")
    ap.add_argument("--tool", choices=["auto", "hey", "python"], default="auto",
                    help="/recommend load generator (auto: hey when installed)")
    ap.add_argument("--home", type=Path, default=None, help="keep state here (default: temp)")
    ap.add_argument("--data", type=Path, default=None,
                    help="serve a model of this MovieLens release (a folder such as "
                         "ml-latest-small) instead of the synthetic world")
    ap.add_argument("--epochs", type=int, default=None,
                    help="training epochs of the served model (default 2 quick, 5 otherwise); "
                         "serving cost depends on the catalogue and architecture, not on them")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting for the served service, e.g. serving.log_impressions=false "
                         "or serving.policy=epsilon_greedy (repeatable)")
    args = ap.parse_args()
    import yaml

    try:
        args.set = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    except ValueError:
        ap.error("--set takes KEY=VALUE")
    if args.data is not None and not args.data.is_dir():
        ap.error(f"--data {args.data}: no such folder")
    if args.epochs is not None and args.epochs < 1:
        ap.error("--epochs must be at least 1")
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.requests = args.requests or (300 if args.quick else 2000)
    for k, v in {"BENTOML_DO_NOT_TRACK": "true", "FEAST_USAGE": "False"}.items():
        os.environ.setdefault(k, v)

    from rich.console import Console
    from rich.table import Table

    from recops.errors import RecopsError

    con = Console(width=170)  # the tables are wide; never wrap them into unreadable cells
    tmp = tempfile.TemporaryDirectory(prefix="bench_serving_")
    home = args.home or Path(tmp.name) / "home"
    with con.status("building the world (lake, features, training, registry)"):
        try:
            world = build_world(home, args.quick, args.data, args.epochs)
        except RecopsError as exc:  # e.g. --data is not a MovieLens release recops reads
            ap.error(str(exc))
    u, i, e = world["sizes"]
    con.print(f"world: {u} users, {i} items, {e} events; SASRec trained in "
              f"{world['train_s']:.1f} s, test NDCG@10 {world['test']['ndcg@10']:.4f}; "
              f"{os.cpu_count()} CPUs; load avg {os.getloadavg()[0]:.1f}")
    with con.status("int8 quantisation"):
        q = quantization(world, 200 if args.quick else 1000)
    results = []
    for store in args.stores.split(","):
        with con.status(f"{store}: floor, server, load"):
            results.append(bench_store(world, store, args, Path(tmp.name)))

    t = Table(title=f"/recommend latency, {args.requests} requests per row, "
                    f"serving.workers={args.workers or 'one per core'} (ratio = p50 / "
                    "in-process floor p50)" + "".join(f", {k}={v}" for k, v in args.set.items()))
    for col in ("store", "path", "concurrency", "p50 ms", "p99 ms", "p99.9 ms", "max ms",
                "req/s", "errors", "p50 ratio"):
        t.add_column(col, justify="left" if col in ("store", "path") else "right")
    for r in results:
        f = r["floor"]
        t.add_row(r["store"], f"in-process floor (Feast read {f['read_p50']:.1f} + model "
                  f"{f['model_p50']:.1f} ms)", "1", f"{f['p50_ms']:.2f}", f"{f['p99_ms']:.2f}",
                  "", "", f"{f['rps']:.0f}", "0", "1.0")
        for c, h in r["http"].items():
            t.add_row(r["store"], f"HTTP, {h['tool']} process", str(c), f"{h['p50_ms']:.2f}",
                      f"{h['p99_ms']:.2f}", f"{h['p999_ms']:.2f}", f"{h['max_ms']:.1f}",
                      f"{h['rps']:.0f}", str(h["errors"]), f"{h['p50_ms'] / f['p50_ms']:.1f}")
        for c, h in r.get("bentoml_floor", {}).items():
            t.add_row(r["store"], "BentoML floor (constant answer)", str(c),
                      f"{h['p50_ms']:.2f}", f"{h['p99_ms']:.2f}", f"{h['p999_ms']:.2f}",
                      f"{h['max_ms']:.1f}", f"{h['rps']:.0f}", str(h["errors"]), "")
        for c, h in r.get("feast", {}).items():
            t.add_row(r["store"], "feast serve (feature read alone)", str(c),
                      f"{h['p50_ms']:.2f}", f"{h['p99_ms']:.2f}", f"{h['p999_ms']:.2f}",
                      f"{h['max_ms']:.1f}", f"{h['rps']:.0f}", str(h["errors"]), "")
    for r in results:
        if "feast" in r and 1 in r["http"] and 1 in r["feast"]:
            con.print(f"{r['store']}: /recommend p99 at concurrency 1 is "
                      f"{r['http'][1]['p99_ms'] / r['feast'][1]['p99_ms']:.2f}x feast serve's")
    con.print(t)
    t2 = Table(title="feedback under load (concurrency 8), visibility, memory")
    for col in ("store", "acknowledged", "rows written", "errors", "fb p50 ms", "fb p99 ms",
                "visible p50 ms", "visible p99 ms", "service RSS MB", "per worker MB"):
        t2.add_column(col, justify="right")
    for r in results:
        fb, v = r["feedback"], r["visible"]
        t2.add_row(r["store"], str(fb["ok"]), str(fb["rows_written"]), str(fb["errors"]),
                   f"{fb['p50_ms']:.2f}", f"{fb['p99_ms']:.2f}", f"{v['p50_ms']:.2f}",
                   f"{v['p99_ms']:.2f}", f"{r['rss_mb']['total']:.0f}",
                   " / ".join(f"{w:.0f}" for w in r["rss_mb"]["workers"]))
    con.print(t2)
    t3 = Table(title="int8 dynamic quantisation (1 thread, batch 1, forward + top-10)")
    for col in ("model", "p50 ms", "p99 ms", "test NDCG@10"):
        t3.add_column(col, justify="right")
    for name, p50, p99, ndcg in q:
        t3.add_row(name, f"{p50:.3f}", f"{p99:.3f}", f"{ndcg:.4f}")
    con.print(t3)
    lost = [r["store"] for r in results if r["feedback"]["ok"] != r["feedback"]["rows_written"]]
    if lost:
        con.print(f"[red]feedback rows != acknowledged for {lost}[/]")
        sys.exit(1)


if __name__ == "__main__":
    main()
