"""The one schema: table and column names, entity keys, dtypes and allowed values.

Suites, feature views, training and serving all import these names; nothing else spells them.
"""

from __future__ import annotations

import pyarrow as pa

# Columns
USER_ID = "user_id"
ITEM_ID = "item_id"
RATING = "rating"
EVENT_TYPE = "event_type"
EVENT_TIMESTAMP = "event_timestamp"
TITLE = "title"
GENRES = "genres"
TEXT = "text"

# Tables in the lake
INTERACTIONS = "interactions"
ITEMS = "items"
USERS = "users"
TABLES = (INTERACTIONS, ITEMS, USERS)

# Built-in event types (the default role table, data.event_roles.roles, which is the source of
# truth for what is accepted). MovieLens ratings are "rating"; the others arrive as feedback.
EVENT_TYPES = ("rating", "view", "click", "like", "dislike", "purchase")
# Resolved by recops.core.roles: an event's role (1 positive, 0 ignored, -1 negative) and
# its loss weight as a positive.
EVENT_ROLE = "event_role"
EVENT_WEIGHT = "event_weight"
# Genres are a "|"-separated string, as in MovieLens.
GENRE_SEPARATOR = "|"

TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")

INTERACTIONS_SCHEMA = pa.schema(
    [
        pa.field(USER_ID, pa.int64(), nullable=False),
        pa.field(ITEM_ID, pa.int64(), nullable=False),
        pa.field(RATING, pa.float32(), nullable=True),  # null for implicit events (view, click)
        pa.field(EVENT_TYPE, pa.string(), nullable=False),
        pa.field(EVENT_TIMESTAMP, TIMESTAMP_TYPE, nullable=False),
    ]
)

ITEMS_SCHEMA = pa.schema(
    [
        pa.field(ITEM_ID, pa.int64(), nullable=False),
        pa.field(TITLE, pa.string(), nullable=False),
        pa.field(GENRES, pa.string(), nullable=False),
        # title + genres + tags: the text encoder's input
        pa.field(TEXT, pa.string(), nullable=False),
    ]
)

# Users carry only the id by default; loaders add optional attributes (gender, age, occupation).
USERS_SCHEMA = pa.schema([pa.field(USER_ID, pa.int64(), nullable=False)])
USER_OPTIONAL_COLUMNS = ("gender", "age", "occupation", "zip_code")

SCHEMAS: dict[str, pa.Schema] = {
    INTERACTIONS: INTERACTIONS_SCHEMA,
    ITEMS: ITEMS_SCHEMA,
    USERS: USERS_SCHEMA,
}

# Pandas dtypes of the required columns (what loaders must produce).
PANDAS_DTYPES: dict[str, dict[str, str]] = {
    INTERACTIONS: {
        USER_ID: "int64",
        ITEM_ID: "int64",
        RATING: "float32",
        EVENT_TYPE: "string",
        EVENT_TIMESTAMP: "datetime64[us, UTC]",
    },
    ITEMS: {ITEM_ID: "int64", TITLE: "string", GENRES: "string", TEXT: "string"},
    USERS: {USER_ID: "int64"},
}

# Feast
USER_ENTITY = "user"
ITEM_ENTITY = "item"
FEATURE_SERVICE = "recommender_v1"

# The metrics at the default cut-off (k=10) that models, the gate, the registry and reports carry.
METRIC_KEYS = ("hr@10", "ndcg@10", "mrr", "coverage@10")
