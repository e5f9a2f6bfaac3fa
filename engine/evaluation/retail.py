"""Online Retail evaluations: next-month purchase recommendations and send hours, each beside its baselines on one split."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from engine.evaluation.metrics import bootstrap_mean, per_user_ranking, top_k_hits
from engine.recommend.hour_ranker import hour_rows, rank_hours, train_hour_ranker
from engine.recommend.hybrid import HybridConfig, als_scores, cooccurrence_scores, recommend_hybrid

__all__ = ["MetricCI", "RecommendEval", "SendTimeEval", "evaluate_recommendations", "evaluate_send_time"]

RECOMMEND_SPLIT = pd.Timestamp("2011-11-01")
SEND_TIME_SPLIT = pd.Timestamp("2011-09-01")


@dataclass(frozen=True)
class MetricCI:
    """A mean with its bootstrap 95 % interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class RecommendEval:
    """Recall@10 and NDCG@10 per method (``hybrid`` and the baselines), on all and on new items only."""

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


def _baselines(past: pd.DataFrame, users: np.ndarray, at: pd.Timestamp, k: int, config: HybridConfig,
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
    items, als = als_scores(past, users, config.als_factors, config.als_iterations, config.seed)
    out["als"] = _dense_top(users, items, als, k, exclude)
    return out


def evaluate_recommendations(purchases: pd.DataFrame, rng: np.random.Generator, at: pd.Timestamp = RECOMMEND_SPLIT,
                             horizon_days: int = 30, k: int = 10, n_boot: int = 1000,
                             config: HybridConfig | None = None) -> RecommendEval:
    """Recall@k and NDCG@k of the hybrid recommender and every baseline for the ``horizon_days`` after ``at``.

    Args:
        purchases: ``user_id``, ``item_id``, ``invoice``, ``ts`` (local), ``quantity``.
        rng: draws the bootstrap resamples (users).
        at: train on purchases before it.
        horizon_days: the evaluation window after ``at``, in days.
        k: cut-off.
        n_boot: bootstrap resamples.
        config: the hybrid recommender's configuration.
    """
    config = config or HybridConfig()
    past = purchases[purchases["ts"] < at]
    later = purchases[(purchases["ts"] >= at) & (purchases["ts"] < at + pd.Timedelta(days=horizon_days))]
    users = np.intersect1d(past["user_id"].unique(), later["user_id"].unique())
    truth = later[later["user_id"].isin(users)][["user_id", "item_id"]].drop_duplicates()
    owned = past[past["user_id"].isin(users)][["user_id", "item_id"]].drop_duplicates()
    is_repeat = truth.merge(owned.assign(own=1), how="left", on=["user_id", "item_id"])["own"].notna().to_numpy()
    new_truth = truth[~is_repeat]
    hybrid = recommend_hybrid(purchases, users, at, 5 * k, config)
    methods = {"hybrid": hybrid[hybrid["rank"] < k], **_baselines(past, users, at, k, config, None)}
    fresh = hybrid.merge(owned.assign(own=1), how="left", on=["user_id", "item_id"])
    new_methods = {"hybrid": _ranked(fresh[fresh["own"].isna()], k), **_baselines(past, users, at, k, config, owned)}
    recall, ndcg, new_recall = {}, {}, {}
    for name, recs in methods.items():
        per = per_user_ranking(recs, truth, k)
        recall[name] = MetricCI(*bootstrap_mean(per["recall"].to_numpy(), rng, n_boot))
        ndcg[name] = MetricCI(*bootstrap_mean(per["ndcg"].to_numpy(), rng, n_boot))
    for name, recs in new_methods.items():
        per = per_user_ranking(recs, new_truth, k)
        new_recall[name] = MetricCI(*bootstrap_mean(per["recall"].to_numpy(), rng, n_boot))
    return RecommendEval(recall, ndcg, new_recall, len(users), float(is_repeat.mean()))


@dataclass(frozen=True)
class SendTimeEval:
    """Top-1 / top-3 hour hit rates per method (``model`` and the baselines), and hour-of-week hit rates."""

    top1: dict[str, MetricCI]
    top3: dict[str, MetricCI]
    hour_of_week_top3: dict[str, MetricCI]
    n_invoices: int
    n_users: int


def _invoices(purchases: pd.DataFrame) -> pd.DataFrame:
    return purchases.groupby("invoice").agg(user_id=("user_id", "first"), ts=("ts", "min")).reset_index()


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


def evaluate_send_time(purchases: pd.DataFrame, rng: np.random.Generator, at: pd.Timestamp = SEND_TIME_SPLIT,
                       n_boot: int = 1000, window_days: int = 180, seed: int = 7) -> SendTimeEval:
    """Is each later invoice's hour among the customer's top-1 / top-3 predicted hours? Model and baselines.

    Every invoice at or after ``at`` of a customer with an invoice before ``at`` counts once; the
    intervals resample customers. The model knows the invoice's weekday (a push is planned for a day).
    """
    inv = _invoices(purchases)
    inv["hour"], inv["how"] = inv["ts"].dt.hour, inv["ts"].dt.day_of_week * 24 + inv["ts"].dt.hour
    past = inv[inv["ts"] < at]
    test = inv[(inv["ts"] >= at) & inv["user_id"].isin(past["user_id"])].reset_index(drop=True)
    targets = pd.DataFrame({"user_id": test["user_id"], "dow": test["ts"].dt.day_of_week, "hour": test["hour"]})
    observed = test.assign(target=np.arange(len(test)))
    booster = train_hour_ranker(inv[["user_id", "ts"]], at, window_days, seed)
    ranks = {"model": rank_hours(booster, hour_rows(inv[["user_id", "ts"]], targets, at)),
             **_count_ranks(past, test, "hour", 24)}
    top1, top3 = {}, {}
    for name, ranked in ranks.items():
        top1[name] = MetricCI(*bootstrap_mean(top_k_hits(ranked, observed, "hour", 1), rng, n_boot, test["user_id"]))
        top3[name] = MetricCI(*bootstrap_mean(top_k_hits(ranked, observed, "hour", 3), rng, n_boot, test["user_id"]))
    how = {name: MetricCI(*bootstrap_mean(top_k_hits(r, observed, "how", 3), rng, n_boot, test["user_id"]))
           for name, r in _count_ranks(past, test, "how", 168).items()}
    return SendTimeEval(top1, top3, how, len(test), int(test["user_id"].nunique()))
