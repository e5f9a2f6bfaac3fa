"""Two-stage scoring: a linear first stage keeps each user's best ``k`` candidates, the click model scores only those.

The click model costs about a microsecond per (user, item) row; at a million users × 50 items that is
most of a plan's time. A linear model of the booster's own raw score (its log-odds) costs a few
nanoseconds per row, so it ranks all candidates, and LightGBM scores only the ``k`` the linear model
ranks best. The first stage is fitted at planning time on a sample of users that LightGBM scores in
full, and its recall (how often the booster's own best item survives the cut) is measured on another
sample: :func:`shortlist_recall`. Policies then draw among the booster-ranked shortlist, so the logged
propensities are those of the policy that really ran (shortlist included).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.errors import InputError

__all__ = ["FirstStage", "ShortlistRecall", "fit_first_stage", "shortlist", "shortlist_recall"]

#: rows × features (float32 or float64) → raw booster scores (log-odds), one per row.
RawScorer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class FirstStage:
    """A linear ranker of candidates: ``x @ weights + intercept`` approximates the booster's log-odds."""

    weights: np.ndarray
    intercept: float

    def score(self, x: np.ndarray) -> np.ndarray:
        """First-stage score of every row of ``x`` (rows × features); missing values count as 0."""
        x = np.nan_to_num(x, copy=False) if np.isnan(x).any() else x
        return x @ self.weights.astype(x.dtype, copy=False) + x.dtype.type(self.intercept)


def fit_first_stage(x: np.ndarray, raw: np.ndarray, ridge: float = 1e-6) -> FirstStage:
    """Least squares of the booster's raw scores ``raw`` on the feature rows ``x`` (with an intercept).

    Args:
        x: rows × features, the same columns the booster reads.
        raw: the booster's raw score (``predict(..., raw_score=True)``) of each row.
        ridge: a tiny L2 penalty relative to each column's variance, so constant columns do not break the solve.

    Raises:
        InputError: shapes disagree or there are fewer rows than features + 1.
    """
    x = np.nan_to_num(np.asarray(x, dtype="float64"))
    raw = np.asarray(raw, dtype="float64")
    if x.ndim != 2 or raw.shape != (len(x),):
        raise InputError(f"fit_first_stage needs rows × features and one score per row, got {x.shape} and {raw.shape}")
    if len(x) <= x.shape[1]:
        raise InputError(f"fit_first_stage needs more rows than features, got {len(x)} rows")
    mean, y_mean = x.mean(axis=0), raw.mean()
    xc = x - mean
    gram = xc.T @ xc
    gram[np.diag_indices_from(gram)] += ridge * (np.diag(gram).mean() + 1.0)
    w = np.linalg.solve(gram, xc.T @ (raw - y_mean))
    return FirstStage(weights=w, intercept=float(y_mean - mean @ w))


def shortlist(prior: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's ``k`` highest ``prior`` values (users × items → users × k), in column order.

    Ties at the cut are broken by the lower column index, so the result does not depend on the sort.
    """
    n_users, n_items = prior.shape
    if k >= n_items:
        return np.broadcast_to(np.arange(n_items), (n_users, n_items)).copy()
    if k < 1:
        raise InputError(f"shortlist k must be at least 1, got {k}")
    # a stable sort (not argpartition) keeps the tie-break deterministic; 50 columns sort fast
    keep = np.argsort(-prior, axis=1, kind="stable")[:, :k]
    keep.sort(axis=1)
    return keep


@dataclass(frozen=True)
class ShortlistRecall:
    """How much of the booster's own ranking survives the first stage, over ``users`` sampled users.

    Attributes:
        top1: share of users whose booster-best item is in their shortlist.
        top_n: mean share of the booster's top ``n`` items that are in the shortlist.
        n: the ``n`` of ``top_n``.
        users: users measured.
    """

    top1: float
    top_n: float
    n: int
    users: int


def shortlist_recall(full_scores: np.ndarray, kept: np.ndarray, n: int = 10) -> ShortlistRecall:
    """Compare the booster's ranking of all items (users × items scores) with the shortlisted columns ``kept``."""
    n = min(n, full_scores.shape[1])
    order = np.argsort(-full_scores, axis=1, kind="stable")[:, :n]
    member = np.zeros(full_scores.shape, dtype=bool)
    np.put_along_axis(member, kept, True, axis=1)
    hit = np.take_along_axis(member, order, axis=1)
    return ShortlistRecall(top1=float(hit[:, 0].mean()), top_n=float(hit.mean()), n=n, users=len(full_scores))
