"""Views for the operator pages: vendor answers per day, quota use, per-template results, score calibration,
and the campaign holdout readout (through :func:`engine.analytics.experiment.experiment_readout`)."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from engine.analytics._sql import CLICKS, OPENS
from engine.analytics.experiment import READOUT_COLUMNS, experiment_readout
from engine.analytics.filters import NO_FILTERS, Filters, fetch_df
from engine.analytics.stats import wilson_interval

__all__ = ["holdout_readout", "quota_use", "score_calibration", "template_summary", "vendor_daily"]


def vendor_daily(con: duckdb.DuckDBPyConnection, filters: Filters = NO_FILTERS) -> pd.DataFrame:
    """Vendor answers per UTC day of the attempt, with the invalid-token rate and retries.

    Returns:
        DataFrame[day (date), vendor, outcome, status_code (HTTP status, missing on transport
        failure), attempts, retries (attempt > 1), invalid_token_rate (the day's and vendor's
        ``invalid_token`` answers / its attempts)], by day, vendor, most attempts.
    """
    where, params = filters.where("d")
    frame = fetch_df(con, f"""
        SELECT CAST(a.attempted_at AS DATE) AS day, s.vendor, a.outcome, a.status_code,
               count(*) AS attempts, count(*) FILTER (WHERE a.attempt > 1) AS retries
        FROM send_attempts a JOIN sends s ON s.send_id = a.send_id
        JOIN decisions d ON d.decision_id = s.decision_id
        WHERE {where}
        GROUP BY ALL ORDER BY day, s.vendor, attempts DESC, a.outcome""", params)
    totals = frame.groupby(["day", "vendor"])["attempts"].transform("sum")
    invalid = frame["attempts"].where(frame["outcome"] == "invalid_token", 0)
    frame["invalid_token_rate"] = invalid.groupby([frame["day"], frame["vendor"]]).transform("sum") / totals
    return frame


def quota_use(con: duckdb.DuckDBPyConnection, vendor: str | None = None) -> pd.DataFrame:
    """Daily vendor quota use (``vendor_quota``), newest day first.

    Returns:
        DataFrame[quota_day, vendor, app_id, message_class, accepted, daily_limit (missing when the
        vendor never told us), share (accepted / daily_limit), exhausted_at, resets_at].
    """
    clause = "WHERE vendor = $vendor" if vendor else ""
    return fetch_df(con, f"""
        SELECT quota_day, vendor, app_id, message_class, accepted, daily_limit,
               accepted / nullif(daily_limit, 0) AS share, exhausted_at, resets_at
        FROM vendor_quota {clause}
        ORDER BY quota_day DESC, vendor, app_id, message_class""", {"vendor": vendor} if vendor else {})


def template_summary(con: duckdb.DuckDBPyConnection, filters: Filters = NO_FILTERS) -> pd.DataFrame:
    """Treatment decisions per message template: how many were sent, delivered, opened and clicked.

    Returns:
        DataFrame[campaign_id, template_id, title, decisions, skipped, sent (attempts > 0), delivered,
        opened, clicked, open_rate (opened / delivered), open_low, open_high (Wilson 95%),
        click_rate (clicked / delivered)], by campaign then most decisions.
    """
    where, params = filters.where("d")
    frame = fetch_df(con, f"""
        WITH opens AS ({OPENS}), clicks AS ({CLICKS})
        SELECT d.campaign_id, coalesce(d.template_id, '(none)') AS template_id, any_value(d.title) AS title,
               count(*) AS decisions, count(*) FILTER (WHERE d.action = 'skip') AS skipped,
               count(s.send_id) FILTER (WHERE s.attempts > 0) AS sent,
               count(s.send_id) FILTER (WHERE s.state = 'delivered') AS delivered,
               count(o.send_id) FILTER (WHERE s.state = 'delivered') AS opened,
               count(c.send_id) FILTER (WHERE s.state = 'delivered') AS clicked
        FROM decisions d LEFT JOIN sends s ON s.decision_id = d.decision_id
        LEFT JOIN opens o ON o.send_id = s.send_id LEFT JOIN clicks c ON c.send_id = s.send_id
        WHERE d.arm = 'treatment' AND {where}
        GROUP BY 1, 2 ORDER BY 1, decisions DESC, 2""", params)
    bounds = [wilson_interval(int(o), int(n)) for o, n in zip(frame["opened"], frame["delivered"], strict=True)]
    delivered = frame["delivered"].replace(0, np.nan)
    frame["open_rate"] = frame["opened"] / delivered
    frame["open_low"] = [b[0] for b in bounds]
    frame["open_high"] = [b[1] for b in bounds]
    frame["click_rate"] = frame["clicked"] / delivered
    return frame


def score_calibration(con: duckdb.DuckDBPyConnection, filters: Filters = NO_FILTERS, bins: int = 10) -> pd.DataFrame:
    """Predicted click probability (``decisions.score``) against observed clicks of delivered sends.

    Sends are cut into ``bins`` equal-count groups by score.

    Returns:
        DataFrame[bin (0 = lowest scores), sends, mean_score, clicks, click_rate, ci_low, ci_high
        (Wilson 95%), simulated_clicks] — empty when no delivered send has a score.
    """
    where, params = filters.where("d")
    frame = fetch_df(con, f"""
        WITH clicks AS ({CLICKS}),
        scored AS (
            SELECT d.score, c.send_id IS NOT NULL AS clicked, coalesce(c.only_simulated, false) AS simulated,
                   ntile($bins) OVER (ORDER BY d.score, d.decision_id) - 1 AS bin
            FROM decisions d JOIN sends s ON s.decision_id = d.decision_id
            LEFT JOIN clicks c ON c.send_id = s.send_id
            WHERE d.score IS NOT NULL AND s.state = 'delivered' AND {where}
        )
        SELECT bin, count(*) AS sends, avg(score) AS mean_score, count(*) FILTER (WHERE clicked) AS clicks,
               count(*) FILTER (WHERE clicked AND simulated) AS simulated_clicks
        FROM scored GROUP BY bin ORDER BY bin""", {**params, "bins": bins})
    bounds = [wilson_interval(int(c), int(n)) for c, n in zip(frame["clicks"], frame["sends"], strict=True)]
    frame.insert(4, "click_rate", frame["clicks"] / frame["sends"])
    frame.insert(5, "ci_low", [b[0] for b in bounds])
    frame.insert(6, "ci_high", [b[1] for b in bounds])
    return frame


def holdout_readout(arms: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Treatment against holdout for each outcome of an :func:`~engine.analytics.arm_outcomes` frame,
    computed by the same code as ``pushwise experiment analyze`` (pure).

    Returns:
        The :func:`~engine.analytics.experiment.experiment_readout` frame (arm ``treatment`` against
        control ``holdout``); empty when an arm has no users.
    """
    counts = arms.rename(columns={"conversions": "successes"})[["arm", "outcome", "users", "successes"]]
    if (counts["users"] == 0).any():
        return pd.DataFrame(columns=list(READOUT_COLUMNS))
    return experiment_readout(counts, "holdout", confidence)
