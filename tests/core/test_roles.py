"""Event roles (data.event_roles): resolution of one event and of tables, and bad role settings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recops.config import load_settings
from recops.config_events import EventSettings
from recops.core.roles import (
    IGNORED,
    NEGATIVE,
    POSITIVE,
    ensure_roles,
    resolve,
    resolve_one,
    split_roles,
)
from recops.errors import ConfigError, DataError

DEFAULT = EventSettings()


@pytest.mark.parametrize(("event_type", "rating", "role", "weight"), [
    ("purchase", None, POSITIVE, 4.0),
    ("like", None, POSITIVE, 2.0),
    ("click", None, POSITIVE, 1.0),
    ("view", None, POSITIVE, 0.5),
    ("dislike", None, NEGATIVE, 0.0),
    ("rating", 5.0, POSITIVE, 1.0),
    ("rating", 3.5, POSITIVE, 1.0),  # above rating_positive_above (3.0)
    ("rating", 3.0, POSITIVE, 0.5),  # between the thresholds: a weak positive by default
    ("rating", 2.5, POSITIVE, 0.5),
    ("rating", 2.0, NEGATIVE, 0.0),  # at rating_negative_at_most
    ("rating", 0.5, NEGATIVE, 0.0),
])
def test_default_roles_and_weights(event_type, rating, role, weight) -> None:
    assert resolve_one(event_type, rating, DEFAULT) == (role, weight)
    got_role, got_weight = resolve([event_type], [rating], DEFAULT)
    assert (int(got_role[0]), float(got_weight[0])) == (role, weight)


def test_purchase_outweighs_like_outweighs_click_outweighs_view() -> None:
    w = [resolve_one(t, None, DEFAULT)[1] for t in ("purchase", "like", "click", "view")]
    assert w == sorted(w, reverse=True) and len(set(w)) == 4


def test_between_ratings_can_be_ignored_and_a_team_adds_its_own_types() -> None:
    s = load_settings(overrides={
        "data.event_roles.rating_between": "ignored",
        "data.event_roles.roles": {"add_to_cart": {"role": "positive", "weight": 3},
                              "skip": {"role": "negative"}, "hover": {"role": "ignored"},
                              "review": {"role": "rating", "weight": 2}}}).data.event_roles
    assert s.types() == ["add_to_cart", "skip", "hover", "review"]
    assert resolve_one("add_to_cart", None, s) == (POSITIVE, 3.0)
    assert resolve_one("skip", None, s) == (NEGATIVE, 0.0)
    assert resolve_one("hover", None, s) == (IGNORED, 0.0)
    assert resolve_one("review", 4.0, s) == (POSITIVE, 2.0)
    assert resolve_one("review", 3.0, s) == (IGNORED, 0.0)
    # The table is the source of truth: a built-in type it leaves out is not accepted.
    with pytest.raises(DataError, match="'purchase' is not in data.event_roles.roles"):
        resolve_one("purchase", None, s)


def test_implicit_only_tables_need_no_rating_column() -> None:
    ev = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [5, 6, 5],
                       "event_type": ["view", "dislike", "purchase"],
                       "event_timestamp": pd.to_datetime([1, 2, 3], unit="s", utc=True)})
    got = split_roles(ev, DEFAULT)
    assert got.positives.item_id.tolist() == [5, 5]
    assert got.positives.event_weight.tolist() == [0.5, 4.0]
    assert got.negatives.item_id.tolist() == [6]
    assert ensure_roles(ev).event_role.tolist() == [POSITIVE, NEGATIVE, POSITIVE]


def test_unknown_types_and_rated_events_without_a_rating_are_one_line_errors() -> None:
    with pytest.raises(DataError, match=r"3 row\(s\) of event type\(s\) not in "
                                        r"data.event_roles.roles \{'skip': 2, 'zap': 1\}"):
        resolve(["view", "skip", "zap", "skip"], [None] * 4, DEFAULT)
    with pytest.raises(DataError, match=r"column rating: 2 row\(s\) of event type 'rating'"):
        resolve(["rating", "rating", "rating"], [4.0, np.nan, None], DEFAULT)
    with pytest.raises(DataError, match="'rating' has role 'rating'.*needs a rating"):
        resolve_one("rating", None, DEFAULT)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"data.event_roles.roles": {"view": {"role": "positive", "weight": 0}}},
     "setting 'data.event_roles.roles.view.weight'.*greater than 0"),
    ({"data.event_roles.roles": {"view": {"role": "positive", "weight": -1}}},
     "setting 'data.event_roles.roles.view.weight'"),
    ({"data.event_roles.roles": {"view": {"role": "favourite"}}},
     "setting 'data.event_roles.roles.view.role'"),
    ({"data.event_roles.roles": {"view": {"role": "positive", "colour": "red"}}},
     "setting 'data.event_roles.roles.view.colour'"),
    ({"data.event_roles.roles": {"Add To Cart": {"role": "positive"}}},
     "setting 'data.event_roles.roles'.*'Add To Cart'"),
    ({"data.event_roles.roles": {"dislike": {"role": "negative", "weight": 2}}},
     "setting 'data.event_roles.roles.dislike'.*weight is for positive roles"),
    ({"data.event_roles.roles": {"dislike": {"role": "negative"}}},
     "setting 'data.event_roles.roles'.*no event type is positive"),
    ({"data.event_roles.roles": {}}, "setting 'data.event_roles.roles'.*no event type is positive"),
    ({"data.event_roles.rating_negative_at_most": 3.0},
     "rating_negative_at_most .3.0. must be below data.event_roles.rating_positive_above"),
    ({"data.event_roles.rating_between_weight": 0},
     "setting 'data.event_roles.rating_between_weight'"),
    ({"data.event_roles.rating_between": "maybe"}, "setting 'data.event_roles.rating_between'"),
    ({"data.event_roles.stars": 5}, "setting 'data.event_roles.stars'"),
])
def test_bad_role_settings_name_the_setting(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(overrides=overrides)


def test_roles_come_from_the_environment_too(monkeypatch) -> None:
    monkeypatch.setenv("RECOPS_DATA__EVENT_ROLES__ROLES", '{"skip": {"role": "negative"}, '
                                                     '"play": {"role": "positive"}}')
    assert load_settings().data.event_roles.types() == ["skip", "play"]
    monkeypatch.setenv("RECOPS_DATA__EVENT_ROLES__ROLES", '{"skip": {"role": "nope"}}')
    with pytest.raises(ConfigError, match="data.event_roles.roles.skip.role"):
        load_settings()
