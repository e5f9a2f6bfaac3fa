"""How sends fared: skipped users by reason, outcomes and retries per vendor, and the send-time heatmap."""

from __future__ import annotations

import duckdb
import pandas as pd

from engine.analytics._sql import OPENS
from engine.analytics.filters import NO_FILTERS, Filters, fetch_df

__all__ = ["WEEKDAYS", "attempt_outcomes", "send_time_heatmap", "skip_reasons", "vendor_outcomes",
           "vendor_summary"]

WEEKDAYS: tuple[str, ...] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def skip_reasons(con: duckdb.DuckDBPyConnection, filters: Filters = NO_FILTERS) -> pd.DataFrame:
    """Treatment users who got no push, by reason.

    Returns:
        DataFrame[campaign_id, skip_reason, users, share (of the campaign's treatment decisions)],
        largest first within each campaign.
    """
    where, params = filters.where("d")
    return fetch_df(con, f"""
        WITH t AS (SELECT * FROM decisions d WHERE d.arm = 'treatment' AND {where})
        SELECT campaign_id, skip_reason, count(*) AS users,
               count(*) / any_value(n) AS share
        FROM t JOIN (SELECT campaign_id, count(*)::DOUBLE AS n FROM t GROUP BY 1) USING (campaign_id)
        WHERE action = 'skip'
        GROUP BY campaign_id, skip_reason
        ORDER BY campaign_id, users DESC, skip_reason""", params)


def _sends(filters: Filters) -> tuple[str, dict[str, object]]:
    where, params = filters.where("d")
    return f"SELECT s.* FROM sends s JOIN decisions d ON d.decision_id = s.decision_id WHERE {where}", params


def vendor_summary(con: duckdb.DuckDBPyConnection, filters: Filters = NO_FILTERS) -> pd.DataFrame:
    """One row per vendor: where its sends ended up and how often they were retried.

    Returns:
        DataFrame[vendor, sends (outbox rows), sent (attempts > 0), delivered, invalid_token, failed,
        cancelled, open (pending, retry or in flight), attempts (rows in send_attempts), retries
        (attempts after the first), delivery_rate (delivered / sent)].
    """
    sends, params = _sends(filters)
    return fetch_df(con, f"""
        WITH s AS ({sends}),
             a AS (SELECT send_id, count(*) AS attempts, count(*) FILTER (WHERE attempt > 1) AS retries
                   FROM send_attempts GROUP BY send_id)
        SELECT s.vendor, count(*) AS sends,
               count(*) FILTER (WHERE s.attempts > 0) AS sent,
               count(*) FILTER (WHERE s.state = 'delivered') AS delivered,
               count(*) FILTER (WHERE s.state = 'invalid_token') AS invalid_token,
               count(*) FILTER (WHERE s.state = 'failed') AS failed,
               count(*) FILTER (WHERE s.state = 'cancelled') AS cancelled,
               count(*) FILTER (WHERE s.state IN ('pending', 'retry', 'in_flight')) AS open,
               coalesce(sum(a.attempts), 0)::BIGINT AS attempts,
               coalesce(sum(a.retries), 0)::BIGINT AS retries,
               count(*) FILTER (WHERE s.state = 'delivered')
                   / nullif(count(*) FILTER (WHERE s.attempts > 0), 0) AS delivery_rate
        FROM s LEFT JOIN a ON a.send_id = s.send_id
        GROUP BY s.vendor ORDER BY s.vendor""", params)


def vendor_outcomes(con: duckdb.DuckDBPyConnection, filters: Filters = NO_FILTERS) -> pd.DataFrame:
    """Sends per vendor, outbox state and last vendor outcome.

    Returns:
        DataFrame[vendor, state, outcome (missing when never answered), sends], by vendor then most sends.
    """
    sends, params = _sends(filters)
    return fetch_df(con, f"""
        SELECT vendor, state, outcome, count(*) AS sends FROM ({sends})
        GROUP BY ALL ORDER BY vendor, sends DESC, state, outcome NULLS LAST""", params)


def attempt_outcomes(con: duckdb.DuckDBPyConnection, filters: Filters = NO_FILTERS) -> pd.DataFrame:
    """Every vendor answer, including those later retried (from ``send_attempts``).

    Returns:
        DataFrame[vendor, outcome, first_attempts (attempt 1), retries (attempt > 1), attempts].
    """
    sends, params = _sends(filters)
    return fetch_df(con, f"""
        SELECT s.vendor, a.outcome,
               count(*) FILTER (WHERE a.attempt = 1) AS first_attempts,
               count(*) FILTER (WHERE a.attempt > 1) AS retries,
               count(*) AS attempts
        FROM ({sends}) s JOIN send_attempts a ON a.send_id = s.send_id
        GROUP BY ALL ORDER BY s.vendor, attempts DESC, a.outcome""", params)


def send_time_heatmap(con: duckdb.DuckDBPyConnection, filters: Filters = NO_FILTERS) -> pd.DataFrame:
    """Sends and opens by the user's local weekday and hour at the moment of sending.

    Local time is ``sent_at`` in ``users.time_zone`` (UTC when unknown). Only sends that went out
    (attempts > 0) count; an open is a delivered send with a ``push_open`` event.

    Returns:
        DataFrame[weekday (0 = Monday), weekday_name, hour (0-23), sends, opens, simulated_opens,
        open_rate (opens / sends)] — one row per cell that has sends.
    """
    sends, params = _sends(filters)
    frame = fetch_df(con, f"""
        WITH s AS ({sends}), opens AS ({OPENS}),
        local AS (
            SELECT timezone(coalesce(u.time_zone, 'UTC'), coalesce(s.sent_at, s.due_at)) AS local_at,
                   s.state = 'delivered' AND o.send_id IS NOT NULL AS opened,
                   coalesce(o.only_simulated, false) AS simulated_open
            FROM s LEFT JOIN users u ON u.user_id = s.user_id LEFT JOIN opens o ON o.send_id = s.send_id
            WHERE s.attempts > 0
        )
        SELECT (isodow(local_at) - 1)::INTEGER AS weekday, hour(local_at)::INTEGER AS hour, count(*) AS sends,
               count(*) FILTER (WHERE opened) AS opens,
               count(*) FILTER (WHERE opened AND simulated_open) AS simulated_opens,
               count(*) FILTER (WHERE opened) / count(*) AS open_rate
        FROM local GROUP BY ALL ORDER BY weekday, hour""", params)
    frame.insert(1, "weekday_name", [WEEKDAYS[int(w)] for w in frame["weekday"]])
    return frame
