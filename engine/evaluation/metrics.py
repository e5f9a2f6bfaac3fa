"""Per-user ranking and hit metrics, and bootstrap intervals of their means, as pure functions."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["bootstrap_mean", "per_user_ranking", "top_k_hits"]


def per_user_ranking(recs: pd.DataFrame, truth: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """Recall@k and NDCG@k (binary relevance) of every user in ``truth``.

    Args:
        recs: ``user_id``, ``item_id``, ``rank`` (0 = first); ranks ≥ k are ignored.
        truth: ``user_id``, ``item_id`` of the relevant items (duplicates collapsed).
        k: cut-off.

    Returns:
        ``user_id``, ``recall``, ``ndcg``; a user without recommendations scores 0 on both.
    """
    truth = truth[["user_id", "item_id"]].drop_duplicates()
    n_rel = truth.groupby("user_id").size()
    top = recs.loc[recs["rank"] < k, ["user_id", "item_id", "rank"]].drop_duplicates(["user_id", "item_id"])
    hits = top.merge(truth, on=["user_id", "item_id"])
    hits = hits.assign(gain=1.0 / np.log2(hits["rank"].to_numpy(dtype="float64") + 2.0))
    per = hits.groupby("user_id").agg(n=("gain", "size"), dcg=("gain", "sum")).reindex(n_rel.index, fill_value=0.0)
    ideal = np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))
    idcg = ideal[np.minimum(n_rel.to_numpy(), k) - 1]
    return pd.DataFrame({"user_id": n_rel.index, "recall": per["n"].to_numpy() / n_rel.to_numpy(),
                         "ndcg": per["dcg"].to_numpy() / idcg})


def top_k_hits(ranked: pd.DataFrame, observed: pd.DataFrame, key: str, k: int) -> np.ndarray:
    """1.0 where an observed row's ``key`` value is among its target's top-``k`` ranked values, else 0.0.

    Args:
        ranked: ``target``, ``key``, ``rank`` (0 = best).
        observed: ``target`` (unique), ``key``.
        key: the column compared (e.g. ``hour``).
        k: how many ranks count.

    Returns:
        One value per row of ``observed``, in its order.
    """
    top = ranked.loc[ranked["rank"] < k, ["target", key]].drop_duplicates().assign(hit=1.0)
    merged = observed[["target", key]].merge(top, on=["target", key], how="left")
    return merged["hit"].fillna(0.0).to_numpy()


def bootstrap_mean(values: np.ndarray, rng: np.random.Generator, n_boot: int = 1000,
                   clusters: np.ndarray | None = None, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``values`` with a percentile bootstrap interval; resamples ``clusters`` (e.g. users) when given.

    Returns:
        (mean, low, high).
    """
    values = np.asarray(values, dtype="float64")
    if clusters is None:
        clusters = np.arange(len(values))
    codes, _ = pd.factorize(clusters)
    sums = np.bincount(codes, weights=values)
    counts = np.bincount(codes).astype("float64")
    idx = rng.integers(0, len(sums), size=(n_boot, len(sums)))
    draws = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    lo, hi = np.percentile(draws, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(values.mean()), float(lo), float(hi)
