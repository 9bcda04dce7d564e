"""Data sources: Parquet files written by features.featurize.build_sources, and the push source."""

from _env import SOURCES
from feast import FileSource, PushSource

from recops import schema
from recops.features import featurize as f

# One file holds the per-(user, event time) rows of both user views, so a single push of one
# row updates the recent sequence and the statistics together.
user_events_batch = FileSource(
    name="user_events_batch",
    path=str(SOURCES / f.USER_EVENTS_FILE),
    timestamp_field=schema.EVENT_TIMESTAMP,
    description="User sequence and statistics as of each distinct event time (featurize).",
)

user_events_push = PushSource(
    name=f.USER_PUSH_SOURCE,
    batch_source=user_events_batch,
    description="Real-time user events from serving's feedback path (feast_online.push_event).",
)

item_stats_source = FileSource(
    name="item_stats_source",
    path=str(SOURCES / f.ITEM_STATS_FILE),
    timestamp_field=schema.EVENT_TIMESTAMP,
    description="Item popularity and rating as of each distinct event time of the item.",
)

item_content_source = FileSource(
    name="item_content_source",
    path=str(SOURCES / f.ITEM_CONTENT_FILE),
    timestamp_field=schema.EVENT_TIMESTAMP,
    description="Item genres and text embedding, stamped at the item's first appearance.",
)
