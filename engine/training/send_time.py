"""The ``send_time`` model: which local hour of which weekday a user is likely to engage in.

It has two parts. The hours of a day are ranked by the user's own hour-of-day posterior
(:func:`~engine.features.send_time.hour_posterior`: recency-weighted, kernel-smoothed counts shrunk
toward the population), whose kernel, half-life and prior strength are chosen on validation origins
before the held-out window. The weekdays are ranked by a LightGBM booster over per-(user, weekday)
features, trained on several origins (features frozen at each) so that it sees the spread of history
lengths and horizons it is served with. The score of an hour of the week is the booster's
probability for its weekday times the posterior share of its hour. Learned rankers of the hours
themselves (pointwise, LambdaRank, residual boosting) lost to the posterior on validation
(docs/decisions/013-evaluating-the-served-models.md).

One fit at a cut-off ``end`` (defaults: origins 90, 60 and 30 days before it)::

    history ... | origin 3 | origin 2 | origin 1 |
                                                ^ end

The hour posterior is tuned on each origin's later engagements up to ``end``; the booster's rows are
labelled by the ``label_days`` after each origin (never past ``end``). A run fits once with ``end`` =
the split (``as_of`` − ``eval_days``) and is judged on ``[split, as_of)``: the card's metrics replay
the serving path at the split for every returning customer and ask, per later engagement (one per
invoice), whether its local hour was among the top-1 / top-3 predicted hours of day, next to three
baselines. It then fits again with ``end`` = ``as_of``: that is the saved model.
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
from engine.features.send_time import HOUR_FACTOR, SEND_TIME_FEATURES, hour_shares, user_hours
from engine.features.timing import engagements
from engine.recommend.send_time import hour_scores
from engine.training.artifacts import TrainedModel
from engine.training.base import TrainResult, best_baseline, data_end, fit_booster, lgb_params, publish
from engine.training.hour_tuning import HourModel, tune_hour_model
from engine.training.metrics import hour_hit_rate, paired_hit_interval

__all__ = ["SendTimeConfig", "train_send_time"]

NAME = "send_time"


@dataclass(frozen=True)
class SendTimeConfig:
    """Knobs of the send-time run.

    Attributes:
        eval_days: length of the held-out window that ends at ``as_of``.
        label_days: longest label window after an origin (it also stops at the fit's cut-off).
        origins: how many origins (feature cut-offs) feed tuning and the weekday booster.
        origin_step_days: days between consecutive origins, counted back from the split.
        min_events: users with fewer past engagements get population hours (``fallback``).
        train_min_events: past engagements a user needs to give training rows; lower than
            ``min_events`` because ``n_user`` is a feature and light users still teach the prior.
        prior_strength: smoothing of the share features (see ``engine.features.send_time``).
        hour_kernels, hour_half_lives, hour_priors: the grid the hour posterior is chosen from.
        num_boost_round, learning_rate, num_leaves, min_data_in_leaf: LightGBM capacity.
        seed: LightGBM seed.
    """

    eval_days: int = 100
    label_days: int = 100
    origins: int = 3
    origin_step_days: int = 30
    min_events: int = 1
    train_min_events: int = 1
    prior_strength: float = 2.0
    hour_kernels: tuple[float, ...] = (0.0, 0.15, 0.3, 0.5)
    hour_half_lives: tuple[float, ...] = (30.0, 60.0, 90.0, 150.0, 365.0)
    hour_priors: tuple[float, ...] = (2.0, 4.0, 8.0, 16.0, 32.0)
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
        if self.origins < 1 or self.origin_step_days < 1:
            raise ConfigError("send_time origins and origin_step_days must be at least 1")
        if not (self.hour_kernels and self.hour_half_lives and self.hour_priors):
            raise ConfigError("send_time hour_kernels, hour_half_lives and hour_priors must not be empty")


def train_send_time(
    db: Db, as_of: datetime, models_dir: str | Path, clock: Clock, config: SendTimeConfig | None = None
) -> TrainResult:
    """Tune, train, evaluate, save and record the send-time model from data before ``as_of``.

    The procedure runs twice: fitted on the data before the split and judged on the held-out window
    (the card's metrics), then fitted again on everything before ``as_of`` (the saved model). The
    windows end at ``as_of`` or, when purchases stop earlier, just after the last purchase (see
    :func:`~engine.training.base.data_end`); other engagement types count inside them.

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

    held_out = _fit(db, split, config)
    metrics, baselines = _evaluate(held_out, db, split, as_of)
    model = _fit(db, as_of, config)
    headline = "top3_hour_hit"
    base_name, base_value = best_baseline(baselines, headline)
    card = {
        **model.card,
        "data_window": {
            "requested_as_of": requested.isoformat(),
            "as_of": as_of.isoformat(),
            "origins": model.card["origins"],
            "eval_window": [split.isoformat(), as_of.isoformat()],
            "eval_model": "the same procedure fitted on the data before the eval window",
            "eval_model_hour_model": held_out.card["hour_model"],
        },
        "metrics": metrics,
        "baseline_metrics": baselines,
        "headline": {"metric": headline, "value": metrics[headline], "baseline": base_name, "baseline_value": base_value},
    }
    card.pop("origins")
    saved = publish(db, models_dir, clock, NAME, model.booster, card)
    return TrainResult(
        NAME, saved.version, saved.path, metrics, baselines, headline, metrics[headline], base_name, base_value,
        seconds=time.perf_counter() - started, card=saved.card,
    )


def _fit(db: Db, end: datetime, config: SendTimeConfig) -> TrainedModel:
    """Tune the hour posterior and train the weekday booster on origins before ``end`` (an unsaved model)."""
    origins = [end - timedelta(days=config.origin_step_days * k) for k in range(config.origins, 0, -1)]
    hour = tune_hour_model(db, origins, end, config.hour_kernels, config.hour_half_lives, config.hour_priors)
    frame = pd.concat([_training_rows(db, o, min(o + timedelta(days=config.label_days), end), hour, config)
                       for o in origins], ignore_index=True)
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
        "task": "rank local hours of the week per user: P(engages on the weekday) × posterior share of the hour",
        "features": features,
        "hour_factor": HOUR_FACTOR,
        "hour_model": hour.card(),
        "label": f"booster: 1 = at least one engagement on that weekday during the {config.label_days} days "
        "after an origin (stopping at the last origin's window end)",
        "parameters": {**params, "num_boost_round": config.num_boost_round},
        "config": asdict(config),
        "seed": config.seed,
        "origins": [o.isoformat() for o in origins],
        "n_train_rows": len(frame),
        "n_train_users": int(frame["user_id"].nunique()),
    }
    return TrainedModel(NAME, "unsaved", Path(), booster, card)


def _training_rows(db: Db, origin: datetime, end: datetime, hour: HourModel, config: SendTimeConfig) -> pd.DataFrame:
    """One (user, weekday) row per qualified user who engages again in ``[origin, end)``, with ``label``."""
    shares = hour_shares(db, origin)
    hours = user_hours(db, origin, shares, prior_strength=config.prior_strength, half_life_days=hour.half_life_days)
    qualified = hours.users.loc[hours.users["n_events"] >= config.train_min_events, "user_id"]
    later = engagements(db, origin, end)
    returning = np.intersect1d(qualified.to_numpy(), later["user_id"].unique())
    frame = hours.frame[hours.frame["user_id"].isin(returning) & (hours.frame["hour_of_day"] == 0)]
    seen = pd.MultiIndex.from_frame(later[["user_id", "weekday"]].drop_duplicates())
    label = pd.MultiIndex.from_arrays([frame["user_id"], frame["weekday"].astype("int64")]).isin(seen)
    return frame.reset_index(drop=True).assign(label=label.astype("float64"), snapshot=origin)


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
