"""Two-stage scoring: a linear first stage keeps each user's best ``k`` candidates, the click model scores only those.

The click model costs microseconds per (user, item) row; at a million users × 50 candidates that is
the largest single cost of a plan. A linear model of the booster's own log-odds costs nanoseconds
per row, so it ranks every candidate and the booster scores only the ``k`` the linear model ranks
best. The first stage is fitted at planning time on a sample of users the booster scores in full
(:func:`fit_first_stage`), and its recall (how much of the booster's own top of the list survives the
cut) is measured on a second sample (:func:`shortlist_recall`). The policy then draws among the
booster-ranked shortlist, so its logged propensities are over the items it really chose among.

Rows are candidates grouped by user: ``group`` holds a user number per row, equal numbers contiguous.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import InputError

__all__ = ["FirstStage", "ShortlistRecall", "fit_first_stage", "log_odds", "shortlist_mask", "shortlist_recall"]


@dataclass(frozen=True)
class FirstStage:
    """A linear ranker of candidates: ``x @ weights + intercept`` approximates the booster's log-odds."""

    weights: np.ndarray
    intercept: float

    def score(self, x: np.ndarray) -> np.ndarray:
        """First-stage score of every row of ``x`` (rows × features); missing values count as 0."""
        x = np.asarray(x)
        x = np.nan_to_num(x) if np.isnan(x).any() else x
        return x @ self.weights.astype(x.dtype, copy=False) + x.dtype.type(self.intercept)


def log_odds(p: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` with ``p`` clipped away from 0 and 1: the booster's raw score from its probability."""
    p = np.clip(np.asarray(p, dtype="float64"), 1e-12, 1 - 1e-12)
    return np.log(p / (1 - p))


def fit_first_stage(x: np.ndarray, raw: np.ndarray, ridge: float = 1e-6) -> FirstStage:
    """Least squares of the booster's raw scores ``raw`` on the feature rows ``x`` (with an intercept).

    Args:
        x: rows × features, the same columns the booster reads; NaN counts as 0.
        raw: the booster's log-odds of each row (:func:`log_odds` of its probabilities).
        ridge: a tiny L2 penalty on the standardised weights, so constant or collinear columns do not break the solve.

    Raises:
        InputError: shapes disagree or there are no more rows than features.
    """
    x = np.nan_to_num(np.asarray(x, dtype="float64"))
    raw = np.asarray(raw, dtype="float64")
    if x.ndim != 2 or raw.shape != (len(x),):
        raise InputError(f"fit_first_stage needs rows × features and one score per row, got {x.shape} and {raw.shape}")
    if len(x) <= x.shape[1]:
        raise InputError(f"fit_first_stage needs more rows than features, got {len(x)} rows")
    mean, y_mean = x.mean(axis=0), raw.mean()
    # standardised columns: counts in the tens of thousands sit beside shares in [0, 1], and a ridge on
    # the raw scale would shrink the small-scale columns to nothing
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    xs = (x - mean) / scale
    gram = xs.T @ xs
    gram[np.diag_indices_from(gram)] += ridge * len(x)
    w = np.linalg.solve(gram, xs.T @ (raw - y_mean)) / scale
    return FirstStage(weights=w, intercept=float(y_mean - mean @ w))


def _rank_within(group: np.ndarray, score: np.ndarray) -> np.ndarray:
    """0-based rank of each row by ``score`` (descending) within its group; ties go to the earlier row."""
    group = np.asarray(group)
    if len(group) and np.any(np.diff(group) < 0):
        raise InputError("rows must be grouped by user: group numbers must not decrease")
    score = np.asarray(score, dtype="float64")
    n = len(group)
    sizes = np.diff(np.flatnonzero(np.r_[True, group[1:] != group[:-1], True])) if n else np.zeros(0, np.int64)
    if n and (sizes == sizes[0]).all():  # every user has as many candidates: sort each row of a matrix
        by_row = np.argsort(-score.reshape(-1, sizes[0]), axis=1, kind="stable")
        rank = np.empty_like(by_row)
        np.put_along_axis(rank, by_row, np.arange(sizes[0]), axis=1)
        return rank.reshape(-1)
    order = np.lexsort((-score, group))  # lexsort is stable: earlier row first on ties
    g = group[order]
    opens = np.r_[True, g[1:] != g[:-1]] if n else np.zeros(0, dtype=bool)
    first = np.maximum.accumulate(np.where(opens, np.arange(n), 0)) if n else np.zeros(0, dtype=np.int64)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - first
    return rank


def shortlist_mask(group: np.ndarray, prior: np.ndarray, k: int) -> np.ndarray:
    """True for the rows among their user's ``k`` highest ``prior`` values (every row of users with ≤ ``k``).

    Ties at the cut go to the earlier row, so the result does not depend on the sort algorithm.

    Raises:
        InputError: ``k`` below 1, or rows not grouped by user.
    """
    if k < 1:
        raise InputError(f"shortlist k must be at least 1, got {k}")
    return _rank_within(group, prior) < k


@dataclass(frozen=True)
class ShortlistRecall:
    """How much of the booster's own ranking survives the first stage, over ``users`` sampled users.

    Attributes:
        top1: share of users whose booster-best item is in their shortlist.
        top_n: mean over users of the share of the booster's top ``n`` items (all, for users with
            fewer) that are in the shortlist.
        n: the ``n`` of ``top_n`` (the policy's ``top_k``: the items it may draw).
        k: the shortlist length.
        users: users measured.
    """

    top1: float
    top_n: float
    n: int
    k: int
    users: int


def shortlist_recall(group: np.ndarray, full: np.ndarray, kept: np.ndarray, n: int, k: int) -> ShortlistRecall:
    """Compare the booster's ranking ``full`` of every candidate row with the shortlisted rows ``kept``.

    Args:
        group: user number of each row, contiguous.
        full: the booster's score of every row.
        kept: :func:`shortlist_mask` of the first stage's prior.
        n: how deep the booster's list is compared (the policy's ``top_k``).
        k: the shortlist length (reported only).
    """
    rank = _rank_within(group, full)
    g = np.asarray(group)
    kept = np.asarray(kept, dtype=bool)
    users, codes, sizes = np.unique(g, return_inverse=True, return_counts=True)
    if len(users) == 0:
        return ShortlistRecall(float("nan"), float("nan"), n, k, 0)
    top = rank < n
    hits = np.bincount(codes, weights=(top & kept), minlength=len(users))
    best_kept = np.bincount(codes, weights=(rank == 0) & kept, minlength=len(users))
    return ShortlistRecall(top1=float(best_kept.mean()), top_n=float((hits / np.minimum(sizes, n)).mean()),
                           n=n, k=k, users=len(users))
