"""Treatment against holdout, intention to treat: did being chosen for a push change what users bought?

Every decision with ``arm`` in (treatment, holdout) and a ``send_at`` counts, whether or not a push
went out (a skipped treatment user is still treated): the holdout records the same item and send
time the user would have had, so both arms are measured over the same window.

Outcomes per decision:

* ``converted``: the user really bought the decision's item (a non-simulated ``purchase``) in the
  14 days after ``send_at``, or — treatment only — a ``conversion`` event carries the decision's
  ``send_id`` (simulated incremental conversions; counted in ``simulated_conversions``).
* ``any_purchase``: the user really bought anything in those 14 days.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from engine.analytics._sql import ATTRIBUTED, purchase_window
from engine.analytics.filters import NO_FILTERS, Filters, fetch_df
from engine.analytics.stats import compare_proportions, wilson_interval

__all__ = ["ARMS", "OUTCOMES", "arm_outcomes", "compare_arms"]

ARMS: tuple[str, ...] = ("treatment", "holdout")
OUTCOMES: tuple[str, ...] = ("converted", "any_purchase")


def _counts(con: duckdb.DuckDBPyConnection, filters: Filters) -> pd.DataFrame:
    where, params = filters.where("d")
    sql = f"""
        WITH base AS (
            SELECT d.decision_id, d.user_id, d.arm, d.item_id, d.send_at, s.send_id
            FROM decisions d LEFT JOIN sends s ON s.decision_id = d.decision_id
            WHERE d.arm IN ('treatment', 'holdout') AND d.send_at IS NOT NULL AND {where}
        ),
        bought AS (
            SELECT b.decision_id, coalesce(bool_or(e.item_id = b.item_id), false) AS item_bought
            FROM base b JOIN events e ON e.user_id = b.user_id
            WHERE {purchase_window("e", "b.send_at")}
            GROUP BY b.decision_id
        ),
        attributed AS ({ATTRIBUTED}),
        per_decision AS (
            SELECT b.arm,
                   coalesce(bo.item_bought, false) AS item_bought,
                   bo.decision_id IS NOT NULL AS any_bought,
                   b.arm = 'treatment' AND a.send_id IS NOT NULL AS attributed,
                   coalesce(a.only_simulated, false) AS attributed_simulated
            FROM base b
            LEFT JOIN bought bo ON bo.decision_id = b.decision_id
            LEFT JOIN attributed a ON a.send_id = b.send_id
        )
        SELECT arm, count(*) AS users,
               count(*) FILTER (WHERE item_bought OR attributed) AS converted,
               count(*) FILTER (WHERE NOT item_bought AND attributed AND attributed_simulated)
                   AS converted_simulated,
               count(*) FILTER (WHERE any_bought) AS any_purchase
        FROM per_decision GROUP BY arm"""
    return fetch_df(con, sql, params).set_index("arm")


def arm_outcomes(
    con: duckdb.DuckDBPyConnection, filters: Filters = NO_FILTERS, confidence: float = 0.95
) -> pd.DataFrame:
    """Per outcome and arm: users, conversions and the rate with its Wilson interval.

    Returns:
        DataFrame[outcome ('converted' | 'any_purchase'), arm ('treatment' | 'holdout'), users
        (decisions: one per user and campaign), conversions, simulated_conversions (conversions
        resting only on simulated ``conversion`` events), rate, ci_low, ci_high] — four rows, in
        :data:`OUTCOMES` × :data:`ARMS` order; rate and interval are NaN for an empty arm.
    """
    counts = _counts(con, filters)
    rows = []
    for outcome in OUTCOMES:
        for arm in ARMS:
            users = int(counts.at[arm, "users"]) if arm in counts.index else 0
            hits = int(counts.at[arm, outcome]) if arm in counts.index else 0
            simulated = int(counts.at[arm, "converted_simulated"]) if arm in counts.index else 0
            low, high = wilson_interval(hits, users, confidence)
            rows.append({
                "outcome": outcome, "arm": arm, "users": users, "conversions": hits,
                "simulated_conversions": simulated if outcome == "converted" else 0,
                "rate": hits / users if users else np.nan, "ci_low": low, "ci_high": high,
            })
    return pd.DataFrame(rows)


def compare_arms(arms: pd.DataFrame, confidence: float = 0.95, method: str = "newcombe") -> pd.DataFrame:
    """Treatment minus holdout for each outcome of an :func:`arm_outcomes` frame (pure).

    Returns:
        DataFrame[outcome, treatment_rate, holdout_rate, difference (absolute, proportion units),
        diff_low, diff_high (interval of the difference, Newcombe hybrid score by default),
        z, p_value (two-sided pooled two-proportion z-test), relative_uplift (difference /
        holdout_rate)].
    """
    rows = []
    for outcome, frame in arms.groupby("outcome", sort=False):
        by_arm = frame.set_index("arm")
        t, h = by_arm.loc["treatment"], by_arm.loc["holdout"]
        c = compare_proportions(int(t["conversions"]), int(t["users"]), int(h["conversions"]), int(h["users"]),
                                confidence=confidence, method=method)
        rows.append({
            "outcome": outcome, "treatment_rate": c.rate1, "holdout_rate": c.rate2,
            "difference": c.difference, "diff_low": c.diff_low, "diff_high": c.diff_high,
            "z": c.z, "p_value": c.p_value, "relative_uplift": c.relative_uplift,
        })
    return pd.DataFrame(rows, columns=["outcome", "treatment_rate", "holdout_rate", "difference", "diff_low",
                                       "diff_high", "z", "p_value", "relative_uplift"])
