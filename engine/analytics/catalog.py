"""What the store holds: campaigns, vendors and dates to filter on, trained models, the decision log,
and how much of it is simulated."""

from __future__ import annotations

import json
from datetime import date

import duckdb
import pandas as pd

from engine.analytics.filters import NO_FILTERS, Filters, fetch_df
from engine.analytics.pseudonym import pseudonymise_all

__all__ = ["campaigns", "decision_log", "model_metrics", "model_runs", "send_date_range",
           "simulation_summary", "vendors"]


def campaigns(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Planned campaigns, newest first.

    Returns:
        DataFrame[campaign_id, name, as_of, created_at (UTC), decisions, sends (action 'send'),
        holdout]
    """
    return fetch_df(con, """
        SELECT c.campaign_id, c.name, c.as_of, c.created_at,
               count(d.decision_id) AS decisions,
               count(d.decision_id) FILTER (WHERE d.action = 'send') AS sends,
               count(d.decision_id) FILTER (WHERE d.arm = 'holdout') AS holdout
        FROM campaigns c LEFT JOIN decisions d ON d.campaign_id = c.campaign_id
        GROUP BY ALL ORDER BY c.created_at DESC, c.campaign_id""")


def vendors(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Vendors that appear in any decision, sorted."""
    frame = fetch_df(con, "SELECT DISTINCT vendor FROM decisions WHERE vendor IS NOT NULL ORDER BY vendor")
    return [str(v) for v in frame["vendor"]]


def send_date_range(con: duckdb.DuckDBPyConnection) -> tuple[date | None, date | None]:
    """First and last UTC day of ``decisions.send_at``; (None, None) when no decision has a send time."""
    row = fetch_df(con, "SELECT min(send_at)::DATE AS lo, max(send_at)::DATE AS hi FROM decisions").iloc[0]
    if pd.isna(row["lo"]):
        return None, None
    return pd.Timestamp(row["lo"]).date(), pd.Timestamp(row["hi"]).date()


def model_runs(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Trained model versions, newest first.

    Returns:
        DataFrame[model_name, version, trained_at (UTC), path, metrics (dict parsed from JSON)]
    """
    frame = fetch_df(con, """
        SELECT model_name, version, trained_at, path, CAST(metrics AS VARCHAR) AS metrics
        FROM model_runs ORDER BY trained_at DESC, model_name, version""")
    frame["metrics"] = [json.loads(m) if isinstance(m, str) else {} for m in frame["metrics"]]
    return frame


def model_metrics(runs: pd.DataFrame) -> pd.DataFrame:
    """Numeric metrics of a :func:`model_runs` frame in long form (pure; nested keys joined by '.').

    Returns:
        DataFrame[model_name, version, trained_at, metric, value (float)]
    """
    rows = []
    for run in runs.itertuples(index=False):
        for metric, value in _flatten(run.metrics).items():
            rows.append({"model_name": run.model_name, "version": run.version, "trained_at": run.trained_at,
                         "metric": metric, "value": float(value)})
    return pd.DataFrame(rows, columns=["model_name", "version", "trained_at", "metric", "value"])


def _flatten(metrics: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = value
    return out


def simulation_summary(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """How much of the store is simulated, for the banner that says so.

    Returns:
        DataFrame[kind, rows, simulated]: one row per event type ('event:push_open', ...), plus
        'devices', 'consents', and 'conversion:incremental' (conversion events marked
        ``grounded: false``, i.e. not backed by a real purchase).
    """
    return fetch_df(con, """
        SELECT 'event:' || event_type AS kind, count(*) AS rows, count(*) FILTER (WHERE simulated) AS simulated
        FROM events GROUP BY event_type
        UNION ALL
        SELECT 'conversion:incremental', count(*), count(*) FROM events
        WHERE event_type = 'conversion' AND properties->>'grounded' = 'false'
        UNION ALL
        SELECT 'devices', count(*), count(*) FILTER (WHERE simulated) FROM devices
        UNION ALL
        SELECT 'consents', count(*), count(*) FILTER (WHERE simulated) FROM consents
        ORDER BY kind""")


def decision_log(
    con: duckdb.DuckDBPyConnection, key: bytes, filters: Filters = NO_FILTERS, limit: int = 200
) -> pd.DataFrame:
    """The logged decisions, with users shown only as keyed pseudonyms and no device or token.

    Args:
        key: pseudonymisation key (see :func:`engine.analytics.pseudonym.load_pseudonym_key`).
        limit: most recent rows kept (by ``send_at``, then ``decision_id``).

    Returns:
        DataFrame[user (pseudonym), campaign_id, arm, action, skip_reason, item_id, position, send_at,
        vendor, send_hour_local, score, propensity, policy, model_version]
    """
    where, params = filters.where("d")
    frame = fetch_df(con, f"""
        SELECT d.user_id, d.campaign_id, d.arm, d.action, d.skip_reason, d.item_id, d.position, d.send_at,
               d.vendor, d.send_hour_local, d.score, d.propensity, d.policy, d.model_version
        FROM decisions d WHERE {where}
        ORDER BY d.send_at DESC NULLS LAST, d.decision_id LIMIT {int(limit)}""", params)
    frame.insert(0, "user", pseudonymise_all(frame.pop("user_id"), key))
    return frame
