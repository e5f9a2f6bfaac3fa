"""Recommendation: candidates → ranking by the click model → a policy that logs its propensity; send times.

    candidates.py  generate_candidates, CatalogRule   own items, co-occurrence, popularity
    ranking.py     score_candidates                   click-model scores and positions
    policy.py      choose, action_probabilities       epsilon-greedy / softmax / greedy, with propensity
    send_time.py   best_send_hours, hour_scores       best local hours of the week per user

:func:`recommend` chains the first three in batches of users, for the planner.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    "recommend",
    "score_candidates",
    "top_hours",
]


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
        model: the loaded ``click`` model.
        as_of: time of the decision; only events before it are read.
        rng: seeded generator for the policy's draws.
        user_ids: users to decide for; every user with a purchase before ``as_of`` when None.
        policy: defaults to ``EpsilonGreedy(epsilon=0.1, top_k=10)``.
        catalog: the campaign's item restriction.
        max_candidates: keep only each user's best-scored candidates before the policy draws
            (a campaign's ``max_candidates``); all when None.
        batch_users: users per batch (bounds memory at about 60 candidate rows per user).

    Returns:
        :data:`~engine.recommend.policy.CHOICE_COLUMNS` (``user_id``, ``item_id``, ``position``,
        ``score``, ``propensity``, ``policy``); users without any candidate are absent.
    """
    as_of = check_as_of(as_of)
    policy = policy or EpsilonGreedy()
    if user_ids is None:
        user_ids = fetch_df(
            db,
            "SELECT DISTINCT user_id FROM events WHERE ts < $as_of AND list_contains($types, event_type) "
            "AND item_id IS NOT NULL ORDER BY user_id",
            {"as_of": as_of, "types": list(PURCHASE_TYPES)},
        )["user_id"].tolist()
    users = sorted(set(user_ids))
    neighbors = item_neighbors(db, as_of)
    parts = []
    for start in range(0, len(users), batch_users):
        batch = users[start : start + batch_users]
        cands = generate_candidates(db, as_of, batch, catalog=catalog, neighbors=neighbors)
        if cands.empty:
            continue
        scored = score_candidates(model, db, cands, as_of, neighbors=neighbors)
        if max_candidates is not None:
            scored = scored[scored["position"] < max_candidates]
        parts.append(choose(scored, policy, rng))
    if not parts:
        return choose(pd.DataFrame({"user_id": [], "item_id": [], "score": []}), policy, rng)
    return pd.concat(parts, ignore_index=True)
