"""A learned send-hour ranker: which local hours a customer will next engage in, from their own history and the crowd's.

Each (engagement, hour) pair is a row; features are the customer's counts at that hour, at its
neighbours and on that weekday, recency, the distance to their typical and last hours, and the
population's share of that hour on that weekday. A LightGBM LambdaRank model trained on an earlier
window (features frozen at its start) scores the 24 hours; the evaluation split is never read.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd

__all__ = ["HOUR_FEATURES", "hour_rows", "rank_hours", "train_hour_ranker"]

H = 24
HOUR_FEATURES = ["own", "own_share", "own_near", "own_dow", "own_decayed", "last_dist", "last3_dist",
                 "mean_dist", "global", "global_dow", "n_invoices", "hour"]


def _circ(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.abs(a - b)
    return np.minimum(d, H - d)


def hour_rows(history: pd.DataFrame, targets: pd.DataFrame, at: pd.Timestamp) -> pd.DataFrame:
    """One row per (target engagement, hour 0–23) with :data:`HOUR_FEATURES`, from ``history`` before ``at``.

    Args:
        history: ``user_id``, ``ts`` (local wall clock), one row per engagement (e.g. invoice).
        targets: ``user_id``, ``dow`` (0 = Monday) and optionally ``hour`` (the label), one row per engagement
            to predict; users without history get zero own-features.
        at: features use history strictly before it.

    Returns:
        ``target`` (row number in ``targets``), ``hour``, the features and ``label`` (1 at ``targets.hour``).
    """
    past = history[history["ts"] < at]
    users = pd.Index(np.sort(past["user_id"].unique()))
    u, h, dow = users.get_indexer(past["user_id"]), past["ts"].dt.hour.to_numpy(), past["ts"].dt.day_of_week.to_numpy()
    age = (at - past["ts"]).dt.total_seconds().to_numpy() / 86400
    own, own_dow, dec = np.zeros((len(users), H)), np.zeros((len(users), 7, H)), np.zeros((len(users), H))
    np.add.at(own, (u, h), 1)
    np.add.at(own_dow, (u, dow, h), 1)
    np.add.at(dec, (u, h), 0.5 ** (age / 90))
    g_dow = np.zeros((7, H))
    np.add.at(g_dow, (dow, h), 1)
    g_dow /= np.maximum(g_dow.sum(axis=1, keepdims=True), 1)
    g = np.bincount(h, minlength=H) / max(len(h), 1)
    ordered = past.assign(h=h).sort_values("ts")
    last = ordered.groupby("user_id")["h"].last().reindex(users).to_numpy(dtype="float64")
    last3 = ordered.groupby("user_id").tail(3).groupby("user_id")["h"].mean().reindex(users).to_numpy()
    mean = ordered.groupby("user_id")["h"].mean().reindex(users).to_numpy()

    r = users.get_indexer(targets["user_id"])
    known = r >= 0
    rr = np.where(known, r, 0)
    n, hours = len(targets), np.tile(np.arange(H), (len(targets), 1))
    tdow = targets["dow"].to_numpy()
    total = own.sum(axis=1)
    near = np.roll(own, 1, axis=1) + np.roll(own, -1, axis=1)
    big = np.full(n, 99.0)

    def mine(m: np.ndarray) -> np.ndarray:
        return np.where(known[:, None], m[rr], 0.0)

    frame = {
        "own": mine(own), "own_share": mine(own / np.maximum(total[:, None], 1)), "own_near": mine(near),
        "own_dow": np.where(known[:, None], own_dow[rr, tdow], 0.0), "own_decayed": mine(dec),
        "last_dist": _circ(hours, np.where(known, last[rr], big)[:, None]),
        "last3_dist": np.abs(hours - np.where(known, last3[rr], big)[:, None]),
        "mean_dist": np.abs(hours - np.where(known, mean[rr], big)[:, None]),
        "global": np.tile(g, (n, 1)), "global_dow": g_dow[tdow], "n_invoices": np.repeat(
            np.where(known, total[rr], 0.0)[:, None], H, axis=1), "hour": hours,
    }
    out = pd.DataFrame({k: np.asarray(v, dtype="float64").ravel() for k, v in frame.items()})
    out.insert(0, "target", np.repeat(np.arange(n), H))
    if "hour" in targets.columns:
        out["label"] = (out["hour"].to_numpy() == np.repeat(targets["hour"].to_numpy(), H)).astype(int)
    return out


def train_hour_ranker(history: pd.DataFrame, at: pd.Timestamp, window_days: int = 120, seed: int = 7) -> lgb.Booster:
    """Fit the ranker on the engagements of ``[at − window_days, at)``, features frozen at the window's start."""
    start = at - pd.Timedelta(days=window_days)
    window = history[(history["ts"] >= start) & (history["ts"] < at)]
    window = window[window["user_id"].isin(history.loc[history["ts"] < start, "user_id"])]
    targets = pd.DataFrame({"user_id": window["user_id"].to_numpy(), "dow": window["ts"].dt.day_of_week.to_numpy(),
                            "hour": window["ts"].dt.hour.to_numpy()})
    rows = hour_rows(history, targets, start)
    params = {"objective": "lambdarank", "learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 100,
              "seed": seed, "deterministic": True, "num_threads": 2, "verbose": -1, "eval_at": [3]}
    data = lgb.Dataset(rows[HOUR_FEATURES], rows["label"], group=np.full(len(targets), H))
    return lgb.train(params, data, num_boost_round=150)


def rank_hours(booster: lgb.Booster, rows: pd.DataFrame) -> pd.DataFrame:
    """Ranks of the 24 hours per target from :func:`hour_rows` output.

    Returns:
        ``target``, ``hour``, ``score``, ``rank`` (0 = best).
    """
    scored = rows[["target", "hour"]].assign(score=booster.predict(rows[HOUR_FEATURES], num_threads=2))
    scored = scored.sort_values(["target", "score", "hour"], ascending=[True, False, True])
    scored["rank"] = scored.groupby("target").cumcount()
    return scored.astype({"hour": int}).reset_index(drop=True)
