"""The watcher's decision: fire the retraining asset once enough feedback waits, and not again
while a retraining run that will take it is queued or running."""

from __future__ import annotations

from pathlib import Path

from recops import schema
from recops.config import load_settings
from recops.core.feedback import FeedbackLog
from recops.orchestration.continual import check_feedback


def test_the_watcher_fires_once_enough_waits_and_not_while_a_retrain_will_take_it(
        tmp_path: Path) -> None:
    settings = load_settings(overrides={"home": tmp_path / "home"})
    log = FeedbackLog(settings.paths.feedback)
    for i in range(5):
        log.append({schema.USER_ID: 1, schema.ITEM_ID: 10 + i, schema.RATING: 4.0,
                    schema.EVENT_TYPE: "rating",
                    schema.EVENT_TIMESTAMP: f"2026-01-01T00:00:0{i}+00:00"})
    few = check_feedback(settings, "w1", min_events=6)
    assert few["pending"] == 5 and "no retrain yet" in few["skip"]
    fire = check_feedback(settings, "w2", min_events=5)
    assert fire == {"pending": 5, "min_events": 5}  # no skip: the task emits the asset event
    busy = check_feedback(settings, "w3", retrains_active=1, min_events=5)
    assert busy["pending"] == 5 and "1 retraining run(s) queued or running" in busy["skip"]
    # The threshold unset: platform.min_new_events (100 by default) decides.
    assert "< 100" in check_feedback(settings, "w4")["skip"]
