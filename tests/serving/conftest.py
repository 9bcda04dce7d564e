"""Serving fixtures: a small world (lake, Feast online store, registered champion) and a real
`bentoml serve` subprocess on a free loopback port."""

from __future__ import annotations

import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recops.core.supervisor import Child, free_port, start

REPO = Path(__file__).resolve().parents[2]
N_USERS, N_ITEMS, N_EVENTS = 40, 120, 1200


def small_tables(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Interactions and items small enough for seconds-long Feast runs."""
    rng = np.random.default_rng(seed)
    items = pd.DataFrame({"item_id": np.arange(1, N_ITEMS + 1) * 10})
    items["title"] = [f"Movie {i}" for i in items.item_id]
    items["genres"] = "Drama"
    items["text"] = items["title"] + " Drama"
    users = rng.integers(1, N_USERS + 1, N_EVENTS)
    users[:N_USERS] = np.arange(1, N_USERS + 1)  # every user has events
    pop = rng.zipf(1.5, N_EVENTS) % N_ITEMS
    ts = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(
        rng.integers(0, 30 * 86400, N_EVENTS), unit="s")
    inter = pd.DataFrame({"user_id": users, "item_id": items.item_id.to_numpy()[pop],
                          "rating": rng.integers(1, 11, N_EVENTS) / 2.0,
                          "event_type": "rating", "event_timestamp": ts})
    return inter, items


def make_checkpoint(item_ids: list[int], seed: int, kind: str = "sasrec",
                    max_len: int = 20) -> dict[str, Any]:
    import torch

    from recops.training.models import create_model
    from recops.training.models import make_checkpoint as mk

    torch.manual_seed(seed)
    args = {"max_len": max_len, "d_model": 16, "n_layers": 1, "n_heads": 1, "dropout": 0.0}
    if kind == "pop":
        args = {"max_len": max_len}
    model = create_model(kind, len(item_ids), args)
    return mk(model, item_ids, model_settings=args, train_settings={"seed": seed})


def meta(run_id: str, ndcg: float = 0.2, **kw: Any) -> dict[str, Any]:
    return {"run_id": run_id, "metrics": {"hr@10": 0.3, "ndcg@10": ndcg, "mrr": 0.1,
                                          "coverage@10": 0.2},
            "per_segment": {"<20": {"ndcg@10": ndcg}}, "privacy": None, "privacy_total": None,
            "data_version": "test", "training_mode": "centralised", "federated": None,
            "validation": {"passed": True, "report": None},
            "baseline_metrics": {"ndcg@10": 0.05}, **kw}


@dataclass
class World:
    settings: Any
    interactions: pd.DataFrame
    items: pd.DataFrame
    tags: list[str]

    @property
    def positives(self) -> pd.DataFrame:
        """The positive events by data.event_roles (ratings above 2; the others are negatives):
        what the users' sequences and popularity hold."""
        from recops.core.roles import split_roles

        return split_roles(self.interactions, self.settings.data.event_roles).positives


def build_world(home: Path, online: str = "sqlite", redis_url: str | None = None,
                **overrides: Any) -> World:
    """Lake -> Feast sources -> apply -> materialise; two registered models, the first champion."""
    from recops import schema
    from recops.config import load_settings
    from recops.core.lake import Lake
    from recops.features import feast_store
    from recops.features.featurize import build_sources
    from recops.release import registry

    ov = {"home": home, "model.max_len": 20, "stores.online": online,
          "stores.feast_project": "t" + uuid.uuid4().hex[:10], **overrides}
    if redis_url:
        ov["stores.redis_url"] = redis_url
    settings = load_settings(overrides=ov)
    inter, items = small_tables()
    lake = Lake(settings.paths.lake)
    lake.append(schema.ITEMS, items, source="test")
    lake.append(schema.USERS, pd.DataFrame({"user_id": np.arange(1, N_USERS + 1)}), source="test")
    lake.append(schema.INTERACTIONS, inter, source="test")
    build_sources(settings, lake, text_vectors=False)
    feast_store.apply(settings)
    feast_store.materialize(settings)
    ids = sorted(int(i) for i in items.item_id)
    tags = [registry.register(settings, make_checkpoint(ids, seed), meta(f"run{seed}"))
            for seed in (1, 2)]
    registry.promote(settings, tags[0])
    return World(settings, inter, items, tags)


class Server:
    """`bentoml serve` on a free port, a supervised child (its own session) stopped with its
    workers."""

    def __init__(self, settings: Any, log_path: Path) -> None:
        from recops.environment import child_env

        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_path
        self.child: Child = start(
            "bentoml serve", [sys.executable, "-m", "bentoml", "serve",
                              "serving.service:Recommender", "--host", "127.0.0.1", "--port",
                              str(self.port)],
            child_env(settings), log_path, cwd=REPO, append=False, grace=20.0)

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.child.proc

    def wait_ready(self, timeout: float = 300) -> None:
        self.child.wait_http(self.url + "/readyz", timeout=timeout)

    def stop(self) -> None:
        self.child.stop()

    def logs(self) -> str:
        return self.log.read_text()


def start_server(settings: Any, log_path: Path) -> Server:
    server = Server(settings, log_path)
    try:
        server.wait_ready()
    except Exception:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """One world per session: the Redis tests reuse its lake, sources and models."""
    return build_world(tmp_path_factory.mktemp("serving") / "home")


@pytest.fixture(scope="module")
def server(world: World, tmp_path_factory: pytest.TempPathFactory):
    """A server of the module's own, for modules that change what it serves (feedback on the
    world's users, a promotion, settings of their own)."""
    srv = start_server(world.settings, tmp_path_factory.mktemp("logs") / "bentoml.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def shared_server(world: World, tmp_path_factory: pytest.TempPathFactory):
    """One server for the whole session, for the modules that only read what it serves (each
    overrides ``server`` with it): a `bentoml serve` start is ~11 s or more on two cores.

    Its feature sources carry item text vectors (what `recops features build` does by
    default) for /search. A module that sends feedback, promotes a model or serves other
    settings must use ``server``.
    """
    from recops.core.lake import Lake
    from recops.features.featurize import build_sources

    build_sources(world.settings, Lake(world.settings.paths.lake), text_vectors=True)
    srv = start_server(world.settings, tmp_path_factory.mktemp("shared") / "bentoml.log")
    yield srv
    srv.stop()
