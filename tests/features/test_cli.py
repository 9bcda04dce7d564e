"""`recops features ...` end to end on SQLite: the real `feast apply`, watermarks across applies."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from recops.cli import app
from recops.errors import FeatureError
from recops.features import featurize as f
from tests.features.conftest import fill_lake, fresh_settings, make_events

pytestmark = [pytest.mark.integration, pytest.mark.slow]

END = "2026-01-01T00:00:00"


def test_build_apply_materialize_show_and_the_watermark_survives_apply(tmp_path):
    home = tmp_path / "home"
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, ["--home", str(home), "features", *args])

    nothing = run("apply")
    assert isinstance(nothing.exception, FeatureError)
    assert "recops features build" in str(nothing.exception)

    events = make_events()
    fill_lake(fresh_settings(home), events)
    built = run("build", "--no-text")
    assert built.exit_code == 0, built.output
    assert f.USER_EVENTS_FILE in built.output

    applied = run("apply")
    assert applied.exit_code == 0, built.output
    assert "recommender_v1" in applied.output

    first = run("materialize", "--end", END)
    assert first.exit_code == 0, first.output
    assert first.output.count("full") == 4  # four views, none materialised before

    assert run("apply").exit_code == 0  # a later apply (same definitions) ...
    second = run("materialize", "--end", END)  # ... keeps every view's watermark
    assert second.exit_code == 0, second.output
    assert second.output.count("up to date") == 4

    user = int(events.user_id.iloc[0])
    shown = run("show", str(user))
    assert shown.exit_code == 0, shown.output
    last = events[events.user_id == user].event_timestamp.max()
    expected = f.history_asof(events, events[events.user_id == user].head(1)
                              .assign(event_timestamp=last), 50, strict=False)
    assert str(user) in shown.output and "recent_items" in shown.output
    as_json = json.loads(run("show", str(user), "--json").output)
    assert as_json["recent_items"] == expected.recent_items.iloc[0]
    assert as_json["interaction_count"] == (events.user_id == user).sum()

    unknown = run("show", "987654")
    assert unknown.exit_code == 1 and "no features" in unknown.output
    assert run("show", "not-a-user").exit_code == 2  # usage error, names the argument
    bad_end = run("materialize", "--end", "someday")
    assert bad_end.exit_code == 2 and "--end" in bad_end.output
