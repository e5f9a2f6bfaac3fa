"""Choosing the send-time model's hour-of-day estimator (kernel, recency half-life, prior strength) on earlier windows.

The estimator is :func:`~engine.features.send_time.hour_posterior`; this module scores every
combination of a small grid on validation origins (features frozen at each origin, judged on the
engagements between it and the window's end) and keeps the best mean top-3 hit rate. The same pure
function then computes the served ``hod_posterior`` feature, so what was tuned is what runs.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from engine.features.base import Db
from engine.features.send_time import hour_posterior, hour_prior, hour_shares
from engine.features.timing import engagements

__all__ = ["HourModel", "hour_grid_hits", "tune_hour_model"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class HourModel:
    """The chosen hour-of-day estimator and how it scored on the validation origins.

    Attributes:
        kernel: weight each engagement lends to the neighbouring hours.
        half_life_days: recency half-life of the counts, in days.
        prior_strength: pseudo-engagements spread as the population's hours.
        validation_top3: its mean top-3 hour hit rate over the origins.
        grid: every combination tried, ``kernel``, ``half_life_days``, ``prior_strength``, ``top3``.
    """

    kernel: float
    half_life_days: float
    prior_strength: float
    validation_top3: float
    grid: pd.DataFrame

    def card(self) -> dict[str, float]:
        """The fields a model card records (the grid stays out: it is a table, not a setting)."""
        return {"kernel": self.kernel, "half_life_days": self.half_life_days,
                "prior_strength": self.prior_strength, "validation_top3": self.validation_top3}


def hour_grid_hits(
    history: pd.DataFrame, prior: np.ndarray, origin: datetime, end: datetime,
    kernels: Sequence[float], half_lives: Sequence[float], strengths: Sequence[float], k: int = 3,
) -> pd.DataFrame:
    """Top-``k`` hour hit rate of every grid combination, features frozen at ``origin``, judged on ``[origin, end)``.

    Args:
        history: ``user_id``, ``ts`` (UTC), ``local_hour``; one row per engagement (from
            :func:`~engine.features.timing.engagements`).
        prior: the population's 24 hour-of-day shares as of ``origin``.
        origin, end: the feature cut-off and the end of the judged window.
        kernels, half_lives, strengths: the grid.
        k: how many hours count as a hit.

    Returns:
        ``kernel``, ``half_life_days``, ``prior_strength``, ``top3`` (hit rate), ``n`` (judged engagements).
    """
    ts = pd.to_datetime(history["ts"], utc=True)
    before = (ts < pd.Timestamp(origin)).to_numpy()
    past, later = history[before], history[~before & (ts < pd.Timestamp(end)).to_numpy()]
    users = np.sort(past["user_id"].unique())
    later = later[later["user_id"].isin(users)]
    u, r = np.searchsorted(users, past["user_id"].to_numpy()), np.searchsorted(users, later["user_id"].to_numpy())
    age = (pd.Timestamp(origin) - ts[before]).dt.total_seconds().to_numpy() / 86400.0
    hour, truth = past["local_hour"].to_numpy(), later["local_hour"].to_numpy()
    rows = []
    for half_life in half_lives:
        weighted = np.zeros((len(users), 24))
        np.add.at(weighted, (u, hour), 0.5 ** (age / half_life))
        mine = weighted[r]
        for kernel, strength in itertools.product(kernels, strengths):
            post = hour_posterior(mine, prior, kernel, strength)
            top = np.argsort(-post, axis=1, kind="stable")[:, :k]  # ties: the earlier hour, as top_hours does
            hit = float((top == truth[:, None]).any(axis=1).mean()) if len(truth) else float("nan")
            rows.append((kernel, half_life, strength, hit, len(truth)))
    return pd.DataFrame(rows, columns=["kernel", "half_life_days", "prior_strength", "top3", "n"])


def tune_hour_model(
    db: Db, origins: Sequence[datetime], end: datetime,
    kernels: Sequence[float], half_lives: Sequence[float], strengths: Sequence[float],
) -> HourModel:
    """The grid combination with the best mean top-3 hit rate over ``origins`` (each judged up to ``end``).

    Only engagements before ``end`` are read. Ties go to the first combination in grid order.
    """
    history = engagements(db, _EPOCH, end)
    parts = []
    for origin in origins:
        prior = hour_prior(hour_shares(db, origin))
        parts.append(hour_grid_hits(history, prior, origin, end, kernels, half_lives, strengths))
    keys = ["kernel", "half_life_days", "prior_strength"]
    grid = pd.concat(parts).groupby(keys, sort=False, as_index=False)["top3"].mean()
    best = grid.iloc[int(np.nanargmax(grid["top3"].to_numpy()))]
    return HourModel(float(best["kernel"]), float(best["half_life_days"]), float(best["prior_strength"]),
                     float(best["top3"]), grid)
