"""The send-time model recovers each user's planted local hour; the tuned hour estimator is the one served."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from training_setup import AS_OF, START

from engine.features.send_time import hour_posterior, hour_prior, hour_shares, user_hours
from engine.features.timing import engagements
from engine.recommend.send_time import hour_scores
from engine.training import best_send_hours, load_model
from engine.training.hour_tuning import hour_grid_hits


def test_best_send_hours_recover_the_planted_local_hour(trained, synthetic) -> None:
    store, models, _ = trained
    _, truth = synthetic
    model = load_model(models, "send_time")
    users = truth.users[truth.users["n_baskets"] >= 3]
    best = best_send_hours(model, store, list(users["user_id"]), AS_OF, k=3)
    top = best[best["rank"] == 0].merge(users, on="user_id")
    assert len(top) == len(users) and not top["fallback"].any()
    # Four planted hours (8, 12, 19, 21) in four time zones: global hours could match at most ~1/4.
    assert (top["local_hour"] == top["best_hour"]).mean() > 0.95
    assert list(best.columns) == ["user_id", "rank", "hour_of_week", "local_hour", "weekday", "score", "fallback"]
    assert (best["hour_of_week"] == best["weekday"] * 24 + best["local_hour"]).all()
    assert best.groupby("user_id")["rank"].apply(list).map(lambda r: r == [0, 1, 2]).all()


def test_only_users_without_enough_history_get_flagged_population_hours(trained, synthetic) -> None:
    store, models, _ = trained
    _, truth = synthetic
    model = load_model(models, "send_time")
    light = truth.users[truth.users["n_baskets"] < 3]["user_id"].tolist()
    assert light  # the generator plants a few
    # By default (min_events 1) a light user is scored: the posterior shrinks them toward everyone.
    best = best_send_hours(model, store, [*light, "never-seen"], AS_OF, k=2)
    assert set(best["user_id"]) == {*light, "never-seen"}
    assert set(best.loc[best["fallback"], "user_id"]) == {"never-seen"}
    never = best[best["user_id"] == "never-seen"]
    assert never["score"].is_monotonic_decreasing and len(never) == 2
    strict = replace(model, card={**model.card, "config": {**model.card["config"], "min_events": 3}})
    assert best_send_hours(strict, store, light, AS_OF, k=2)["fallback"].all()


def test_send_time_beats_global_hours(trained) -> None:
    _, _, results = trained
    st = next(r for r in results if r.name == "send_time")
    assert st.headline_metric == "top3_hour_hit"
    assert st.metrics["top1_hour_hit"] > 0.9
    assert st.metrics["top3_hour_hit"] > st.baselines["global_best_hours"]["top3_hour_hit"] + 0.1
    assert st.metrics["top3_hit_minus_global_low"] > 0


def test_card_records_the_tuned_hours_and_the_refit(trained) -> None:
    _, models, results = trained
    card = load_model(models, "send_time").card
    assert card["hour_factor"] == "hod_posterior"
    chosen = card["hour_model"]
    grid = card["config"]
    assert chosen["kernel"] in grid["hour_kernels"] and chosen["half_life_days"] in grid["hour_half_lives"]
    assert chosen["prior_strength"] in grid["hour_priors"] and 0 <= chosen["validation_top3"] <= 1
    # The saved model is refitted on everything before as_of; the metrics come from the fit at the split.
    window = card["data_window"]
    assert pd.Timestamp(window["origins"][-1]) == pd.Timestamp(window["as_of"]) - timedelta(days=30)
    assert "eval_model_hour_model" in window and results[1].card["version"] == card["version"]


def test_booster_ranks_days_and_never_reorders_the_hours_of_a_day(trained, synthetic) -> None:
    store, models, _ = trained
    _, truth = synthetic
    model = load_model(models, "send_time")
    users = truth.users["user_id"].head(20).tolist()
    scores = hour_scores(model, store, users, AS_OF)
    hours = model.card["hour_model"]
    shares = hour_shares(store, AS_OF)
    frame = user_hours(store, AS_OF, shares, users, half_life_days=hours["half_life_days"],
                       hour_kernel=hours["kernel"], hour_prior_strength=hours["prior_strength"]).frame
    merged = scores.merge(frame[["user_id", "hour_of_week", "hod_posterior", "weekday"]], on=["user_id", "hour_of_week"])
    # Within a (user, weekday) the score is the posterior times one weekday factor.
    ratio = merged["score"] / merged["hod_posterior"]
    assert ratio.groupby([merged["user_id"], merged["weekday"]]).std().max() < 1e-12


def test_posterior_rows_are_shares_and_history_less_users_get_the_prior() -> None:
    weighted = np.zeros((2, 24))
    weighted[0, 12] = 4.0
    prior = np.full(24, 1 / 24)
    post = hour_posterior(weighted, prior, kernel=0.5, strength=2.0)
    np.testing.assert_allclose(post.sum(axis=1), 1.0)
    np.testing.assert_allclose(post[1], prior)
    # 4 at noon, 2 lent to 11h and to 13h, 2 pseudo-engagements spread evenly: (4 + 2/24) / (8 + 2).
    assert post[0, 12] == pytest.approx((4 + 2 / 24) / 10)
    assert post[0, 11] == post[0, 13] == pytest.approx((2 + 2 / 24) / 10)


def test_tuning_scores_the_feature_that_is_served(synthetic) -> None:
    """The tuning's posterior for an origin is exactly the ``hod_posterior`` the serving path computes there."""
    store, _ = synthetic
    origin, end = START + timedelta(days=90), AS_OF
    history = engagements(store, START - timedelta(days=1), end)
    shares = hour_shares(store, origin)
    frame = user_hours(store, origin, shares, half_life_days=45.0, hour_kernel=0.3, hour_prior_strength=8.0).frame
    served = frame[frame["weekday"] == 0].pivot(index="user_id", columns="hour_of_day", values="hod_posterior")
    before = history[pd.to_datetime(history["ts"], utc=True) < pd.Timestamp(origin)]
    later = history[(pd.to_datetime(history["ts"], utc=True) >= pd.Timestamp(origin))
                    & history["user_id"].isin(before["user_id"])]
    top = np.argsort(-served.loc[later["user_id"]].to_numpy(), axis=1, kind="stable")[:, :3]
    expected = float((top == later["local_hour"].to_numpy()[:, None]).any(axis=1).mean())
    got = hour_grid_hits(history, hour_prior(shares), origin, end, [0.3], [45.0], [8.0])
    assert got["top3"].iloc[0] == pytest.approx(expected) and got["n"].iloc[0] == len(later)
