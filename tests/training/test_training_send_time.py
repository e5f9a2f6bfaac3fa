"""The send-time model recovers each user's planted local hour; thin histories fall back, flagged."""

from __future__ import annotations

from training_setup import AS_OF

from engine.training import best_send_hours, load_model


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


def test_users_with_little_history_get_flagged_population_hours(trained, synthetic) -> None:
    store, models, _ = trained
    _, truth = synthetic
    model = load_model(models, "send_time")
    light = truth.users[truth.users["n_baskets"] < 3]["user_id"].tolist()
    assert light  # the generator plants a few
    best = best_send_hours(model, store, [*light, "never-seen"], AS_OF, k=2)
    assert best["fallback"].all()
    assert set(best["user_id"]) == {*light, "never-seen"}
    never = best[best["user_id"] == "never-seen"]
    assert never["score"].is_monotonic_decreasing and len(never) == 2


def test_send_time_beats_global_hours(trained) -> None:
    _, _, results = trained
    st = next(r for r in results if r.name == "send_time")
    assert st.headline_metric == "top3_hour_hit"
    assert st.metrics["top1_hour_hit"] > 0.9
    assert st.metrics["top3_hour_hit"] > st.baselines["global_best_hours"]["top3_hour_hit"] + 0.1
    assert st.metrics["top3_hit_minus_global_low"] > 0
