"""The retraining log for the dashboard: every challenger-versus-champion run, promoted or not."""

from __future__ import annotations

import json

import duckdb
import pandas as pd

from engine.analytics.filters import fetch_df

__all__ = ["retrain_runs"]


def retrain_runs(con: duckdb.DuckDBPyConnection, model_name: str | None = None) -> pd.DataFrame:
    """Scheduled retraining runs, newest first (written by :mod:`engine.training.retrain`).

    Args:
        model_name: only this model's runs (None: all).

    Returns:
        DataFrame[run_id, model_name, started_at, train_until, eval_start, eval_end (UTC timestamps),
        champion_version, challenger_version, metric, champion_score, challenger_score, gain
        (challenger − champion, NaN without a champion), margin, promoted (bool), reason,
        metrics (dict parsed from JSON)].
    """
    frame = fetch_df(con, """
        SELECT run_id, model_name, started_at, train_until, eval_start, eval_end, champion_version,
               challenger_version, metric, champion_score, challenger_score,
               challenger_score - champion_score AS gain, margin, promoted, reason,
               CAST(metrics AS VARCHAR) AS metrics
        FROM retrain_runs WHERE CAST($name AS VARCHAR) IS NULL OR model_name = $name
        ORDER BY started_at DESC, run_id DESC""", {"name": model_name})
    frame["metrics"] = [json.loads(m) if isinstance(m, str) else {} for m in frame["metrics"]]
    return frame
