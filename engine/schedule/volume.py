"""Volume control: send a push only when its expected value exceeds the fatigue cost of one more.

Expected value = click probability of the chosen item (the decision's ``score``) × ``value_per_click``.
Fatigue cost = ``send_cost`` + ``fatigue_cost`` × (recent + ``ignored_weight`` × ignored), where
*recent* counts the user's pushes due in the ``lookback_days`` before ``as_of`` (failed, cancelled and
invalid-token sends excluded) and *ignored* those of them that were delivered but neither opened nor
clicked. A push worth less than ``send_cost`` alone is skipped as ``low_value``; one worth more than
that but less than the whole cost is skipped as ``fatigue``.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from engine.schedule.campaign import VolumeSettings
from engine.store import Store

__all__ = ["fatigue_history", "volume_decisions"]


def fatigue_history(store: Store, user_ids: pd.Series, as_of: datetime, lookback_days: int) -> pd.DataFrame:
    """Each user's recent and ignored pushes before ``as_of``.

    Returns:
        DataFrame[user_id, recent, ignored] (counts of pushes), one row per user in ``user_ids``
        (zeros for users without any).
    """
    frame = pd.DataFrame({"user_id": pd.Series(user_ids, dtype=object).to_numpy()})
    store.con.register("pw_volume_users", frame)
    try:
        counts = store.df(
            """WITH recent AS (
                   SELECT s.user_id, s.send_id, s.state FROM sends s SEMI JOIN pw_volume_users p USING (user_id)
                   WHERE s.state NOT IN ('failed', 'cancelled', 'invalid_token')
                     AND s.due_at < $as_of AND s.due_at >= $as_of - to_days($days)
               ), engaged AS (
                   SELECT DISTINCT properties->>'send_id' AS send_id FROM events
                   WHERE event_type IN ('push_open', 'push_click') AND ts < $as_of
               )
               SELECT r.user_id, count(*) AS recent,
                      count(*) FILTER (WHERE r.state = 'delivered' AND e.send_id IS NULL) AS ignored
               FROM recent r LEFT JOIN engaged e ON e.send_id = r.send_id
               GROUP BY r.user_id""",
            {"as_of": as_of, "days": lookback_days},
        )
    finally:
        store.con.unregister("pw_volume_users")
    out = frame.merge(counts, on="user_id", how="left")
    out[["recent", "ignored"]] = out[["recent", "ignored"]].fillna(0).astype("int64")
    return out


def volume_decisions(scores: pd.Series, history: pd.DataFrame, settings: VolumeSettings) -> pd.DataFrame:
    """Pure: the value, the cost and the skip reason of one more push per user.

    Args:
        scores: click probability (0–1) of each user's chosen item, aligned with ``history``.
        history: DataFrame[recent, ignored] from :func:`fatigue_history`.
        settings: the campaign's ``[volume]`` trade-off.

    Returns:
        DataFrame[expected_value, fatigue_cost, skip_reason] with the index of ``history``;
        ``skip_reason`` is ``"low_value"``, ``"fatigue"`` or None (send). A missing score is worth 0.
    """
    value = np.nan_to_num(np.asarray(scores, dtype="float64"), nan=0.0) * settings.value_per_click
    fatigue = settings.fatigue_cost * (history["recent"].to_numpy(dtype="float64")
                                       + settings.ignored_weight * history["ignored"].to_numpy(dtype="float64"))
    cost = settings.send_cost + fatigue
    reason = np.where(value < settings.send_cost, "low_value", np.where(value < cost, "fatigue", None))
    return pd.DataFrame({"expected_value": value, "fatigue_cost": cost,
                         "skip_reason": pd.Series(reason, index=history.index, dtype=object)}, index=history.index)
