"""A lake that already holds items, users and a first accepted batch of interactions."""

from __future__ import annotations

import pytest

from recops import schema
from recops.core.lake import Lake
from tests.validation.frames import SOURCE, make_interactions, make_items, make_users


@pytest.fixture
def lake(settings) -> Lake:
    """A lake with items, users and one accepted interactions batch (300 rows) from SOURCE."""
    lk = Lake(settings.paths.lake)
    lk.append(schema.ITEMS, make_items(), SOURCE)
    lk.append(schema.USERS, make_users(), SOURCE)
    lk.append(schema.INTERACTIONS, make_interactions(300, seed=0), SOURCE)
    return lk
