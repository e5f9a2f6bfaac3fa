"""Evaluation metrics as pure functions over arrays and DataFrames with named columns."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.stats import rankdata

__all__ = ["auc", "bootstrap_intervals", "hour_hit_rate", "log_loss", "paired_hit_interval", "ranking_metrics"]

_EPS = 1e-7


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half); NaN when ``y`` holds a single class."""
    y = np.asarray(y, dtype=bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy in nats, with probabilities clipped to [1e-7, 1 − 1e-7]."""
    y = np.asarray(y, dtype="float64")
    p = np.clip(np.asarray(p, dtype="float64"), _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def bootstrap_intervals(
    y: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    rng: np.random.Generator,
    n_boot: int = 1000,
    level: float = 0.95,
) -> dict[str, dict[str, float]]:
    """AUC and log loss of each prediction with percentile bootstrap intervals over rows.

    Every predictor is scored on the same resamples, so the intervals of the differences against
    the first predictor (``"<name>-<first>"`` entries) are paired, which is what tells whether one
    beats the other.

    Args:
        y: binary labels.
        predictions: name → predicted probabilities, one per label; the first is the reference.
        rng: the seeded generator that draws the resamples.
        n_boot: number of resamples.
        level: interval coverage.

    Returns:
        ``{name: {"auc", "auc_low", "auc_high", "log_loss", "log_loss_low", "log_loss_high"}}`` and,
        for every other name, ``{"<name>-<first>": {"auc_diff", "auc_diff_low", "auc_diff_high", …}}``.
    """
    y = np.asarray(y, dtype="float64")
    # A resample is a vector of multiplicities (multinomial counts), which lets every statistic of
    # all resamples be computed at once instead of looping over them.
    counts = rng.multinomial(len(y), np.full(len(y), 1.0 / len(y)), size=n_boot).astype("float64")
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    draws: dict[str, dict[str, np.ndarray]] = {}
    out: dict[str, dict[str, float]] = {}
    for name, p in predictions.items():
        p = np.asarray(p, dtype="float64")
        losses = -(y * np.log(np.clip(p, _EPS, 1)) + (1 - y) * np.log(np.clip(1 - p, _EPS, 1)))
        draws[name] = {"auc": _weighted_auc(y, p, counts), "log_loss": counts @ losses / len(y)}
        out[name] = {"auc": auc(y, p), "log_loss": float(losses.mean())}
        for metric, values in draws[name].items():
            out[name][f"{metric}_low"], out[name][f"{metric}_high"] = _percentiles(values, lo, hi)
    first = next(iter(predictions))
    for name in list(predictions)[1:]:
        entry: dict[str, float] = {}
        for metric in ("auc", "log_loss"):
            diff = draws[name][metric] - draws[first][metric]
            entry[f"{metric}_diff"] = out[name][metric] - out[first][metric]
            entry[f"{metric}_diff_low"], entry[f"{metric}_diff_high"] = _percentiles(diff, lo, hi)
        out[f"{name}-{first}"] = entry
    return out


def _weighted_auc(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC under each row of ``weights`` (resamples × rows); tied scores count one half."""
    order = np.argsort(score, kind="stable")
    s, pos = score[order], y[order] > 0
    w = weights[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # first row of each group of equal scores
    group = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1
    neg_by_group = np.add.reduceat(w * ~pos, starts, axis=1)
    below = np.cumsum(neg_by_group, axis=1) - neg_by_group  # negative weight strictly below each group
    credit = below[:, group] + 0.5 * neg_by_group[:, group]
    w_pos, w_neg = (w * pos).sum(axis=1), (w * ~pos).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w * pos * credit).sum(axis=1) / (w_pos * w_neg)


def _percentiles(values: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [lo, hi])
    return float(low), float(high)


def ranking_metrics(recs: pd.DataFrame, truth: pd.DataFrame, k: int = 10) -> dict[str, float]:
    """Recall@k and NDCG@k (binary relevance) averaged over the users in ``truth``.

    Args:
        recs: ``user_id``, ``item_id``, ``rank`` (0 = first); ranks ≥ k are ignored.
        truth: ``user_id``, ``item_id`` of the relevant items (duplicates are collapsed).
        k: cut-off.

    Returns:
        ``{"recall@k": …, "ndcg@k": …, "users": n}``. Recall is hits / relevant items; a user
        without recommendations scores 0.
    """
    truth = truth[["user_id", "item_id"]].drop_duplicates()
    n_rel = truth.groupby("user_id").size()
    if n_rel.empty:
        return {f"recall@{k}": float("nan"), f"ndcg@{k}": float("nan"), "users": 0}
    top = recs.loc[recs["rank"] < k, ["user_id", "item_id", "rank"]]
    hits = top.merge(truth, on=["user_id", "item_id"])
    hits = hits.assign(gain=1.0 / np.log2(hits["rank"].to_numpy() + 2.0))
    per_user = hits.groupby("user_id").agg(n_hits=("gain", "size"), dcg=("gain", "sum"))
    per_user = per_user.reindex(n_rel.index, fill_value=0.0)
    ideal = np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))
    idcg = ideal[np.minimum(n_rel.to_numpy(), k) - 1]
    return {
        f"recall@{k}": float(np.mean(per_user["n_hits"].to_numpy() / n_rel.to_numpy())),
        f"ndcg@{k}": float(np.mean(per_user["dcg"].to_numpy() / idcg)),
        "users": int(len(n_rel)),
    }


def hour_hit_rate(predicted: pd.DataFrame, observed: pd.DataFrame, k: int) -> float:
    """Share of observed engagements whose local hour is among the user's top-``k`` predicted hours.

    Args:
        predicted: ``user_id``, ``rank`` (0 = best), ``local_hour``; one row per (user, hour).
        observed: ``user_id``, ``local_hour``; one row per engagement (e.g. per invoice).
        k: how many predicted hours count.

    Returns:
        The hit rate in [0, 1]; engagements of users without predictions count as misses; NaN when
        ``observed`` is empty.
    """
    if observed.empty:
        return float("nan")
    top = predicted.loc[predicted["rank"] < k, ["user_id", "local_hour"]].drop_duplicates()
    hit = observed[["user_id", "local_hour"]].merge(top.assign(hit=True), on=["user_id", "local_hour"], how="left")
    return float(hit["hit"].notna().mean())


def paired_hit_interval(
    predicted: pd.DataFrame, reference: pd.DataFrame, observed: pd.DataFrame, k: int, rng: np.random.Generator,
    n_boot: int = 1000,
) -> tuple[float, float]:
    """95 % interval of (top-k hit rate of ``predicted`` − that of ``reference``), resampling users.

    Users, not engagements, are resampled because one user's engagements are not independent.
    """
    def hits(ranked: pd.DataFrame) -> pd.Series:
        top = ranked.loc[ranked["rank"] < k, ["user_id", "local_hour"]].assign(hit=1.0)
        merged = observed[["user_id", "local_hour"]].merge(top, on=["user_id", "local_hour"], how="left")
        return merged.fillna({"hit": 0.0}).groupby("user_id")["hit"].sum()

    a, b = hits(predicted), hits(reference)
    n = observed.groupby("user_id").size()
    a, b = a.reindex(n.index, fill_value=0.0).to_numpy(), b.reindex(n.index, fill_value=0.0).to_numpy()
    if len(n) == 0:
        return float("nan"), float("nan")
    idx = rng.integers(0, len(n), size=(n_boot, len(n)))
    counts = n.to_numpy(dtype="float64")
    diff = (a[idx].sum(axis=1) - b[idx].sum(axis=1)) / counts[idx].sum(axis=1)
    low, high = np.percentile(diff, [2.5, 97.5])
    return float(low), float(high)
