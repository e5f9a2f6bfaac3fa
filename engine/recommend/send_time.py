"""Send-time choice: score every local hour of the week per user and pick the best ones.

Users with enough history (the model card's ``min_events``) are scored by the ``send_time`` model:
its booster's probability for the weekday times the user's hour-of-day posterior (the card's
``hour_factor``, with the kernel, half-life and prior strength its training chose; models trained
before that part existed score with the booster alone). The others get their country's (or
everyone's) best hours and are flagged ``fallback`` so the planner and the dashboard can tell a
guess from a prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from engine.features.base import check_as_of
from engine.features.send_time import HourShares, hour_shares, user_countries, user_hours
from engine.features.timing import HOURS_PER_WEEK

if TYPE_CHECKING:
    from engine.features.base import Db
    from engine.training.artifacts import TrainedModel

__all__ = ["best_send_hours", "hour_scores", "top_hours"]

DEFAULT_MIN_EVENTS = 3


def hour_scores(
    model: TrainedModel,
    db: Db,
    user_ids: Sequence[str],
    as_of: datetime,
    *,
    shares: HourShares | None = None,
    batch_users: int = 20_000,
) -> pd.DataFrame:
    """A score for every (user, local hour of week), from events before ``as_of``.

    Args:
        model: the loaded ``send_time`` model.
        db: the store or a DuckDB connection.
        user_ids: users to score; each gets 168 rows.
        as_of: timezone-aware cut-off.
        shares: :func:`~engine.features.send_time.hour_shares` for the same ``as_of`` (computed when None).
        batch_users: users per batch (bounds memory: 168 rows per user).

    Returns:
        ``user_id``, ``hour_of_week`` (0 = Monday 00h local), ``score`` (the model's probability of
        engaging on that weekday times the share of that hour, or the country/global share for
        fallback users; comparable within a user only), ``fallback`` (bool).
    """
    as_of = check_as_of(as_of)
    shares = shares or hour_shares(db, as_of)
    settings = model.card.get("config", {})
    min_events = int(settings.get("min_events", DEFAULT_MIN_EVENTS))
    factor, hour = model.card.get("hour_factor"), model.card.get("hour_model", {})
    smoothing = {
        "prior_strength": float(settings.get("prior_strength", 2.0)),
        "half_life_days": float(hour.get("half_life_days", settings.get("half_life_days", 60.0))),
        "hour_kernel": float(hour.get("kernel", 0.0)),
        "hour_prior_strength": hour.get("prior_strength"),
    }
    ids = pd.unique(pd.Series(list(user_ids), dtype="object"))
    parts = []
    for start in range(0, len(ids), batch_users):
        chunk = list(ids[start : start + batch_users])
        hours = user_hours(db, as_of, shares, chunk, **smoothing)
        scored_users = hours.users.loc[hours.users["n_events"] >= min_events, "user_id"].to_numpy()
        rows = hours.frame[hours.frame["user_id"].isin(scored_users)]
        score = model.predict(rows)
        if factor is not None:
            score = score * rows[factor].to_numpy()
        parts.append(
            pd.DataFrame(
                {
                    "user_id": rows["user_id"].to_numpy(),
                    "hour_of_week": rows["hour_of_week"].to_numpy(),
                    "score": score,
                    "fallback": False,
                }
            )
        )
        scored = set(scored_users)
        parts.append(_fallback_scores(db, [u for u in chunk if u not in scored], shares))
    parts = [p for p in parts if len(p)]
    out = pd.concat(parts, ignore_index=True) if parts else _empty()
    return out.sort_values(["user_id", "hour_of_week"], ignore_index=True)


def best_send_hours(
    model: TrainedModel, db: Db, user_ids: Sequence[str], as_of: datetime, k: int = 3
) -> pd.DataFrame:
    """Each user's ``k`` best local hours of the week to send a push.

    Returns:
        ``user_id``, ``rank`` (0 = best), ``hour_of_week`` (0 = Monday 00h in the user's time zone),
        ``local_hour`` (0–23), ``weekday`` (0 = Monday), ``score``, ``fallback`` (True when the user
        had fewer than the model's ``min_events`` past engagements and got population hours).
    """
    scores = hour_scores(model, db, user_ids, as_of)
    return top_hours(scores, k)


def top_hours(scores: pd.DataFrame, k: int) -> pd.DataFrame:
    """The ``k`` highest-scoring hours per user of an :func:`hour_scores` frame (ties: earlier hour)."""
    ordered = scores.sort_values(["user_id", "score", "hour_of_week"], ascending=[True, False, True])
    ordered = ordered.assign(rank=ordered.groupby("user_id").cumcount())
    top = ordered[ordered["rank"] < k].reset_index(drop=True)
    return pd.DataFrame(
        {
            "user_id": top["user_id"],
            "rank": top["rank"].astype("int64"),
            "hour_of_week": top["hour_of_week"].astype("int64"),
            "local_hour": (top["hour_of_week"] % 24).astype("int64"),
            "weekday": (top["hour_of_week"] // 24).astype("int64"),
            "score": top["score"].astype("float64"),
            "fallback": top["fallback"].astype(bool),
        }
    )


def _fallback_scores(db: Db, user_ids: list[str], shares: HourShares) -> pd.DataFrame:
    """Country shares (smoothed toward global) for users with little history; global when the country is unknown."""
    if not user_ids:
        return _empty()
    countries = user_countries(db, user_ids).fillna({"country": ""})
    table = shares.by_country.pivot(index="country", columns="hour_of_week", values="share")
    table = table.reindex(columns=range(HOURS_PER_WEEK))
    known = countries["country"].isin(table.index).to_numpy()
    matrix = np.tile(shares.global_share, (len(countries), 1))
    if known.any():
        matrix[known] = table.loc[countries.loc[known, "country"]].to_numpy()
    return pd.DataFrame(
        {
            "user_id": np.repeat(countries["user_id"].to_numpy(), HOURS_PER_WEEK),
            "hour_of_week": np.tile(np.arange(HOURS_PER_WEEK), len(countries)),
            "score": matrix.ravel(),
            "fallback": True,
        }
    )


def _empty() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": pd.Series(dtype="object"),
            "hour_of_week": pd.Series(dtype="int64"),
            "score": pd.Series(dtype="float64"),
            "fallback": pd.Series(dtype="bool"),
        }
    )
