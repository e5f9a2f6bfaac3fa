"""Recommendation: candidates → ranking by the click model → a policy that logs its propensity; send times.

    candidates.py  generate_candidates, CatalogRule   own items, co-occurrence, popularity
    ranking.py     score_candidates                   click-model scores and positions
    policy.py      choose, action_probabilities       epsilon-greedy / softmax / greedy, with propensity
    send_time.py   best_send_hours, hour_scores       best local hours of the week per user

:func:`rank_items` chains the first two in batches of users (the ranked lists ``pushwise evaluate``
scores); :func:`recommend` adds the policy's draw, for the planner.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from engine.features.base import PURCHASE_TYPES, Db, check_as_of, fetch_df
from engine.features.item import item_neighbors
from engine.recommend.candidates import CANDIDATE_COLUMNS, CatalogRule, generate_candidates
from engine.recommend.policy import (
    CHOICE_COLUMNS,
    EpsilonGreedy,
    Greedy,
    Policy,
    Softmax,
    action_probabilities,
    choose,
)
from engine.recommend.ranking import order_scored, score_candidates
from engine.recommend.send_time import best_send_hours, hour_scores, top_hours

if TYPE_CHECKING:
    from engine.training.artifacts import TrainedModel

__all__ = [
    "CANDIDATE_COLUMNS",
    "CHOICE_COLUMNS",
    "CatalogRule",
    "EpsilonGreedy",
    "Greedy",
    "Policy",
    "Softmax",
    "action_probabilities",
    "best_send_hours",
    "choose",
    "generate_candidates",
    "hour_scores",
    "order_scored",
    "rank_items",
    "recommend",
    "score_candidates",
    "top_hours",
]


def _users(db: Db, as_of: datetime, user_ids: Sequence[str] | None) -> list[str]:
    if user_ids is None:
        user_ids = fetch_df(
            db,
            "SELECT DISTINCT user_id FROM events WHERE ts < $as_of AND list_contains($types, event_type) "
            "AND item_id IS NOT NULL ORDER BY user_id",
            {"as_of": as_of, "types": list(PURCHASE_TYPES)},
        )["user_id"].tolist()
    return sorted(set(user_ids))


def _ranked_batches(
    db: Db, model: TrainedModel, as_of: datetime, users: list[str], catalog: CatalogRule | None,
    max_candidates: int | None, batch_users: int,
) -> Iterator[pd.DataFrame]:
    """Each batch's candidates scored and ordered by the click model (candidate caps from its card)."""
    neighbors = item_neighbors(db, as_of)
    data = model.card.get("config", {}).get("data", {})
    caps = {name: int(data[name]) for name in ("n_own", "n_cooc", "n_popular") if name in data}
    for start in range(0, len(users), batch_users):
        batch = users[start : start + batch_users]
        cands = generate_candidates(db, as_of, batch, catalog=catalog, neighbors=neighbors, **caps)
        if cands.empty:
            continue
        scored = score_candidates(model, db, cands, as_of, neighbors=neighbors)
        if max_candidates is not None:
            scored = scored[scored["position"] < max_candidates]
        yield scored


def rank_items(
    db: Db,
    model: TrainedModel,
    as_of: datetime,
    user_ids: Sequence[str] | None = None,
    *,
    catalog: CatalogRule | None = None,
    max_candidates: int | None = None,
    batch_users: int = 50_000,
) -> pd.DataFrame:
    """Every user's candidates ranked by the click model: the lists the planner's policy draws from.

    Args and batching as :func:`recommend`.

    Returns:
        :data:`~engine.recommend.candidates.CANDIDATE_COLUMNS`, the click features, ``score`` and
        ``position`` (0 = best within the user), ordered by user then position.
    """
    as_of = check_as_of(as_of)
    parts = list(_ranked_batches(db, model, as_of, _users(db, as_of, user_ids), catalog, max_candidates, batch_users))
    if not parts:
        return pd.DataFrame({"user_id": pd.Series(dtype="object"), "item_id": pd.Series(dtype="object"),
                             "score": pd.Series(dtype="float64"), "position": pd.Series(dtype="int64")})
    return pd.concat(parts, ignore_index=True)


def recommend(
    db: Db,
    model: TrainedModel,
    as_of: datetime,
    rng: np.random.Generator,
    user_ids: Sequence[str] | None = None,
    *,
    policy: Policy | None = None,
    catalog: CatalogRule | None = None,
    max_candidates: int | None = None,
    batch_users: int = 50_000,
) -> pd.DataFrame:
    """One item per user: candidates, click-model ranking and a policy draw, in batches of users.

    Args:
        db: the store or a DuckDB connection.
        model: the loaded ``click`` model; its card's candidate caps (``config.data``) are used.
        as_of: time of the decision; only events before it are read.
        rng: seeded generator for the policy's draws.
        user_ids: users to decide for; every user with a purchase before ``as_of`` when None.
        policy: defaults to ``EpsilonGreedy(epsilon=0.1, top_k=10)``.
        catalog: the campaign's item restriction.
        max_candidates: keep only each user's best-scored candidates before the policy draws
            (a campaign's ``max_candidates``); all when None.
        batch_users: users per batch (bounds memory at about 100 candidate rows per user).

    Returns:
        :data:`~engine.recommend.policy.CHOICE_COLUMNS` (``user_id``, ``item_id``, ``position``,
        ``score``, ``propensity``, ``policy``); users without any candidate are absent.
    """
    as_of = check_as_of(as_of)
    policy = policy or EpsilonGreedy()
    users = _users(db, as_of, user_ids)
    parts = [choose(scored, policy, rng)
             for scored in _ranked_batches(db, model, as_of, users, catalog, max_candidates, batch_users)]
    if not parts:
        return choose(pd.DataFrame({"user_id": [], "item_id": [], "score": []}), policy, rng)
    return pd.concat(parts, ignore_index=True)
