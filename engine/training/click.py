"""The ``click`` model: how likely a user is to act on a push about an item, bootstrapped from purchases.

Time layout for a run at ``as_of`` with label window N days (default 30, the horizon the evaluation judges)::

    ... | snapshot 3 | snapshot 2 | snapshot 1 | eval snapshot |
                                               ^ as_of - N     ^ as_of

Each snapshot's features read only events before it, its labels the N days after it. The model learns
from the training snapshots (plus closed Pushwise pushes decided before the evaluation snapshot) and
is judged on the last window, which it never saw, against a popularity and a "repeat own items"
ranking; with ``refit_with_eval`` (the default) the served booster is then fit again with that window
added, so it has seen the newest labels (the card's metrics stay those of the held-out fit).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from engine.clock import Clock
from engine.errors import ConfigError
from engine.features.base import PURCHASE_TYPES, Db, check_as_of, fetch_df
from engine.features.click import CLICK_FEATURES
from engine.features.item import item_features
from engine.training.base import TrainResult, best_baseline, data_end, fit_booster, lgb_params, publish
from engine.training.click_data import ClickData, behaviour_rows, purchases_between, push_rows
from engine.training.metrics import auc, log_loss, ranking_metrics

__all__ = ["ClickConfig", "train_click"]

log = logging.getLogger(__name__)

NAME = "click"


@dataclass(frozen=True)
class ClickConfig:
    """Knobs of the click model run.

    Attributes:
        data: how rows and labels are built.
        train_snapshots: behaviour snapshots before the evaluation one (each N days apart).
        negative_keep: share of zero-label behaviour rows kept for training (weighted up by its
            inverse, so probabilities stay calibrated); most rows are zeros and cost time, not signal.
        push_weight: sample weight of a real push outcome relative to a behaviour row.
        num_boost_round, learning_rate, num_leaves, min_data_in_leaf: LightGBM capacity.
        refit_with_eval: after the evaluation, fit the served booster again on the training rows plus
            the evaluation window's (the card's metrics are those of the first fit).
        k: cut-off of Recall@k / NDCG@k.
        seed: seeds negative sampling and LightGBM.
    """

    data: ClickData = field(default_factory=ClickData)
    train_snapshots: int = 3
    negative_keep: float = 0.35
    push_weight: float = 5.0
    num_boost_round: int = 150
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_data_in_leaf: int = 100
    refit_with_eval: bool = True
    k: int = 10
    seed: int = 7
    num_threads: int = 1

    def __post_init__(self) -> None:
        if self.train_snapshots < 1:
            raise ConfigError(f"click train_snapshots must be at least 1, got {self.train_snapshots}")
        if not 0.0 < self.negative_keep <= 1.0:
            raise ConfigError(f"click negative_keep must be in (0, 1], got {self.negative_keep}")


def train_click(
    db: Db, as_of: datetime, models_dir: str | Path, clock: Clock, config: ClickConfig | None = None
) -> TrainResult:
    """Train, evaluate, save and record the click model from data before ``as_of``.

    The windows end at ``as_of`` or, when the purchase data stops earlier, just after the last
    purchase (see :func:`~engine.training.base.data_end`).

    Returns:
        The :class:`TrainResult`; headline NDCG@k on the evaluation window next to the better of
        the two baselines.

    Raises:
        ModelError: there are no training rows (no purchases before the first snapshot).
    """
    config = config or ClickConfig()
    started = time.perf_counter()
    requested = check_as_of(as_of)
    as_of = data_end(db, requested, PURCHASE_TYPES)
    n_days = timedelta(days=config.data.label_days)
    eval_at = as_of - n_days
    snapshots = [eval_at - n_days * i for i in range(config.train_snapshots, 0, -1)]
    rng = np.random.default_rng(config.seed)

    behaviour = pd.concat([behaviour_rows(db, at, config.data, rng) for at in snapshots], ignore_index=True)
    behaviour, weight = _thin_negatives(behaviour, config.negative_keep, rng)
    pushes = push_rows(db, as_of, config.data)
    push_train = pushes[pushes["decided_at"] < eval_at]
    push_eval = pushes[pushes["decided_at"] >= eval_at]
    if len(push_train):
        behaviour = pd.concat([behaviour, push_train], ignore_index=True)
        weight = np.concatenate([weight, np.full(len(push_train), config.push_weight)])
    train = behaviour

    params = lgb_params(
        config.seed,
        num_threads=config.num_threads,
        objective="cross_entropy",  # labels in [0, 1]: category-only purchases are soft positives
        learning_rate=config.learning_rate,
        num_leaves=config.num_leaves,
        min_data_in_leaf=config.min_data_in_leaf,
    )
    features = list(CLICK_FEATURES)
    booster = fit_booster(train, features, train["label"].to_numpy(), params, config.num_boost_round, weight)

    evaluation = behaviour_rows(db, eval_at, config.data, rng)
    evaluation = evaluation.assign(score=booster.predict(evaluation[features]))
    metrics, baselines = _evaluate(db, eval_at, as_of, evaluation, config.k)
    metrics.update(n_train_rows=len(train), n_push_train_rows=len(push_train), n_push_eval_rows=len(push_eval))
    if len(push_eval):
        push_scores = booster.predict(push_eval[features])
        metrics["push_auc"] = auc(push_eval["bought"].to_numpy(), push_scores)
        metrics["push_log_loss"] = log_loss(push_eval["bought"].to_numpy(), push_scores)
    if config.refit_with_eval:
        # The judged window is the freshest one (on Online Retail, the run-up to Christmas starts in it):
        # once it has been scored, the served booster learns from it too. The card's metrics stay those
        # of the fit that never saw it.
        fresh, fresh_weight = _thin_negatives(evaluation.drop(columns="score"), config.negative_keep, rng)
        train = pd.concat([train, fresh, push_eval], ignore_index=True)
        weight = np.concatenate([weight, fresh_weight, np.full(len(push_eval), config.push_weight)])
        booster = fit_booster(train, features, train["label"].to_numpy(), params, config.num_boost_round, weight)
        metrics["n_refit_rows"] = len(train)

    headline = f"ndcg@{config.k}"
    base_name, base_value = best_baseline(baselines, headline)
    card = {
        "task": "P(user acts on an item) — purchase of the item in the next N days as a proxy, "
        "real push clicks when logged",
        "features": features,
        "label": f"1 = item bought in the {config.data.label_days} days after the snapshot, "
        f"{config.data.category_label} = only its category bought, 0 otherwise; push rows: 1 = clicked",
        "parameters": {**params, "num_boost_round": config.num_boost_round},
        "config": asdict(config),
        "seed": config.seed,
        "data_window": {
            "requested_as_of": requested.isoformat(),
            "as_of": as_of.isoformat(),
            "train_snapshots": [s.isoformat() for s in snapshots],
            "label_days": config.data.label_days,
            "eval_snapshot": eval_at.isoformat(),
            "eval_label_window": [eval_at.isoformat(), as_of.isoformat()],
            "served_fit_snapshots": [s.isoformat() for s in (snapshots + [eval_at] if config.refit_with_eval else snapshots)],
        },
        "metrics": metrics,
        "baseline_metrics": baselines,
        "headline": {"metric": headline, "value": metrics[headline], "baseline": base_name, "baseline_value": base_value},
    }
    model = publish(db, models_dir, clock, NAME, booster, card)
    return TrainResult(
        NAME, model.version, model.path, metrics, baselines, headline, metrics[headline], base_name, base_value,
        seconds=time.perf_counter() - started, card=model.card, holdout=evaluation,
    )


def _evaluate(
    db: Db, at: datetime, end: datetime, rows: pd.DataFrame, k: int
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Pointwise (all eval rows) and ranking metrics, for the model and the baselines.

    Ranking is judged on returning buyers: users with history before ``at`` who bought in
    ``[at, end)``; every item they bought there is relevant, whether or not it was a candidate.
    """
    y = rows["bought"].to_numpy()
    metrics: dict[str, float] = {
        "auc": auc(y, rows["score"].to_numpy()),
        "log_loss": log_loss(y, rows["score"].to_numpy()),
        "n_eval_rows": float(len(rows)),
        "eval_positive_rate": float(y.mean()) if len(y) else float("nan"),
    }
    truth, _ = purchases_between(db, at, end)
    truth = truth[truth["user_id"].isin(rows["user_id"].unique())]
    buyers = truth["user_id"].unique()
    cands = rows[~rows["sampled"] & rows["user_id"].isin(buyers)]
    metrics.update(ranking_metrics(_ranked(cands, "score"), truth, k))
    metrics["candidate_recall"] = ranking_metrics(_ranked(cands, "score"), truth, 10**6)[f"recall@{10**6}"]

    pop = item_features(db, at).sort_values(["i_pop_30d", "i_pop_total", "item_id"], ascending=[False, False, True])
    top = pop["item_id"].head(k).to_numpy()
    pop_recs = pd.DataFrame(
        {"user_id": np.repeat(buyers, len(top)), "item_id": np.tile(top, len(buyers)), "rank": np.tile(np.arange(len(top)), len(buyers))}
    )
    baselines = {
        "popularity": {**ranking_metrics(pop_recs, truth, k), "auc": auc(y, rows["i_pop_30d"].to_numpy())},
        "repeat_own_items": {
            **ranking_metrics(_repeat_ranking(db, at, buyers, k), truth, k),
            "auc": auc(y, rows["ui_count"].to_numpy() + 1e-6 * rows["i_pop_30d"].to_numpy()),
        },
    }
    return metrics, baselines


def _thin_negatives(rows: pd.DataFrame, keep: float, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """Keep every labelled row and a ``keep`` share of zero rows; weights undo the thinning."""
    zero = rows["label"].to_numpy() == 0
    kept = ~zero | (rng.random(len(rows)) < keep)
    weight = np.where(zero, 1.0 / keep, 1.0)[kept]
    return rows.loc[kept].reset_index(drop=True), weight


def _ranked(frame: pd.DataFrame, score: str) -> pd.DataFrame:
    ordered = frame.sort_values(["user_id", score, "item_id"], ascending=[True, False, True])
    return ordered.assign(rank=ordered.groupby("user_id").cumcount())[["user_id", "item_id", "rank"]]


def _repeat_ranking(db: Db, at: datetime, users: np.ndarray, k: int) -> pd.DataFrame:
    """Each user's own past items, most bought first (then most recent): the "buy it again" list."""
    return fetch_df(
        db,
        """
        SELECT user_id, item_id,
               row_number() OVER (PARTITION BY user_id ORDER BY count(*) DESC, max(ts) DESC, item_id) - 1 AS rank
        FROM events
        WHERE ts < $at AND list_contains($types, event_type) AND item_id IS NOT NULL
          AND list_contains($users, user_id)
        GROUP BY user_id, item_id
        QUALIFY rank < $k
        """,
        {"at": at, "types": list(PURCHASE_TYPES), "users": list(users), "k": k},
    )
