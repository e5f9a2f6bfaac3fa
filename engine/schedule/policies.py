"""The planner's item and send-hour choices backed by the latest trained models."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from engine.errors import ModelError
from engine.recommend import CatalogRule, EpsilonGreedy, best_send_hours, recommend
from engine.schedule.campaign import Campaign
from engine.schedule.planner import HourRanker, ItemChooser
from engine.store import Store
from engine.training.artifacts import TrainedModel, load_model

__all__ = ["model_hour_ranker", "model_item_chooser"]


def _load(models_dir: Path, name: str) -> TrainedModel:
    try:
        # the version scheduled retraining promoted; the newest one until anything was promoted
        return load_model(models_dir, name, "champion")
    except ModelError as exc:
        raise ModelError(str(exc)) from None


def model_item_chooser(models_dir: Path, top_k: int = 10) -> ItemChooser:
    """One item per user from the latest ``click`` model, epsilon-greedy with the campaign's epsilon."""

    def choose(store: Store, user_ids: list[str], c: Campaign, as_of: datetime,
               rng: np.random.Generator) -> pd.DataFrame:
        model = _load(models_dir, "click")
        catalog = CatalogRule(
            item_ids=c.candidate_items or None,
            sources=(c.audience_source,) if c.audience_source and not c.candidate_items else None,
        )
        picks = recommend(store.con, model, as_of, rng, user_ids,
                          policy=EpsilonGreedy(epsilon=c.epsilon, top_k=top_k), catalog=catalog)
        return picks.assign(model_version=f"click/{model.version}")

    return choose


def model_hour_ranker(models_dir: Path, k: int = 3) -> HourRanker:
    """Each user's ``k`` best local hours of the week from the latest ``send_time`` model."""

    def rank(store: Store, user_ids: list[str], as_of: datetime) -> pd.DataFrame:
        model = _load(models_dir, "send_time")
        hours = best_send_hours(model, store.con, user_ids, as_of, k=k)
        return hours[["user_id", "rank", "weekday", "local_hour"]]

    return rank
