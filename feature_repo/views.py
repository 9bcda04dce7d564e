"""Feature views: user recent sequence, user statistics, item statistics, item content."""

from datetime import timedelta

from _env import SEQ_LEN
from entities import item, user
from feast import FeatureView, Field
from feast.types import Array, Float32, Int64, String
from sources import item_content_source, item_stats_source, user_events_push

from recops import schema
from recops.features import featurize as f

# ttl 0 = a value stays valid until the next one: a sequence does not expire with time, and
# MovieLens is years old (a finite ttl would make historical retrieval return nothing).
NO_TTL = timedelta(0)

user_recent = FeatureView(
    name=f.USER_RECENT_VIEW,
    entities=[user],
    ttl=NO_TTL,
    schema=[
        Field(name=f.RECENT_ITEMS, dtype=Array(Int64)),
        Field(name=f.RECENT_TIMESTAMPS, dtype=Array(Int64)),
        Field(name=f.BLOCKED_ITEMS, dtype=Array(Int64)),
    ],
    source=user_events_push,
    online=True,
    tags={"max_len": str(SEQ_LEN),
          "semantics": "last max_len positive item ids after all events at t"},
    description=("The user's last max_len positive item ids (most recent last), their epoch "
                 "seconds, and the items of their recent negatives (never served)."),
)

user_stats = FeatureView(
    name=f.USER_STATS_VIEW,
    entities=[user],
    ttl=NO_TTL,
    schema=[
        Field(name=f.INTERACTION_COUNT, dtype=Int64),
        Field(name=f.RATING_COUNT, dtype=Int64),
        Field(name=f.MEAN_RATING, dtype=Float32),
        Field(name=f.DAYS_ACTIVE, dtype=Int64),
        Field(name=f.LAST_EVENT_TS, dtype=Int64),
    ],
    source=user_events_push,
    online=True,
    description="Cumulative user statistics as of each event time.",
)

item_stats = FeatureView(
    name=f.ITEM_STATS_VIEW,
    entities=[item],
    ttl=NO_TTL,
    schema=[Field(name=c, dtype=Int64) for c in f.POPULARITY_COLUMNS]
    + [
        Field(name=f.ITEM_RATING_COUNT, dtype=Int64),
        Field(name=f.ITEM_MEAN_RATING, dtype=Float32),
    ],
    source=item_stats_source,
    online=True,
    description="Item popularity over windows ending at the item's latest event, mean rating.",
)

item_content = FeatureView(
    name=f.ITEM_CONTENT_VIEW,
    entities=[item],
    ttl=NO_TTL,
    schema=[
        Field(name=schema.GENRES, dtype=String),
        Field(name=f.TEXT_EMBEDDING, dtype=Array(Float32)),
    ],
    source=item_content_source,
    online=True,
    description="Item genres and all-MiniLM-L6-v2 text embedding (null when not computed).",
)
