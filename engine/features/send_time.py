"""Send-time features: one row per (user, local hour of week) describing the user's past rhythm as of a time.

Everything is built from :func:`~engine.features.timing.hour_of_week_counts` (events before ``as_of``)
as dense user × 168 matrices, so the rows come out vectorised. Shares are smoothed toward the
population's rhythm: with few events a user looks like everyone else, with many like themselves.
:func:`hour_posterior` is that smoothing for the hour of day, as one pure function shared by the
features and by the send-time model's tuning, so the tuned estimator is the one served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from engine.features.base import ENGAGEMENT_TYPES, Db, check_as_of, fetch_df, user_view
from engine.features.timing import HOURS_PER_WEEK, hour_of_week_counts, local_time_sql

__all__ = [
    "HOUR_FACTOR",
    "SEND_TIME_COLUMNS",
    "SEND_TIME_FEATURES",
    "HourShares",
    "UserHours",
    "hour_posterior",
    "hour_prior",
    "hour_shares",
    "user_countries",
    "user_hours",
]

#: Every feature column of :attr:`UserHours.frame`, in order.
SEND_TIME_COLUMNS: tuple[str, ...] = (
    "hour_of_day",
    "weekday",
    "n_user",
    "how_count",
    "how_share",
    "hod_count",
    "hod_share",
    "hod_recent_share",
    "hod_near_share",
    "dow_share",
    "hod_last_days",
    "is_last_hod",
    "g_how",
    "g_hod",
    "g_dow",
    "hod_posterior",
    "dow_count",
    "dow_last_days",
)

#: The columns the send-time booster reads: one value per (user, weekday), so the booster ranks days and
#: never reorders the hours within a day (those follow :data:`HOUR_FACTOR`).
SEND_TIME_FEATURES: tuple[str, ...] = ("weekday", "n_user", "dow_count", "dow_share", "dow_last_days", "g_dow")

#: The column that ranks the hours of a day: :func:`hour_posterior` of the user's own history.
HOUR_FACTOR = "hod_posterior"


def hour_prior(shares: HourShares) -> np.ndarray:
    """The population's 24 hour-of-day shares, weighted by engagements (uniform when there are none).

    Weighted by engagements, not averaged over users: the engagements to predict come mostly from
    frequent users, and on Online Retail this prior beat the per-user average on validation.
    """
    count = shares.global_count.reshape(7, 24).sum(axis=0)
    return count / count.sum() if count.sum() > 0 else np.full(24, 1.0 / 24)


def hour_posterior(weighted: np.ndarray, prior: np.ndarray, kernel: float, strength: float) -> np.ndarray:
    """Each user's predicted share of engagements per local hour of day (a Dirichlet posterior mean).

    The user's recency-weighted counts, each also lending ``kernel`` of itself to the hour before and
    after (habits are "around noon", not "in the 12th hour"), plus ``strength`` pseudo-engagements
    spread as the population does.

    Args:
        weighted: users × 24 recency-weighted engagement counts per local hour of day.
        prior: 24 population shares summing to 1.
        kernel: weight lent to each neighbouring hour (wrapping at midnight); 0 for none.
        strength: prior pseudo-engagements (> 0).

    Returns:
        users × 24 shares, each row summing to 1; a user without history gets ``prior``.
    """
    smoothed = weighted + kernel * (np.roll(weighted, 1, axis=1) + np.roll(weighted, -1, axis=1))
    return (smoothed + strength * prior[None, :]) / (smoothed.sum(axis=1, keepdims=True) + strength)


@dataclass(frozen=True)
class HourShares:
    """The population's rhythm as of a time: each user's share of engagements per hour, averaged.

    Attributes:
        global_share: 168 floats summing to 1 (uniform when there is no data).
        by_country: ``country``, ``hour_of_week``, ``share`` (per country, summing to 1), smoothed toward
            the global share with the weight of ``country_prior`` users.
        global_count: 168 raw engagement counts (the "global best hours" baseline ranks by these).
    """

    global_share: np.ndarray
    by_country: pd.DataFrame
    global_count: np.ndarray


def hour_shares(
    db: Db, as_of: datetime, event_types: Sequence[str] = ENGAGEMENT_TYPES, country_prior: float = 50.0
) -> HourShares:
    """Population and per-country hour-of-week shares of engagement before ``as_of`` (local times)."""
    as_of = check_as_of(as_of)
    sql = f"""
        WITH g AS ({local_time_sql("e.ts < $as_of")}),
        c AS (SELECT user_id, any_value(country) AS country, (isodow(local) - 1) * 24 + hour(local) AS how,
                     count(*) AS n FROM g GROUP BY user_id, how),
        s AS (SELECT *, n / sum(n) OVER (PARTITION BY user_id) AS share FROM c)
        SELECT coalesce(country, '') AS country, how, sum(share) AS share, sum(n) AS n,
               count(DISTINCT user_id) AS users
        FROM s GROUP BY ALL
    """
    raw = fetch_df(db, sql, {"as_of": as_of, "types": list(event_types)})
    total = np.zeros(HOURS_PER_WEEK)
    count = np.zeros(HOURS_PER_WEEK)
    np.add.at(total, raw["how"].to_numpy(dtype=int), raw["share"].to_numpy())
    np.add.at(count, raw["how"].to_numpy(dtype=int), raw["n"].to_numpy())
    g = total / total.sum() if total.sum() > 0 else np.full(HOURS_PER_WEEK, 1.0 / HOURS_PER_WEEK)
    per_country = raw.pivot_table(index="country", columns="how", values="share", aggfunc="sum", fill_value=0.0)
    per_country = per_country.reindex(columns=range(HOURS_PER_WEEK), fill_value=0.0)
    n_users = per_country.sum(axis=1).to_numpy()[:, None]  # each user's shares sum to 1
    smoothed = (per_country.to_numpy() + country_prior * g) / (n_users + country_prior)
    by_country = pd.DataFrame(
        {
            "country": np.repeat(per_country.index.to_numpy(), HOURS_PER_WEEK),
            "hour_of_week": np.tile(np.arange(HOURS_PER_WEEK), len(per_country)),
            "share": smoothed.ravel(),
        }
    )
    return HourShares(g, by_country, count)


@dataclass(frozen=True)
class UserHours:
    """Send-time rows for users with at least one engagement before the as-of time.

    Attributes:
        frame: ``user_id``, ``hour_of_week`` and :data:`SEND_TIME_FEATURES`; 168 rows per user,
            ordered by user then hour.
        users: ``user_id``, ``country``, ``n_events`` (engagements before as_of), one row per user
            of ``frame``.
    """

    frame: pd.DataFrame
    users: pd.DataFrame


def user_hours(
    db: Db,
    as_of: datetime,
    shares: HourShares,
    user_ids: Sequence[str] | None = None,
    prior_strength: float = 2.0,
    half_life_days: float = 60.0,
    event_types: Sequence[str] = ENGAGEMENT_TYPES,
    *,
    hour_kernel: float = 0.0,
    hour_prior_strength: float | None = None,
) -> UserHours:
    """Per (user, hour of week) features from engagements before ``as_of``.

    Feature meanings (``hod`` = local hour of day, ``dow`` = weekday, 0 = Monday): ``n_user``
    engagements in total; ``how_count`` / ``hod_count`` at this hour of week / of day;
    ``how_share``, ``hod_share``, ``dow_share`` the user's shares smoothed toward the population's
    with ``prior_strength`` pseudo-engagements; ``hod_recent_share`` the same with recency weights
    (half-life ``half_life_days``); ``hod_near_share`` the smoothed share of hod−1…hod+1;
    ``hod_last_days`` days since the user last engaged at this hod (NaN if never);
    ``is_last_hod`` 1 when the user's latest engagement was at this hod; ``g_how``, ``g_hod``,
    ``g_dow`` the population shares; ``hod_posterior`` :func:`hour_posterior` of the recency-weighted
    counts with :func:`hour_prior`, ``hour_kernel`` and ``hour_prior_strength`` (``prior_strength``
    when None); ``dow_count`` engagements on this weekday; ``dow_last_days`` days since the user
    last engaged on this weekday (NaN if never).
    """
    counts = hour_of_week_counts(db, as_of, user_ids, event_types, half_life_days)
    ids = np.sort(counts["user_id"].unique())
    u = np.searchsorted(ids, counts["user_id"].to_numpy())
    h = counts["hour_of_week"].to_numpy()
    n_u, w_u, last = (np.zeros((len(ids), HOURS_PER_WEEK)) for _ in range(3))
    last[:] = np.inf
    n_u[u, h] = counts["n"].to_numpy()
    w_u[u, h] = counts["weight"].to_numpy()
    last[u, h] = counts["last_days"].to_numpy()
    posterior = (hour_prior(shares), hour_kernel, prior_strength if hour_prior_strength is None else hour_prior_strength)
    feats = _matrix_features(n_u, w_u, last, shares.global_share, prior_strength, posterior)
    frame = pd.DataFrame(
        {"user_id": np.repeat(ids, HOURS_PER_WEEK), "hour_of_week": np.tile(np.arange(HOURS_PER_WEEK), len(ids))}
    )
    for name in SEND_TIME_COLUMNS:
        frame[name] = feats[name].ravel()
    country = counts.groupby("user_id", sort=True)["country"].first().reindex(ids)
    users = pd.DataFrame({"user_id": ids, "country": country.to_numpy(), "n_events": n_u.sum(axis=1).astype("int64")})
    return UserHours(frame, users)


def _matrix_features(
    n: np.ndarray, w: np.ndarray, last: np.ndarray, g: np.ndarray, alpha: float,
    posterior: tuple[np.ndarray, float, float],
) -> dict[str, np.ndarray]:
    """Every feature as a users × 168 matrix (pure numpy)."""
    users = n.shape[0]
    gh, gd = g.reshape(7, 24).sum(axis=0), g.reshape(7, 24).sum(axis=1)
    nh, nd, wh = n.reshape(users, 7, 24).sum(axis=1), n.reshape(users, 7, 24).sum(axis=2), w.reshape(users, 7, 24).sum(axis=1)
    total, wtotal = n.sum(axis=1, keepdims=True), w.sum(axis=1, keepdims=True)
    hod_share = (nh + alpha * gh) / (total + alpha)
    near = (np.roll(nh, 1, axis=1) + nh + np.roll(nh, -1, axis=1) + alpha * (np.roll(gh, 1) + gh + np.roll(gh, -1))) / (
        total + alpha
    )
    hod_last = last.reshape(users, 7, 24).min(axis=1)
    latest_hod = np.argmin(hod_last, axis=1)

    def week(by_hod: np.ndarray) -> np.ndarray:  # users × 24 → users × 168 (same hod every weekday)
        return np.tile(by_hod, (1, 7))

    def by_day(by_dow: np.ndarray) -> np.ndarray:  # users × 7 → users × 168
        return np.repeat(by_dow, 24, axis=1)

    hod_last_days = np.where(np.isfinite(hod_last), hod_last, np.nan)
    dow_last = last.reshape(users, 7, 24).min(axis=2)
    return {
        "hour_of_day": np.tile(np.arange(24), (users, 7)).astype("float64"),
        "weekday": np.repeat(np.arange(7), 24)[None, :].repeat(users, axis=0).astype("float64"),
        "n_user": np.broadcast_to(total, n.shape),
        "how_count": n,
        "how_share": (n + alpha * g) / (total + alpha),
        "hod_count": week(nh),
        "hod_share": week(hod_share),
        "hod_recent_share": week((wh + alpha * gh) / (wtotal + alpha)),
        "hod_near_share": week(near),
        "dow_share": by_day((nd + alpha * gd) / (total + alpha)),
        "hod_last_days": week(hod_last_days),
        "is_last_hod": week((np.arange(24)[None, :] == latest_hod[:, None]).astype("float64")),
        "g_how": np.broadcast_to(g, n.shape),
        "g_hod": np.broadcast_to(np.tile(gh, 7), n.shape),
        "g_dow": np.broadcast_to(np.repeat(gd, 24), n.shape),
        "hod_posterior": week(hour_posterior(wh, *posterior)),
        "dow_count": by_day(nd),
        "dow_last_days": by_day(np.where(np.isfinite(dow_last), dow_last, np.nan)),
    }


def user_countries(db: Db, user_ids: Sequence[str]) -> pd.DataFrame:
    """``user_id``, ``country`` (NULL when unknown) for the given users, from the ``users`` table."""
    with user_view(db, user_ids) as view:
        return fetch_df(
            db,
            f"SELECT v.user_id, u.country FROM {view} v LEFT JOIN users u ON u.user_id = v.user_id ORDER BY v.user_id",
        )
