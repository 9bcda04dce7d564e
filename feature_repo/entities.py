"""Entities: the user and the item, keyed by the ids of recops.schema."""

from feast import Entity, ValueType

from recops import schema

user = Entity(
    name=schema.USER_ENTITY,
    join_keys=[schema.USER_ID],
    value_type=ValueType.INT64,
    description="A person who rates, views or clicks items.",
)

item = Entity(
    name=schema.ITEM_ENTITY,
    join_keys=[schema.ITEM_ID],
    value_type=ValueType.INT64,
    description="A recommendable item (a movie in MovieLens).",
)
