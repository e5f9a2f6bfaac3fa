"""The whole recommendation path on a synthetic shop with a trained click model."""

from __future__ import annotations

import numpy as np
import pandas as pd

from engine.recommend import (
    CHOICE_COLUMNS,
    CatalogRule,
    Greedy,
    Softmax,
    generate_candidates,
    recommend,
    score_candidates,
)


def test_ranking_puts_planted_favourites_on_top(shop) -> None:
    store, truth, model, as_of = shop
    users = truth.users["user_id"].head(40).tolist()
    ranked = score_candidates(model, store, generate_candidates(store, as_of, users), as_of)
    assert ranked["score"].between(0, 1).all()
    assert (ranked.groupby("user_id")["position"].min() == 0).all()
    top3 = ranked[ranked["position"] < 3].merge(truth.favourites.assign(fav=True), how="left")
    assert top3["fav"].fillna(False).astype(bool).mean() > 0.7  # favourites are 3 of ~40 candidates


def test_recommend_picks_one_logged_item_per_user(shop) -> None:
    store, truth, model, as_of = shop
    picks = recommend(store, model, as_of, np.random.default_rng(0), batch_users=25)
    assert list(picks.columns) == list(CHOICE_COLUMNS)
    assert picks["user_id"].is_unique and len(picks) == truth.users["n_baskets"].gt(0).sum()
    assert picks["propensity"].between(0, 1).all() and (picks["propensity"] > 0).all()
    assert picks["policy"].unique().tolist() == ["epsilon_greedy(epsilon=0.1,top_k=10)"]
    # ε = 0.1 over the top 10: the top item is chosen with probability 0.91
    assert 0.8 < (picks["position"] == 0).mean() <= 1.0
    again = recommend(store, model, as_of, np.random.default_rng(0), batch_users=1000)
    pd.testing.assert_frame_equal(picks, again)  # batching does not change the draws


def test_recommend_respects_the_catalog_and_policy(shop) -> None:
    store, truth, model, as_of = shop
    allowed = tuple(truth.items["item_id"].head(5))
    picks = recommend(store, model, as_of, np.random.default_rng(0), ["syn:u0001", "nobody"],
                      policy=Greedy(), catalog=CatalogRule(item_ids=allowed))
    assert set(picks["item_id"]) <= set(allowed)
    assert picks["user_id"].tolist() == ["nobody", "syn:u0001"]
    assert (picks["propensity"] == 1.0).all() and (picks["position"] == 0).all()


def test_max_candidates_limits_the_choice_to_the_best_scored(shop) -> None:
    store, _, model, as_of = shop
    picks = recommend(store, model, as_of, np.random.default_rng(0), policy=Softmax(temperature=100.0, top_k=50),
                      max_candidates=2)
    assert picks["position"].max() <= 1
    assert (picks["propensity"] >= 0.4).all()  # near-uniform over 2 items


def test_no_users_no_rows(shop) -> None:
    store, _, model, as_of = shop
    picks = recommend(store, model, as_of, np.random.default_rng(0), [])
    assert picks.empty and list(picks.columns) == list(CHOICE_COLUMNS)
