"""The ``send_time`` model: the chance a user engages in each local hour of the week.

Time layout for a run at ``as_of`` (defaults: 100-day windows, so ``as_of`` = 2011-12-10 splits at
2011-09-01)::

    history ............ | label window            | evaluation window        |
                         ^ train_at                ^ split                    ^ as_of

Training rows are (user, hour of week) for users with at least ``train_min_events`` engagements before
``train_at`` who come back in the label window; the label is "engaged in that hour of the week during
the label window". Evaluation replays the serving path at ``split`` for every returning customer and
asks, per later engagement (one per invoice), whether its local hour was among the top-1 / top-3
predicted hours of day, next to three baselines.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from engine.clock import Clock
from engine.errors import ConfigError
from engine.features.base import PURCHASE_TYPES, Db, check_as_of
from engine.features.send_time import SEND_TIME_FEATURES, hour_shares, user_hours
from engine.features.timing import engagements
from engine.recommend.send_time import hour_scores
from engine.training.artifacts import TrainedModel
from engine.training.base import TrainResult, best_baseline, data_end, fit_booster, lgb_params, publish
from engine.training.metrics import hour_hit_rate, paired_hit_interval

__all__ = ["SendTimeConfig", "train_send_time"]

NAME = "send_time"


@dataclass(frozen=True)
class SendTimeConfig:
    """Knobs of the send-time run.

    Attributes:
        eval_days: length of the held-out window that ends at ``as_of``.
        label_days: length of the training label window that ends where evaluation starts.
        min_events: users with fewer past engagements get population hours (``fallback``).
        train_min_events: past engagements a user needs to give training rows; lower than
            ``min_events`` because ``n_user`` is a feature and light users still teach the prior.
        prior_strength, half_life_days: feature smoothing (see ``engine.features.send_time``).
        num_boost_round, learning_rate, num_leaves, min_data_in_leaf: LightGBM capacity.
        seed: LightGBM seed.
    """

    eval_days: int = 100
    label_days: int = 100
    min_events: int = 3
    train_min_events: int = 1
    prior_strength: float = 2.0
    half_life_days: float = 60.0
    num_boost_round: int = 200
    learning_rate: float = 0.05
    num_leaves: int = 7
    min_data_in_leaf: int = 200
    seed: int = 7
    num_threads: int = 1

    def __post_init__(self) -> None:
        if self.eval_days < 1 or self.label_days < 1:
            raise ConfigError("send_time eval_days and label_days must be at least 1")
        if self.min_events < 1:
            raise ConfigError("send_time min_events must be at least 1")


def train_send_time(
    db: Db, as_of: datetime, models_dir: str | Path, clock: Clock, config: SendTimeConfig | None = None
) -> TrainResult:
    """Train, evaluate, save and record the send-time model from data before ``as_of``.

    The windows end at ``as_of`` or, when purchases stop earlier, just after the last purchase
    (see :func:`~engine.training.base.data_end`); other engagement types count inside them.

    Returns:
        The :class:`TrainResult`; headline ``top3_hour_hit`` next to the best baseline's.

    Raises:
        ModelError: no user qualifies for training.
    """
    config = config or SendTimeConfig()
    started = time.perf_counter()
    requested = check_as_of(as_of)
    as_of = data_end(db, requested, PURCHASE_TYPES)
    split = as_of - timedelta(days=config.eval_days)
    train_at = split - timedelta(days=config.label_days)

    frame = _training_rows(db, train_at, split, config)
    params = lgb_params(
        config.seed,
        num_threads=config.num_threads,
        learning_rate=config.learning_rate,
        num_leaves=config.num_leaves,
        min_data_in_leaf=config.min_data_in_leaf,
    )
    features = list(SEND_TIME_FEATURES)
    booster = fit_booster(frame, features, frame["label"].to_numpy(), params, config.num_boost_round)

    card = {
        "task": "P(user engages in a local hour of the week); rank hours per user",
        "features": features,
        "label": f"1 = at least one engagement in that hour of the week during the {config.label_days} "
        "days after the feature cut-off",
        "parameters": {**params, "num_boost_round": config.num_boost_round},
        "config": asdict(config),
        "seed": config.seed,
        "data_window": {
            "requested_as_of": requested.isoformat(),
            "as_of": as_of.isoformat(),
            "features_as_of": train_at.isoformat(),
            "label_window": [train_at.isoformat(), split.isoformat()],
            "eval_window": [split.isoformat(), as_of.isoformat()],
        },
        "n_train_rows": len(frame),
        "n_train_users": int(frame["user_id"].nunique()),
    }
    unsaved = TrainedModel(NAME, "unsaved", Path(), booster, card)
    metrics, baselines = _evaluate(unsaved, db, split, as_of)
    headline = "top3_hour_hit"
    base_name, base_value = best_baseline(baselines, headline)
    card.update(
        metrics=metrics,
        baseline_metrics=baselines,
        headline={"metric": headline, "value": metrics[headline], "baseline": base_name, "baseline_value": base_value},
    )
    model = publish(db, models_dir, clock, NAME, booster, card)
    return TrainResult(
        NAME, model.version, model.path, metrics, baselines, headline, metrics[headline], base_name, base_value,
        seconds=time.perf_counter() - started, card=model.card,
    )


def _training_rows(db: Db, train_at: datetime, split: datetime, config: SendTimeConfig) -> pd.DataFrame:
    """(user, hour of week) rows of qualified users who engage again before ``split``, with ``label``."""
    shares = hour_shares(db, train_at)
    hours = user_hours(
        db, train_at, shares, prior_strength=config.prior_strength, half_life_days=config.half_life_days
    )
    qualified = hours.users.loc[hours.users["n_events"] >= config.train_min_events, "user_id"]
    later = engagements(db, train_at, split)
    returning = np.intersect1d(qualified.to_numpy(), later["user_id"].unique())
    frame = hours.frame[hours.frame["user_id"].isin(returning)].reset_index(drop=True)
    seen = pd.MultiIndex.from_frame(later[["user_id", "hour_of_week"]].drop_duplicates())
    label = pd.MultiIndex.from_frame(frame[["user_id", "hour_of_week"]]).isin(seen)
    return frame.assign(label=label.astype("float64"))


def _evaluate(
    model: TrainedModel, db: Db, split: datetime, end: datetime
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Hour-of-day hit rates on later engagements of returning customers: model and baselines."""
    shares = hour_shares(db, split)
    hours = user_hours(db, split, shares)  # everyone with history before the split
    observed = engagements(db, split, end, list(hours.users["user_id"]))
    users = observed["user_id"].unique()
    scores = hour_scores(model, db, list(users), split, shares=shares)
    by_hod = scores.assign(local_hour=scores["hour_of_week"] % 24).groupby(["user_id", "local_hour"], as_index=False)[
        "score"
    ].sum()
    predicted = _rank(by_hod, "score")
    fallback_users = set(scores.loc[scores["fallback"], "user_id"])
    top3_how = _rank(scores.rename(columns={"hour_of_week": "local_hour"}), "score")  # rank hours of week
    obs_how = observed.assign(local_hour=observed["hour_of_week"])
    metrics = {
        "top1_hour_hit": hour_hit_rate(predicted, observed, 1),
        "top3_hour_hit": hour_hit_rate(predicted, observed, 3),
        "top3_hour_of_week_hit": hour_hit_rate(top3_how, obs_how, 3),
        "eval_events": float(len(observed)),
        "eval_users": float(len(users)),
        "fallback_event_share": float(observed["user_id"].isin(fallback_users).mean()) if len(observed) else 0.0,
    }
    baselines = _baselines(hours.frame, shares.global_count, users, observed)
    global_rank = _global_rank(shares.global_count, users)
    low, high = paired_hit_interval(predicted, global_rank, observed, k=3, rng=np.random.default_rng(model.card["seed"]))
    metrics.update(top3_hit_minus_global_low=low, top3_hit_minus_global_high=high)
    return metrics, baselines


def _baselines(
    frame: pd.DataFrame, global_count: np.ndarray, users: np.ndarray, observed: pd.DataFrame
) -> dict[str, dict[str, float]]:
    """Global best hours, the user's most frequent hours, and their most recent hours."""
    per_hod = frame.loc[frame["user_id"].isin(users) & (frame["weekday"] == 0)]
    per_hod = per_hod.assign(local_hour=per_hod["hour_of_day"].astype("int64"))
    # Ties (and hours never used) fall back to the global order via a tiny global term.
    frequent = per_hod.assign(score=per_hod["hod_count"] + 1e-6 * per_hod["g_hod"])
    recent = per_hod.assign(score=-per_hod["hod_last_days"].fillna(1e9) + 1e-6 * per_hod["g_hod"])
    rankings = {
        "global_best_hours": _global_rank(global_count, users),
        "own_most_frequent_hours": _rank(frequent[["user_id", "local_hour", "score"]], "score"),
        "own_last_hours": _rank(recent[["user_id", "local_hour", "score"]], "score"),
    }
    return {
        name: {"top1_hour_hit": hour_hit_rate(r, observed, 1), "top3_hour_hit": hour_hit_rate(r, observed, 3)}
        for name, r in rankings.items()
    }


def _global_rank(global_count: np.ndarray, users: np.ndarray) -> pd.DataFrame:
    """The same 24 hours for every user, ranked by raw engagement counts (the "global best hours")."""
    g_hod = global_count.reshape(7, 24).sum(axis=0)
    table = pd.DataFrame(
        {"user_id": np.repeat(users, 24), "local_hour": np.tile(np.arange(24), len(users)), "score": np.tile(g_hod, len(users))}
    )
    return _rank(table, "score")


def _rank(table: pd.DataFrame, score: str) -> pd.DataFrame:
    ordered = table.sort_values(["user_id", score, "local_hour"], ascending=[True, False, True])
    return ordered.assign(rank=ordered.groupby("user_id").cumcount())[["user_id", "local_hour", "rank"]]
