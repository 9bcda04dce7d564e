"""The README's "your own data" walkthrough, as a user runs it: `recops run` on the shipped retail
example (string SKUs and customer ids, implicit events of four types, a catalogue with text and
attributes) through Airflow to a served champion that answers in the team's ids, and a
withdrawn item that leaves the lists from the next request after its batch lands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest

from recops.config import load_settings
from tests.serving.conftest import start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
RETAIL = REPO / "examples" / "retail"


def _recops(home: Path, *args: str, timeout: float = 3000) -> str:
    done = subprocess.run([sys.executable, "-m", "recops.cli", "--home", str(home), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**__import__("os").environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.timeout(3600)
def test_recops_run_on_the_retail_example_serves_sku_ids(tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = _recops(home, "run", "--events", "examples/retail/events.csv", "--items",
                  "examples/retail/items.csv", "--item-attributes", "category,brand",
                  "--epochs", "2")
    assert "promoted to champion" in out, out
    settings = load_settings(overrides={"home": home})
    events = pd.read_csv(RETAIL / "events.csv")
    user = str(events["user_id"].iloc[0])
    server = start_server(settings, tmp_path / "bentoml.log")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            got = c.post("/recommend", json={"user_id": user, "k": 10}).json()
            ids = [i["item_id"] for i in got["items"]]
            assert got["user_id"] == user and got["fallback"] is None, got
            assert len(ids) == 10 and all(i.startswith("SKU-") for i in ids), got
            fb = c.post("/feedback", json={"user_id": "c-newcomer", "item_id": ids[0],
                                           "event_type": "view"})
            assert fb.status_code == 200 and fb.json()["accepted"], fb.text
            again = c.post("/recommend", json={"user_id": "c-newcomer", "k": 5}).json()
            assert again["history_size"] == 1 and ids[0] not in {
                i["item_id"] for i in again["items"]}
            sim = c.post("/similar", json={"item_id": ids[0], "k": 5}).json()
            assert all(i["item_id"].startswith("SKU-") for i in sim["items"]), sim
            found = c.post("/search", json={"query": "waterproof tent", "user_id": user,
                                            "k": 5}).json()
            assert all(i["item_id"].startswith("SKU-") for i in found["items"]), found
            missing = c.post("/feedback", json={"user_id": user, "item_id": "SKU-nope",
                                                "event_type": "view"})
            assert missing.status_code == 404 and "SKU-nope" in missing.json()["error"]

            # Withdraw the user's top item: a catalogue batch (with a few new events) lands.
            items = pd.read_csv(RETAIL / "items.csv")
            items["available"] = items["item_id"] != ids[0]
            items.to_csv(tmp_path / "items2.csv", index=False)
            events.head(3).assign(timestamp=["2026-11-20T10:00:00Z", "2026-11-20T10:01:00Z",
                                             "2026-11-20T10:02:00Z"]).to_csv(
                tmp_path / "events2.csv", index=False)
            staged = _recops(home, "ingest", "--events", str(tmp_path / "events2.csv"),
                             "--items", str(tmp_path / "items2.csv"),
                             "--item-attributes", "category,brand")
            staged_id = next(line.split(":", 1)[1].strip() for line in staged.splitlines()
                             if line.startswith("staged id:"))
            _recops(home, "validate", staged_id)
            after = c.post("/recommend", json={"user_id": user, "k": 10}).json()
            assert ids[0] not in {i["item_id"] for i in after["items"]}, after
            assert {i["item_id"] for i in after["items"]} >= set(ids[1:6]) - {ids[0]}
    finally:
        server.stop()
