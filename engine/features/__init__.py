"""SQL feature sets computed as of a timestamp: every query reads only events with ``ts < as_of``.

    user.py       user_features          recency, frequency, monetary, activity windows
    item.py       item_features          popularity 7/30/90 days, buyers, trend, price
                  item_neighbors         basket co-occurrence (top-k similar items)
    user_item.py  user_item_features     repeat buying, category affinity, co-occurrence score
    timing.py     hour_of_week_counts    engagement per user × local hour of week (user's time zone)
    click.py      click_features         the click model's joined feature frame
"""

from engine.features.base import ENGAGEMENT_TYPES, PURCHASE_TYPES, Db, check_as_of, connection
from engine.features.click import CLICK_FEATURES, click_features
from engine.features.item import ITEM_FEATURES, item_features, item_neighbors
from engine.features.timing import HOURS_PER_WEEK, engagements, hour_of_week_counts
from engine.features.user import USER_FEATURES, user_features
from engine.features.user_item import USER_ITEM_FEATURES, user_item_features

__all__ = [
    "CLICK_FEATURES",
    "ENGAGEMENT_TYPES",
    "HOURS_PER_WEEK",
    "ITEM_FEATURES",
    "PURCHASE_TYPES",
    "USER_FEATURES",
    "USER_ITEM_FEATURES",
    "Db",
    "check_as_of",
    "click_features",
    "connection",
    "engagements",
    "hour_of_week_counts",
    "item_features",
    "item_neighbors",
    "user_features",
    "user_item_features",
]
