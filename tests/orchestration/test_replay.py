"""`recops replay` against a stand-in service over real HTTP: which events it plays (those after
the lake's last one, in time order), the lists and model tags it records, the online HR@10 /
NDCG@10 it computes from them, failed requests counted, and bad input refused with exit 2."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from recops import schema
from recops.core.supervisor import free_port
from recops.orchestration import replay
from tests.conftest import run_cli

SYNTH = {"data.dataset": "synthetic", "data.synthetic.n_users": 30,
         "data.synthetic.n_items": 40, "data.synthetic.n_interactions": 900,
         "data.synthetic.days": 30}
# The stand-in serves model "B" from its 93rd /recommend on: the 90 events played before
# the replay holds back its last 30, then 2 of its once-a-second polls for a new model.
SWAP_AT = 93


class Fake:
    """A stand-in for the service: /recommend lists items 1..k (so the chosen item's rank is
    its id - 1), served by model "A" before its SWAP_AT-th call, then by "B";
    /feedback stores each event once, answers 503 to the ``fail``-th call."""

    def __init__(self, fail: int | None = None) -> None:
        self.fail = fail
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.stored: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.feedback_calls = 0
        self.recommend_calls = 0

    def model(self) -> str:
        return "A" if self.recommend_calls < SWAP_AT else "B"

    def handle(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.calls.append((path, body))
            if path == "/recommend":
                self.recommend_calls += 1
                items = [{"item_id": i} for i in range(1, body["k"] + 1)]
                return 200, {"user_id": body["user_id"], "items": items, "fallback": None,
                             "model": self.model()}
            self.feedback_calls += 1
            if self.feedback_calls == self.fail:
                return 503, {"error": "the feedback log is unavailable"}
            dup = body["event_id"] in self.stored
            self.stored.setdefault(body["event_id"], body)
            return 200, {"accepted": True, "offset": 0, "online": True, "duplicate": dup}


@pytest.fixture
def fake() -> Iterator[tuple[Fake, str]]:
    state = Fake()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._send(200 if self.path == "/readyz" else 404, {})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self._send(*state.handle(self.path, body))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _home(home: Path) -> tuple[Any, pd.DataFrame]:
    """A lake holding the synthetic data's first 20 days (what a champion was trained on)."""
    from recops.config import load_settings
    from recops.core.lake import Lake
    from recops.data.synthetic import generate_from_settings

    settings = load_settings(overrides={"home": home, **SYNTH})
    full = generate_from_settings(settings)
    ev = full.interactions
    cut = ev[schema.EVENT_TIMESTAMP].min() + timedelta(days=20)
    lake = Lake(settings.paths.lake)
    lake.append(schema.ITEMS, full.items, source="test")
    lake.append(schema.INTERACTIONS, ev[ev[schema.EVENT_TIMESTAMP] <= cut], source="test")
    later = ev[ev[schema.EVENT_TIMESTAMP] > cut]
    return settings, later


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], home: Path,
         *args: Any) -> tuple[int, str, str]:
    for key, value in SYNTH.items():
        monkeypatch.setenv("RECOPS_" + key.upper().replace(".", "__"), str(value))
    return run_cli(monkeypatch, capsys, "--home", str(home), "replay", *map(str, args))


def test_replay_plays_later_events_and_scores_the_served_lists(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        fake: tuple[Fake, str]) -> None:
    state, url = fake
    home = tmp_path / "home"
    settings, later = _home(home)
    out_file = tmp_path / "result.json"
    code, out, err = _cli(monkeypatch, capsys, home, "--url", url, "--rate", 200, "--limit",
                          120, "--concurrency", 4, "--after-swap", 30, "--output", out_file)
    assert code == 0, out + err
    got = json.loads(out_file.read_text())

    # The 120 first events after the lake's last one, in time order, each once.
    expected = later.sort_values([schema.EVENT_TIMESTAMP, schema.USER_ID, schema.ITEM_ID],
                                 kind="stable").head(120)
    fb = [b for p, b in state.calls if p == "/feedback"]
    # The 91st-93rd /recommend are the polls while the last 30 events are held back.
    recs = [i for i, (p, _) in enumerate(state.calls) if p == "/recommend"]
    assert len(recs) == 123
    calls = [c for i, c in enumerate(state.calls) if i not in recs[90:93]]
    assert len(fb) == 120 and got["events_played"] == 120
    assert sorted((b["user_id"], b["item_id"]) for b in fb) == sorted(
        zip(expected[schema.USER_ID], expected[schema.ITEM_ID], strict=True))
    assert min(pd.to_datetime([b["timestamp"] for b in fb])) > pd.to_datetime(got["cut"])
    # One user's events in time order, each /recommend before that event's /feedback.
    for user in {b["user_id"] for b in fb}:
        mine = [(p, b) for p, b in calls if b["user_id"] == user]
        assert [p for p, _ in mine] == ["/recommend", "/feedback"] * (len(mine) // 2)
        stamps = [b["timestamp"] for p, b in mine if p == "/feedback"]
        assert stamps == sorted(stamps)

    # Every event acknowledged once, nothing failed; the last 30 were kept back until model B
    # served (polled once a second), and scored under B.
    assert got["failed"]["total"] == 0 and got["acknowledged"] == 120
    assert sorted(got["acknowledged_events"]) == sorted(state.stored)
    assert (got["first_model"], got["new_model"]) == ("A", "B")
    assert got["new_model_first_served_at"] is not None
    assert {m["model"]: m["events"] for m in got["per_model"]} == {"A": 90, "B": 30}
    assert got["waited_for_swap_s"] >= 1.0

    # HR@10 / NDCG@10 of the lists served (items 1..10: the chosen item's rank is its id - 1).
    events = pd.DataFrame(got["events"])
    for tag, role in (("A", "before"), ("B", "after")):
        ids = events.loc[events["model"] == tag, "item_id"]
        hr = float((ids <= 10).mean())
        ndcg = float(ids.map(lambda i: 1 / math.log2(i + 1) if i <= 10 else 0.0).mean())
        assert got[role]["hr@10"]["mean"] == pytest.approx(hr)
        assert got[role]["ndcg@10"]["mean"] == pytest.approx(ndcg)
    assert "HR@10" in out and "after − before" in out and "new model B" in out

    # Played again: the same event ids, so the service stores nothing twice.
    code, out, err = _cli(monkeypatch, capsys, home, "--url", url, "--rate", 200, "--limit",
                          20, "--output", out_file)
    assert code == 0, out + err
    assert json.loads(out_file.read_text())["duplicates"] == 20 and len(state.stored) == 120


def test_a_failed_request_is_counted_and_exits_1(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        fake: tuple[Fake, str]) -> None:
    state, url = fake
    state.fail = 5
    home = tmp_path / "home"
    _home(home)
    out_file = tmp_path / "result.json"
    code, out, err = _cli(monkeypatch, capsys, home, "--url", url, "--rate", 200, "--limit",
                          20, "--output", out_file)
    got = json.loads(out_file.read_text())
    assert code == 1, out + err
    assert got["failed"] == {"recommend": 0, "feedback": 1, "total": 1,
                             "first_errors": [got["failed"]["first_errors"][0]]}
    assert got["failed"]["first_errors"][0].startswith("503")
    assert got["acknowledged"] == 19 and len(got["acknowledged_events"]) == 19
    assert "failed requests: 1" in out and "503" in err


def test_bad_input_is_one_line_and_exit_2(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        fake: tuple[Fake, str]) -> None:
    _, url = fake
    home = tmp_path / "home"
    dead = f"http://127.0.0.1:{free_port()}"
    for args, message in (
            (("--url", url, "--rate", 0), "--rate must be a positive number"),
            (("--url", url, "--rate", "nan"), "--rate must be a positive number"),
            (("--url", url, "--limit", 0), "--limit must be at least 1"),
            (("--url", url, "--concurrency", 0), "--concurrency must be at least 1"),
            (("--url", dead,), f"the service at {dead} is unreachable"),
            ((), "the platform is not up"),
            (("--url", url), "holds no interactions")):  # no lake: no champion, nothing new
        code, out, err = _cli(monkeypatch, capsys, home, *args)
        assert code == 2, (args, out, err)
        assert message in err and len(err.strip().splitlines()) == 1, (args, err)
    # Every event already in the lake: nothing later to replay.
    from recops.config import load_settings
    from recops.core.lake import Lake
    from recops.data.synthetic import generate_from_settings

    settings = load_settings(overrides={"home": home, **SYNTH})
    full = generate_from_settings(settings)
    Lake(settings.paths.lake).append(schema.ITEMS, full.items, source="test")
    Lake(settings.paths.lake).append(schema.INTERACTIONS, full.interactions, source="test")
    code, out, err = _cli(monkeypatch, capsys, home, "--url", url)
    assert code == 2 and "has no event after the lake's last one" in err, out + err
    # A hold-back that leaves nothing to play first.
    _, later = _home(tmp_path / "home2")
    code, out, err = _cli(monkeypatch, capsys, tmp_path / "home2", "--url", url, "--limit", 10,
                          "--after-swap", 10)
    assert code == 2 and "keeps back every one" in err, out + err


def test_intervals_are_normal_over_events_and_unpaired_for_the_difference() -> None:
    a = replay.mean_ci([1.0, 0.0, 1.0, 0.0])
    assert a["mean"] == 0.5 and a["ci95"] == pytest.approx(1.959964 * math.sqrt(1 / 3 / 4))
    d = replay.diff_ci([1.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0])
    va, vb = 1 / 3, 0.25
    assert d["mean"] == pytest.approx(2 / 3 - 1 / 4)
    assert d["ci95"] == pytest.approx(1.959964 * math.sqrt(va / 3 + vb / 4))
    assert replay.mean_ci([])["mean"] is None and replay.mean_ci([1.0])["ci95"] is None
