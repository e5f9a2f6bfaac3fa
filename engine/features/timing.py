"""When users engage: engagement counts per user and hour of the week in the user's own time zone."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pandas as pd

from engine.features.base import ENGAGEMENT_TYPES, Db, check_as_of, fetch_df, user_filter_sql, user_view

__all__ = ["HOURS_PER_WEEK", "engagements", "hour_of_week_counts", "local_time_sql"]

HOURS_PER_WEEK = 168

#: Time zone for users without a ``users`` row (their events are still counted).
DEFAULT_TIME_ZONE = "UTC"


def local_time_sql(as_of_filter: str) -> str:
    """SQL listing distinct engagements ``(user_id, ts, country, local)`` with ``local`` in the user's zone.

    Several events of one user at the same instant (the lines of one invoice, an impression and its
    click) are one engagement. ``as_of_filter`` is the time condition on ``e.ts``.
    """
    return f"""
        SELECT DISTINCT e.user_id, e.ts, u.country,
               timezone(coalesce(u.time_zone, '{DEFAULT_TIME_ZONE}'), e.ts) AS local
        FROM events e LEFT JOIN users u ON u.user_id = e.user_id
        WHERE {as_of_filter} AND list_contains($types, e.event_type)
    """


def hour_of_week_counts(
    db: Db,
    as_of: datetime,
    user_ids: Sequence[str] | None = None,
    event_types: Sequence[str] = ENGAGEMENT_TYPES,
    half_life_days: float = 60.0,
) -> pd.DataFrame:
    """Engagements per user and local hour of the week, before ``as_of``.

    Args:
        db: the store or a DuckDB connection.
        as_of: timezone-aware cut-off; only events with ``ts < as_of`` are read.
        user_ids: restrict to these users; all users when None.
        event_types: event types that count as engagement.
        half_life_days: half-life of the recency weight in ``weight``.

    Returns:
        One row per (user, hour of week) with at least one engagement: ``user_id``, ``country``,
        ``hour_of_week`` (0 = Monday 00:00–00:59 local … 167 = Sunday 23h), ``n`` (distinct
        engagements), ``weight`` (Σ 0.5^(age in days / half_life_days)), ``last_days`` (days from
        the latest engagement at that hour to as_of).
    """
    as_of = check_as_of(as_of)
    with user_view(db, user_ids) as users:
        sql = f"""
            WITH g AS ({local_time_sql("e.ts < $as_of")} {user_filter_sql(users, "e.user_id")})
            SELECT user_id, any_value(country) AS country,
                   (isodow(local) - 1) * 24 + hour(local) AS hour_of_week,
                   count(*) AS n,
                   sum(pow(0.5, epoch($as_of - ts) / 86400.0 / $half_life)) AS weight,
                   min(epoch($as_of - ts)) / 86400.0 AS last_days
            FROM g GROUP BY user_id, hour_of_week
            ORDER BY user_id, hour_of_week
        """
        params = {"as_of": as_of, "types": list(event_types), "half_life": float(half_life_days)}
        df = fetch_df(db, sql, params)
    return df.astype({"hour_of_week": "int64", "n": "int64", "weight": "float64", "last_days": "float64"})


def engagements(
    db: Db,
    start: datetime,
    end: datetime,
    user_ids: Sequence[str] | None = None,
    event_types: Sequence[str] = ENGAGEMENT_TYPES,
) -> pd.DataFrame:
    """Distinct engagements with ``start <= ts < end``, with their local time (labels and evaluation).

    Returns:
        ``user_id``, ``ts`` (UTC), ``hour_of_week``, ``local_hour`` (0–23), ``weekday`` (0 = Monday).
    """
    start, end = check_as_of(start), check_as_of(end)
    with user_view(db, user_ids) as users:
        sql = f"""
            WITH g AS ({local_time_sql("e.ts >= $start AND e.ts < $end")} {user_filter_sql(users, "e.user_id")})
            SELECT user_id, ts,
                   (isodow(local) - 1) * 24 + hour(local) AS hour_of_week,
                   hour(local) AS local_hour, isodow(local) - 1 AS weekday
            FROM g ORDER BY user_id, ts
        """
        df = fetch_df(db, sql, {"start": start, "end": end, "types": list(event_types)})
    return df.astype({"hour_of_week": "int64", "local_hour": "int64", "weekday": "int64"})
