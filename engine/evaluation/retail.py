"""Online Retail evaluations of the served models: next-month purchase recommendations and send hours, beside baselines.

Both replay the product's own path on a store holding the shipped data: the ``click`` model is
trained by :func:`~engine.training.click.train_click` and its ranked lists come from
:func:`~engine.recommend.rank_items` (what the planner's policy draws from); the ``send_time``
model is trained by :func:`~engine.training.send_time.train_send_time` and scored by
:func:`~engine.recommend.send_time.hour_scores` (what the planner's hour ranker calls). Every
baseline is computed in the same run on the same split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from engine.clock import FixedClock
from engine.evaluation.baselines import als_scores, cooccurrence_scores
from engine.evaluation.metrics import bootstrap_mean, per_user_ranking, top_k_hits
from engine.features.send_time import hour_shares
from engine.features.timing import engagements
from engine.recommend import rank_items
from engine.recommend.send_time import hour_scores
from engine.store import Store
from engine.training.artifacts import load_model
from engine.training.click import ClickConfig, train_click
from engine.training.send_time import SendTimeConfig, train_send_time

__all__ = ["MetricCI", "RecommendEval", "SendTimeEval", "evaluate_recommendations", "evaluate_send_time"]

RECOMMEND_SPLIT = pd.Timestamp("2011-11-01")
SEND_TIME_SPLIT = pd.Timestamp("2011-09-01")
#: The shop's wall clock: the splits are local dates, the purchases frame is in this zone.
SHOP_ZONE = ZoneInfo("Europe/London")
ALS_FACTORS, ALS_ITERATIONS = 64, 15


@dataclass(frozen=True)
class MetricCI:
    """A mean with its bootstrap 95 % interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class RecommendEval:
    """Recall@10 and NDCG@10 per method (``model`` and the baselines), on all and on new items only.

    ``candidate_coverage`` is the share of the judged purchases that were among the model's
    candidates at all (the ceiling any ranking of them could reach, before the cut at k).
    """

    recall: dict[str, MetricCI]
    ndcg: dict[str, MetricCI]
    new_recall: dict[str, MetricCI]
    n_users: int
    repeat_share: float
    candidate_coverage: float = float("nan")
    extra: dict[str, float] = field(default_factory=dict)


def _ranked(scores: pd.DataFrame, k: int) -> pd.DataFrame:
    s = scores.sort_values(["user_id", "score", "item_id"], ascending=[True, False, True])
    s["rank"] = s.groupby("user_id").cumcount()
    return s[s["rank"] < k]


def _dense_top(users: np.ndarray, items: pd.Index, scores: np.ndarray, k: int, exclude: pd.DataFrame | None) -> pd.DataFrame:
    if exclude is not None:
        scores = scores.copy()
        r, c = np.searchsorted(users, exclude["user_id"].to_numpy()), items.get_indexer(exclude["item_id"])
        ok = c >= 0
        scores[r[ok], c[ok]] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return pd.DataFrame({"user_id": np.repeat(users, k), "item_id": items.to_numpy()[top.ravel()],
                         "rank": np.tile(np.arange(k), len(users))})


def _baselines(past: pd.DataFrame, users: np.ndarray, at: pd.Timestamp, k: int, seed: int,
               exclude: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    recent = past[past["ts"] >= at - pd.Timedelta(days=30)]
    pop = recent.groupby("item_id")["user_id"].nunique().rename("score").reset_index()
    if exclude is not None:  # new items only: the most popular items each user has not bought
        pop_rows = pd.DataFrame({"user_id": np.repeat(users, 200), "item_id": np.tile(pop.nlargest(200, "score")["item_id"], len(users)),
                                 "score": np.tile(pop.nlargest(200, "score")["score"], len(users))})
        pop_rows = pop_rows.merge(exclude.assign(own=1), how="left", on=["user_id", "item_id"])
        popularity = _ranked(pop_rows[pop_rows["own"].isna()], k)
    else:
        top = pop.nlargest(k, "score")
        popularity = pd.DataFrame({"user_id": np.repeat(users, len(top)), "item_id": np.tile(top["item_id"], len(users)),
                                   "rank": np.tile(np.arange(len(top)), len(users))})
    out = {"popularity": popularity}
    mine = past[past["user_id"].isin(users)].drop_duplicates(["user_id", "item_id", "invoice"])
    own = mine.groupby(["user_id", "item_id"]).agg(n=("invoice", "size"), last=("ts", "max")).reset_index()
    # Ties among a user's own items go to the most recently bought one.
    own["score"] = own["n"] + (own["last"] - past["ts"].min()).dt.total_seconds() / 1e9
    if exclude is None:
        out["repeat"] = _ranked(own, k)
    items, co = cooccurrence_scores(past, users)
    out["cooccurrence"] = _dense_top(users, items, co, k, exclude)
    items, als = als_scores(past, users, ALS_FACTORS, ALS_ITERATIONS, seed)
    out["als"] = _dense_top(users, items, als, k, exclude)
    return out


def _shop_time(at: pd.Timestamp) -> datetime:
    return at.tz_localize(SHOP_ZONE).to_pydatetime()


def evaluate_recommendations(store: Store, purchases: pd.DataFrame, rng: np.random.Generator, models_dir: Path,
                             at: pd.Timestamp = RECOMMEND_SPLIT, horizon_days: int = 30, k: int = 10,
                             n_boot: int = 1000, config: ClickConfig | None = None) -> RecommendEval:
    """Recall@k and NDCG@k of the served recommender and every baseline for the ``horizon_days`` after ``at``.

    Args:
        store: holds the shipped events (the click model trains on, and scores from, it).
        purchases: the same purchases as a frame: ``user_id``, ``item_id``, ``invoice``, ``ts`` (shop
            local time), ``quantity``; defines the judged customers, the truth and the baselines.
        rng: draws the bootstrap resamples (users).
        models_dir: where the click model trained as of ``at`` is saved.
        at: train on purchases before it (a shop-local time).
        horizon_days: the evaluation window after ``at``, in days.
        k: cut-off.
        n_boot: bootstrap resamples.
        config: the click model's configuration (the product's defaults when None).
    """
    config = config or ClickConfig()
    as_of = _shop_time(at)
    past = purchases[purchases["ts"] < at]
    later = purchases[(purchases["ts"] >= at) & (purchases["ts"] < at + pd.Timedelta(days=horizon_days))]
    users = np.intersect1d(past["user_id"].unique(), later["user_id"].unique())
    truth = later[later["user_id"].isin(users)][["user_id", "item_id"]].drop_duplicates()
    owned = past[past["user_id"].isin(users)][["user_id", "item_id"]].drop_duplicates()
    is_repeat = truth.merge(owned.assign(own=1), how="left", on=["user_id", "item_id"])["own"].notna().to_numpy()
    new_truth = truth[~is_repeat]

    trained = train_click(store, as_of, models_dir, FixedClock(as_of), config)
    ranked = rank_items(store.con, load_model(models_dir, "click", trained.version), as_of, list(users))
    ranked = ranked.rename(columns={"position": "rank"})[["user_id", "item_id", "score", "rank"]]
    coverage = truth.merge(ranked[["user_id", "item_id"]], on=["user_id", "item_id"]).shape[0] / len(truth)
    methods = {"model": ranked[ranked["rank"] < k], **_baselines(past, users, at, k, config.seed, None)}
    fresh = ranked.merge(owned.assign(own=1), how="left", on=["user_id", "item_id"])
    new_methods = {"model": _ranked(fresh[fresh["own"].isna()], k), **_baselines(past, users, at, k, config.seed, owned)}
    recall, ndcg, new_recall = {}, {}, {}
    for name, recs in methods.items():
        per = per_user_ranking(recs, truth, k)
        recall[name] = MetricCI(*bootstrap_mean(per["recall"].to_numpy(), rng, n_boot))
        ndcg[name] = MetricCI(*bootstrap_mean(per["ndcg"].to_numpy(), rng, n_boot))
    for name, recs in new_methods.items():
        per = per_user_ranking(recs, new_truth, k)
        new_recall[name] = MetricCI(*bootstrap_mean(per["recall"].to_numpy(), rng, n_boot))
    return RecommendEval(recall, ndcg, new_recall, len(users), float(is_repeat.mean()), float(coverage))


@dataclass(frozen=True)
class SendTimeEval:
    """Top-1 / top-3 hour hit rates per method (``model`` and the baselines), and hour-of-week hit rates.

    ``hour_model`` is the hour-of-day estimator the training chose (on data before the split).
    """

    top1: dict[str, MetricCI]
    top3: dict[str, MetricCI]
    hour_of_week_top3: dict[str, MetricCI]
    n_invoices: int
    n_users: int
    hour_model: dict[str, float] = field(default_factory=dict)


def _count_ranks(history: pd.DataFrame, targets: pd.DataFrame, slot_of: str, n_slots: int) -> dict[str, pd.DataFrame]:
    """Global, own-most-frequent and last-slot rankings for each target (slot = hour or hour of week)."""
    users = pd.Index(np.sort(history["user_id"].unique()))
    u = users.get_indexer(history["user_id"])
    own = np.zeros((len(users), n_slots))
    np.add.at(own, (u, history[slot_of].to_numpy()), 1)
    g = own.sum(axis=0) / own.sum()
    last = np.zeros_like(own)
    tail = history.sort_values("ts").groupby("user_id")[slot_of].last()
    last[users.get_indexer(tail.index), tail.to_numpy()] = 1
    r = users.get_indexer(targets["user_id"])
    # Ties (and users' unseen slots) fall back on the global order.
    tables = {"global": np.tile(g, (len(r), 1)), "own": own[r] + 1e-3 * g, "last": last[r] + 1e-3 * g}
    out = {}
    for name, scores in tables.items():
        order = np.argsort(-scores, axis=1, kind="stable")[:, :3]
        out[name] = pd.DataFrame({"target": np.repeat(np.arange(len(r)), 3), slot_of: order.ravel(),
                                  "rank": np.tile(np.arange(3), len(r))})
    return out


def _model_ranks(scores: pd.DataFrame, targets: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The model's top-3 hours of the target's weekday, and its top-3 hours of the week, per target."""
    s = scores.assign(weekday=scores["hour_of_week"] // 24, hour=scores["hour_of_week"] % 24)
    day = s.sort_values(["user_id", "weekday", "score", "hour"], ascending=[True, True, False, True])
    day = day.assign(rank=day.groupby(["user_id", "weekday"]).cumcount())
    day = day[day["rank"] < 3]
    week = s.sort_values(["user_id", "score", "hour_of_week"], ascending=[True, False, True])
    week = week.assign(rank=week.groupby("user_id").cumcount())
    week = week[week["rank"] < 3].rename(columns={"hour_of_week": "how"})
    keyed = targets.assign(target=np.arange(len(targets)))[["target", "user_id", "weekday"]]
    by_day = keyed.merge(day[["user_id", "weekday", "hour", "rank"]], on=["user_id", "weekday"])
    by_week = keyed.merge(week[["user_id", "how", "rank"]], on="user_id")
    return by_day[["target", "hour", "rank"]], by_week[["target", "how", "rank"]]


def evaluate_send_time(store: Store, rng: np.random.Generator, models_dir: Path, at: pd.Timestamp = SEND_TIME_SPLIT,
                       n_boot: int = 1000, config: SendTimeConfig | None = None,
                       until: pd.Timestamp | None = None) -> SendTimeEval:
    """Is each later engagement's local hour among the customer's top-1 / top-3 predicted hours? Model and baselines.

    Every engagement (one per invoice on Online Retail) at or after ``at`` of a customer with one
    before ``at`` counts once; hours are the customer's local hours, for the model and the baselines
    alike. The model is trained on data before ``at``, its features are frozen at ``at``, and it
    ranks the hours of the engagement's weekday (a push is planned for a day); the hour-of-week
    figures rank all 168 hours instead. The intervals resample customers. ``until`` (shop-local) ends
    the judged window early, for validation splits that must stop before the test window.
    """
    config = config or SendTimeConfig()
    as_of = _shop_time(at)
    trained = train_send_time(store, as_of, models_dir, FixedClock(as_of), config)
    model = load_model(models_dir, "send_time", trained.version)
    history = engagements(store.con, datetime(1970, 1, 1, tzinfo=SHOP_ZONE), as_of)
    end = _shop_time(until) if until is not None else datetime(2100, 1, 1, tzinfo=SHOP_ZONE)
    later = engagements(store.con, as_of, end, list(history["user_id"].unique()))
    test = later.rename(columns={"local_hour": "hour", "hour_of_week": "how"}).reset_index(drop=True)
    past = history.rename(columns={"local_hour": "hour", "hour_of_week": "how"})
    observed = test.assign(target=np.arange(len(test)))
    scores = hour_scores(model, store.con, list(test["user_id"].unique()), as_of, shares=hour_shares(store.con, as_of))
    by_day, by_week = _model_ranks(scores, test)
    ranks = {"model": by_day, **_count_ranks(past, test, "hour", 24)}
    clusters = test["user_id"]
    top1, top3 = {}, {}
    for name, ranked in ranks.items():
        top1[name] = MetricCI(*bootstrap_mean(top_k_hits(ranked, observed, "hour", 1), rng, n_boot, clusters))
        top3[name] = MetricCI(*bootstrap_mean(top_k_hits(ranked, observed, "hour", 3), rng, n_boot, clusters))
    how = {name: MetricCI(*bootstrap_mean(top_k_hits(r, observed, "how", 3), rng, n_boot, clusters))
           for name, r in {"model": by_week, **_count_ranks(past, test, "how", 168)}.items()}
    return SendTimeEval(top1, top3, how, len(test), int(test["user_id"].nunique()), model.card.get("hour_model", {}))
