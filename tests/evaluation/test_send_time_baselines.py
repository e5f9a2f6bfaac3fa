"""The send-time baselines rank hours from the customer's past only: global counts, own counts, the last hour."""

from __future__ import annotations

import pandas as pd

from engine.evaluation.retail import _count_ranks


def _top(ranked: pd.DataFrame, target: int) -> list[int]:
    return ranked[ranked["target"] == target].sort_values("rank")["hour"].tolist()


def test_global_own_and_last_hour_rankings_worked_by_hand() -> None:
    history = pd.DataFrame({
        "user_id": ["u", "u", "u", "v", "w"],
        "ts": pd.to_datetime(["2011-03-01 10:00", "2011-03-02 14:00", "2011-03-03 10:00", "2011-03-01 20:00",
                              "2011-03-04 20:00"], utc=True),
        "hour": [10, 14, 10, 20, 20],
    })
    targets = pd.DataFrame({"user_id": ["u", "v"], "hour": [14, 9]})
    ranks = _count_ranks(history, targets, "hour", 24)
    # Everyone: 10h and 20h twice, 14h once; ties go to the earlier hour.
    assert _top(ranks["global"], 0) == _top(ranks["global"], 1) == [10, 20, 14]
    # u: 10h twice, then 14h once, then the global order fills in (20h).
    assert _top(ranks["own"], 0) == [10, 14, 20]
    # u's latest purchase was at 10h (14h came before it), then the global order: 20h, 14h.
    assert _top(ranks["last"], 0) == [10, 20, 14]
    assert _top(ranks["own"], 1) == _top(ranks["last"], 1) == [20, 10, 14]


def test_last_hour_is_the_latest_by_time_not_by_row_order() -> None:
    history = pd.DataFrame({
        "user_id": ["u", "u"],
        "ts": pd.to_datetime(["2011-03-05 16:00", "2011-03-01 11:00"], utc=True),  # rows out of time order
        "hour": [16, 11],
    })
    ranks = _count_ranks(history, pd.DataFrame({"user_id": ["u"], "hour": [16]}), "hour", 24)
    assert _top(ranks["last"], 0)[0] == 16
