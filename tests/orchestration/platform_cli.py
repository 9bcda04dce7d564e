"""What the platform tests share: the `recops` command in a process of its own, and which of
a set of processes still run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[2]


def recops(config: Path, *args: Any, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """The `recops` command in a process of its own, with this config and no RECOPS_* env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOPS_")}
    env["COLUMNS"] = "250"
    return subprocess.run([sys.executable, "-m", "recops.cli", "--config", str(config),
                           *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def running(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``procs`` still running (a zombie is not)."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            continue
    return out


FINISHED = ("success", "failed")


def wait_for_runs(state: Any, dag_id: str, done: Callable[[list[dict[str, Any]]], Any], *,
                  params: dict[str, Any], timeout: float, what: str) -> Any:
    """Poll ``dag_id``'s runs (Airflow's REST API, as the platform's admin) until ``done`` of
    them is truthy, and return it; fail with ``what`` and the last runs after ``timeout`` s."""
    from recops.orchestration.platform_health import AirflowClient

    client = AirflowClient(state, timeout=30)
    deadline = time.monotonic() + timeout
    try:
        while True:
            runs = client.request("GET", f"dags/{dag_id}/dagRuns", params=params)["dag_runs"]
            got = done(runs)
            if got:
                return got
            assert time.monotonic() < deadline, f"{what} in {timeout:.0f} s: {runs}"
            time.sleep(3)
    finally:
        client.close()
