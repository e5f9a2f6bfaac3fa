"""Policies: pick one item per user from the ranked candidates and log the probability of that pick.

A logged propensity is what lets a new policy be judged offline from old decisions (inverse
propensity weighting), so each policy states its full action distribution
(:func:`action_probabilities`) and :func:`choose` samples from exactly that distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from engine.errors import InputError
from engine.recommend.ranking import order_scored

__all__ = ["CHOICE_COLUMNS", "EpsilonGreedy", "Greedy", "Policy", "Softmax", "action_probabilities", "choose", "choose_rows"]

#: Columns of :func:`choose`'s result.
CHOICE_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "position", "score", "propensity", "policy")


class Policy(Protocol):
    """Maps each user's ranked candidates to choice probabilities."""

    @property
    def name(self) -> str: ...

    def probabilities(self, position: np.ndarray, score: np.ndarray, group_size: np.ndarray) -> np.ndarray:
        """Per-row probabilities; rows come sorted by user then position, ``group_size`` is the user's row count."""
        ...


@dataclass(frozen=True)
class EpsilonGreedy:
    """The top item with probability 1 − ε, otherwise uniform over the top ``top_k`` (the top item included).

    So the top item's probability is 1 − ε + ε/k and each other of the top k gets ε/k, with
    k = min(``top_k``, the user's candidate count).
    """

    epsilon: float = 0.1
    top_k: int = 10

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise InputError(f"epsilon must be between 0 and 1, got {self.epsilon}")
        _check_top_k(self.top_k)

    @property
    def name(self) -> str:
        return f"epsilon_greedy(epsilon={self.epsilon:g},top_k={self.top_k})"

    def probabilities(self, position: np.ndarray, score: np.ndarray, group_size: np.ndarray) -> np.ndarray:
        k = np.minimum(self.top_k, group_size)
        explore = np.where(position < k, self.epsilon / k, 0.0)
        return explore + np.where(position == 0, 1.0 - self.epsilon, 0.0)


@dataclass(frozen=True)
class Greedy(EpsilonGreedy):
    """Always the top item (propensity 1): no exploration, so no off-policy evaluation of others."""

    epsilon: float = 0.0
    top_k: int = 1

    @property
    def name(self) -> str:
        return "greedy"


@dataclass(frozen=True)
class Softmax:
    """Probability ∝ exp(logit(score) / temperature) over the top ``top_k`` items.

    On the logit scale, temperature 1 makes the odds of choosing two items proportional to their
    click odds; lower temperatures approach greedy, higher ones uniform.
    """

    temperature: float = 1.0
    top_k: int = 10

    def __post_init__(self) -> None:
        if not self.temperature > 0.0:
            raise InputError(f"temperature must be positive, got {self.temperature}")
        _check_top_k(self.top_k)

    @property
    def name(self) -> str:
        return f"softmax(temperature={self.temperature:g},top_k={self.top_k})"

    def probabilities(self, position: np.ndarray, score: np.ndarray, group_size: np.ndarray) -> np.ndarray:
        p = np.clip(score, 1e-9, 1 - 1e-9)
        z = np.where(position < self.top_k, np.log(p / (1 - p)) / self.temperature, -np.inf)
        group = np.cumsum(position == 0) - 1  # rows are sorted by user, position 0 opens each user
        z_max = np.maximum.reduceat(z, np.flatnonzero(position == 0))[group]
        w = np.exp(z - z_max)
        return w / np.add.reduceat(w, np.flatnonzero(position == 0))[group]


def _check_top_k(top_k: int) -> None:
    if not isinstance(top_k, int) or top_k < 1:
        raise InputError(f"top_k must be a positive integer, got {top_k!r}")


def action_probabilities(scored: pd.DataFrame, policy: Policy) -> pd.DataFrame:
    """Every candidate with the probability that ``policy`` picks it.

    Args:
        scored: ``user_id``, ``item_id``, ``score`` (other columns kept), e.g. from
            :func:`~engine.recommend.ranking.score_candidates`.
        policy: the policy.

    Returns:
        ``scored`` sorted by user and rank, with ``position`` (0 = best score) and ``probability``;
        probabilities of one user sum to 1.
    """
    missing = {"user_id", "item_id", "score"} - set(scored.columns)
    if missing:
        raise InputError(f"scored is missing column(s): {', '.join(sorted(missing))}")
    ranked = order_scored(scored.drop(columns=["position"], errors="ignore"))
    if ranked.empty:
        return ranked.assign(probability=pd.Series(dtype="float64"))
    position = ranked["position"].to_numpy()
    size = ranked.groupby("user_id", sort=False)["item_id"].transform("size").to_numpy()
    probs = policy.probabilities(position, ranked["score"].to_numpy(dtype="float64"), size)
    return ranked.assign(probability=probs)


def choose(scored: pd.DataFrame, policy: Policy, rng: np.random.Generator) -> pd.DataFrame:
    """Sample one item per user from ``policy``'s distribution.

    One uniform draw per user, in user-id order, so a seed reproduces the same choices.

    Returns:
        :data:`CHOICE_COLUMNS`: ``user_id``, ``item_id``, ``position`` (0-based rank of the chosen
        item), ``score``, ``propensity`` (the probability the policy gave this pick), ``policy`` (its
        name); one row per user with at least one candidate, sorted by user.
    """
    missing = {"user_id", "item_id", "score"} - set(scored.columns)
    if missing:
        raise InputError(f"scored is missing column(s): {', '.join(sorted(missing))}")
    users, user_ids = pd.factorize(scored["user_id"], sort=True)
    items, item_ids = pd.factorize(scored["item_id"], sort=True)
    score = scored["score"].to_numpy(dtype="float64")
    rows, position, propensity = choose_rows(users, items, score, policy, rng)
    return pd.DataFrame(
        {
            "user_id": pd.Series(np.asarray(user_ids, dtype=object)[users[rows]], dtype="object"),
            "item_id": pd.Series(np.asarray(item_ids, dtype=object)[items[rows]], dtype="object"),
            "position": position,
            "score": score[rows],
            "propensity": propensity,
            "policy": pd.Series([policy.name] * len(rows), dtype="object"),
        }
    )


def choose_rows(
    user: np.ndarray, item: np.ndarray, score: np.ndarray, policy: Policy, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`choose` on integer codes: one pick per user, users in ascending code order.

    Args:
        user, item: integer codes per candidate row, ordered as the ids they stand for (so ties in
            score go to the lower item code, as :func:`~engine.recommend.ranking.order_scored` does).
        score: the click model's score per row.

    Returns:
        (the picked rows' indices into the inputs, their 0-based position within the user, their
        propensity), one entry per distinct user, in ascending user code order.
    """
    user, item = np.asarray(user), np.asarray(item)
    score = np.asarray(score, dtype="float64")
    if len(user) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype="float64")
    if (size := _equal_sorted_groups(user, item)) is not None:
        return _choose_matrix(score, size, policy, rng)
    order = np.lexsort((item, -score, user))
    g = user[order]
    opens = np.r_[True, g[1:] != g[:-1]]
    starts = np.flatnonzero(opens)
    group = np.cumsum(opens) - 1
    position = np.arange(len(g)) - starts[group]
    size = np.diff(np.r_[starts, len(g)])[group]
    p = policy.probabilities(position, score[order], size)
    # Per-user running mass (not one global cumsum: its rounding error grows with the row count).
    within = pd.Series(p).groupby(group).cumsum().to_numpy()
    ends = np.r_[starts[1:], len(p)] - 1
    total = within[ends]
    draw = rng.random(len(starts))
    hit = np.flatnonzero((within > draw[group] * total[group]) & (p > 0))
    _, first = np.unique(group[hit], return_index=True)
    picked = hit[first]
    return order[picked], position[picked].astype(np.int64), p[picked].astype("float64")


def _equal_sorted_groups(user: np.ndarray, item: np.ndarray) -> int | None:
    """The common row count of every user when rows come grouped by ascending user, items ascending
    within each, and every user has as many rows (a shortlist); None otherwise."""
    if np.any(np.diff(user) < 0):
        return None
    opens = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    sizes = np.diff(np.r_[opens, len(user)])
    if not (sizes == sizes[0]).all():
        return None
    if sizes[0] > 1 and not (np.diff(item.reshape(-1, sizes[0]), axis=1) > 0).all():
        return None
    return int(sizes[0])


def _choose_matrix(score: np.ndarray, size: int, policy: Policy, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`choose_rows` for users with ``size`` rows each, in order: the same picks, one user per matrix row."""
    users = len(score) // size
    by_score = np.argsort(-score.reshape(users, size), axis=1, kind="stable")  # ties: lower item first
    order = (by_score + (np.arange(users) * size)[:, None]).reshape(-1)
    position = np.tile(np.arange(size), users)
    p = policy.probabilities(position, score[order], np.full(len(order), size)).reshape(users, size)
    within = np.cumsum(p, axis=1)  # sums each user's row in order, as the grouped running sum does
    draw = rng.random(users)
    hit = (within > (draw * within[:, -1])[:, None]) & (p > 0)
    first = np.argmax(hit, axis=1)
    picked = np.arange(users) * size + first
    return order[picked], first.astype(np.int64), p[np.arange(users), first].astype("float64")
