"""Per-user purchase features (recency, frequency, monetary value, activity windows) as of a time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pandas as pd

from engine.features.base import (
    PURCHASE_TYPES,
    Db,
    check_as_of,
    fetch_df,
    purchases_cte,
    user_filter_sql,
    user_view,
)

__all__ = ["USER_FEATURES", "user_features"]

#: Feature columns of :func:`user_features`, in order (``user_id`` comes first and is not a feature).
USER_FEATURES: tuple[str, ...] = (
    "u_recency_days",
    "u_tenure_days",
    "u_baskets",
    "u_lines",
    "u_distinct_items",
    "u_monetary",
    "u_baskets_7d",
    "u_baskets_30d",
    "u_baskets_90d",
    "u_repeat_rate",
)


def user_features(
    db: Db,
    as_of: datetime,
    user_ids: Sequence[str] | None = None,
    event_types: Sequence[str] = PURCHASE_TYPES,
) -> pd.DataFrame:
    """Recency, frequency and monetary features of every user who bought something before ``as_of``.

    Only purchase events with ``ts < as_of`` are read. Users with no purchase before ``as_of`` get no
    row (callers left-join and treat the gap as "no history").

    Args:
        db: the store or a DuckDB connection.
        as_of: timezone-aware cut-off; nothing at or after it is read.
        user_ids: restrict to these users; all users when None.
        event_types: event types that count as purchases.

    Returns:
        One row per user: ``user_id``; ``u_recency_days`` (days from the last purchase to as_of);
        ``u_tenure_days`` (days from the first purchase); ``u_baskets`` (distinct baskets/invoices);
        ``u_lines`` (purchase events); ``u_distinct_items``; ``u_monetary`` (Σ quantity × unit price,
        in the events' currency, 0 when prices are absent); ``u_baskets_7d`` / ``_30d`` / ``_90d``
        (baskets in the last 7/30/90 days); ``u_repeat_rate`` (share of the user's distinct items bought
        in two or more baskets).
    """
    as_of = check_as_of(as_of)
    with user_view(db, user_ids) as users:
        sql = f"""
            WITH p AS ({purchases_cte()} {user_filter_sql(users, "e.user_id")}),
            b AS (
                SELECT user_id, basket, min(ts) AS ts,
                       sum(quantity * coalesce(unit_price, 0.0)) AS amount
                FROM p GROUP BY user_id, basket
            ),
            bu AS (
                SELECT user_id,
                       epoch($as_of - max(ts)) / 86400.0 AS u_recency_days,
                       epoch($as_of - min(ts)) / 86400.0 AS u_tenure_days,
                       count(*) AS u_baskets,
                       sum(amount) AS u_monetary,
                       count(*) FILTER (WHERE ts >= $as_of - INTERVAL 7 DAY) AS u_baskets_7d,
                       count(*) FILTER (WHERE ts >= $as_of - INTERVAL 30 DAY) AS u_baskets_30d,
                       count(*) FILTER (WHERE ts >= $as_of - INTERVAL 90 DAY) AS u_baskets_90d
                FROM b GROUP BY user_id
            ),
            lu AS (
                SELECT user_id, count(*) AS u_lines, count(DISTINCT item_id) AS u_distinct_items
                FROM p GROUP BY user_id
            ),
            ib AS (SELECT user_id, item_id, count(DISTINCT basket) AS nb FROM p GROUP BY ALL),
            ru AS (SELECT user_id, avg(CAST(nb > 1 AS DOUBLE)) AS u_repeat_rate FROM ib GROUP BY user_id)
            SELECT bu.user_id, u_recency_days, u_tenure_days, u_baskets, u_lines, u_distinct_items,
                   u_monetary, u_baskets_7d, u_baskets_30d, u_baskets_90d, u_repeat_rate
            FROM bu JOIN lu USING (user_id) JOIN ru USING (user_id)
            ORDER BY bu.user_id
        """
        df = fetch_df(db, sql, {"as_of": as_of, "types": list(event_types)})
    return _typed(df)


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    ints = ["u_baskets", "u_lines", "u_distinct_items", "u_baskets_7d", "u_baskets_30d", "u_baskets_90d"]
    floats = ["u_recency_days", "u_tenure_days", "u_monetary", "u_repeat_rate"]
    return df.astype({**{c: "int64" for c in ints}, **{c: "float64" for c in floats}})
