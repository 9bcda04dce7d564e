"""Versioned feature services: what the model reads (recommender_v1) and item-side features."""

from feast import FeatureService
from views import item_content, item_stats, user_recent, user_stats

from recops.features import featurize as f

recommender_v1 = FeatureService(
    name=f.RECOMMENDER_SERVICE,
    features=[user_recent, user_stats],
    description="Model input: the user's recent sequence and statistics (train and serve).",
)

items_v1 = FeatureService(
    name=f.ITEMS_SERVICE,
    features=[item_stats, item_content],
    description="Item popularity and content, for candidates, cold start and /similar.",
)
