"""Ranking: score each user's candidates with the click model and order them."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import pandas as pd

from engine.errors import InputError
from engine.features.base import check_as_of
from engine.features.click import click_features

if TYPE_CHECKING:
    from engine.features.base import Db
    from engine.training.artifacts import TrainedModel

__all__ = ["order_scored", "score_candidates"]


def score_candidates(
    model: TrainedModel,
    db: Db,
    candidates: pd.DataFrame,
    as_of: datetime,
    neighbors: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Click probability of every (user, item) candidate, as a push would be scored.

    Args:
        model: the loaded ``click`` model.
        db: the store or a DuckDB connection.
        candidates: at least ``user_id``, ``item_id`` (e.g. from
            :func:`~engine.recommend.candidates.generate_candidates`); other columns are kept.
        as_of: timezone-aware time of the decision; features read only events before it.
        neighbors: :func:`~engine.features.item.item_neighbors` for the same ``as_of`` (reused
            across batches when given).

    Returns:
        ``candidates``' columns plus ``score`` (float in [0, 1]), ordered by user, score
        descending, then item id, with ``position`` (0 = best within the user).

    Raises:
        InputError: ``candidates`` lacks ``user_id`` or ``item_id``.
        ModelError: the model cannot score the features.
    """
    as_of = check_as_of(as_of)
    missing = {"user_id", "item_id"} - set(candidates.columns)
    if missing:
        raise InputError(f"candidates is missing column(s): {', '.join(sorted(missing))}")
    frame = click_features(db, as_of, candidates, neighbors=neighbors, label_is_push=True)
    scored = candidates.reset_index(drop=True).assign(score=model.predict(frame))
    return order_scored(scored)


def order_scored(scored: pd.DataFrame) -> pd.DataFrame:
    """Sort by user, score descending and item id (a deterministic tie-break), and add ``position``."""
    ordered = scored.sort_values(["user_id", "score", "item_id"], ascending=[True, False, True], ignore_index=True)
    return ordered.assign(position=ordered.groupby("user_id", sort=False).cumcount().astype("int64"))
