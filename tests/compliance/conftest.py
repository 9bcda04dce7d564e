"""Compliance fixtures: small records built through the real APIs, and a headless Chromium check."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.conftest import IN_CI

REPO = Path(__file__).resolve().parents[2]


def small_tables(n_users: int = 30, n_items: int = 40, n_events: int = 900,
                 seed: int = 0) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    users = rng.integers(1, n_users + 1, n_events)
    users[:n_users] = np.arange(1, n_users + 1)
    items = pd.DataFrame({"item_id": np.arange(1, n_items + 1)})
    items["title"] = [f"Movie {i}" for i in items.item_id]
    items["genres"] = "Drama"
    items["text"] = items.title + " Drama"
    ts = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(
        rng.integers(0, 20 * 86400, n_events), unit="s")
    inter = pd.DataFrame({"user_id": users, "item_id": rng.integers(1, n_items + 1, n_events),
                          "rating": 4.0, "event_type": "rating", "event_timestamp": ts})
    return {"interactions": inter, "items": items,
            "users": pd.DataFrame({"user_id": np.arange(1, n_users + 1)})}


def tiny_checkpoint(item_ids: list[int], seed: int = 0) -> dict[str, Any]:
    import torch

    from recops.training.models import create_model, make_checkpoint

    torch.manual_seed(seed)
    args = {"max_len": 10, "d_model": 8, "n_layers": 1, "n_heads": 1, "dropout": 0.0}
    return make_checkpoint(create_model("sasrec", len(item_ids), args), item_ids,
                           model_settings=args, train_settings={"seed": seed})


def figure_data(html: str) -> dict[str, dict[str, list]]:
    m = re.search(r'<script type="application/json" id="recops-figures">(.*?)</script>', html,
                  re.S)
    assert m, "the report embeds no figure data"
    return json.loads(m.group(1))


def chromium_render(html_path: Path) -> tuple[list[str], str]:
    """Load the page in headless Chromium; returns (console messages, the DOM after scripts)."""
    from recops.compliance.chromium import CHROMIUM_FLAGS, chromium

    exe = chromium()
    if exe is None:
        msg = "headless Chromium is not installed (apt-get install -y chromium)"
        if IN_CI:
            pytest.fail(msg + " -- CI=true: the render check must run")
        pytest.skip(msg)
    with tempfile.TemporaryDirectory(prefix="recops-chromium-") as profile:
        proc = subprocess.run(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr",
             "--v=0", "--dump-dom", html_path.resolve().as_uri()],
            capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
    return console, proc.stdout
