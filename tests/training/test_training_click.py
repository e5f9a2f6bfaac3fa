"""The click model learns planted signals, beats its baselines, and learns from logged push outcomes."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from training_setup import AS_OF, FAST_CLICK, START, TRAINED_AT

from engine.clock import FixedClock
from engine.features import CLICK_FEATURES, user_item_features
from engine.training import push_rows, train_click
from engine.training.click_data import ClickData


def test_click_model_learns_planted_favourites_and_beats_baselines(trained) -> None:
    _, _, results = trained
    click = next(r for r in results if r.name == "click")
    assert click.metrics["auc"] > 0.8  # a random model scores ~0.5
    assert click.metrics["ndcg@10"] > click.baselines["popularity"]["ndcg@10"] + 0.3
    assert click.metrics["ndcg@10"] >= click.baselines["repeat_own_items"]["ndcg@10"] - 0.02
    assert click.headline_metric == "ndcg@10" and click.baseline == "repeat_own_items"
    assert click.metrics["n_push_train_rows"] == 0


def test_push_rows_are_labelled_by_clicks_and_featured_as_of_the_decision(pushed) -> None:
    store, truth = pushed
    rows = push_rows(store, AS_OF, ClickData())
    assert len(rows) == 5 * 80 * 3
    planted = store.df(
        "SELECT s.send_id, count(c.event_id) > 0 AS clicked FROM sends s "
        "LEFT JOIN events c ON c.properties->>'send_id' = s.send_id GROUP BY ALL"
    ).set_index("send_id")["clicked"]
    assert (rows["label"].to_numpy() == planted.loc[rows["send_id"]].to_numpy()).all()
    assert set(rows["label_is_push"]) == {1.0}
    first = rows[rows["decided_at"] == rows["decided_at"].min()].head(20)
    at = pd.Timestamp(first["decided_at"].iloc[0]).to_pydatetime()
    expected = user_item_features(store, at, first[["user_id", "item_id"]])
    assert first["ui_count"].tolist() == expected["ui_count"].astype(float).tolist()


def test_push_window_must_close_before_as_of(pushed) -> None:
    store, _ = pushed
    just_after_last_send = START + timedelta(days=128, hours=2)
    rows = push_rows(store, just_after_last_send, ClickData(push_window_hours=72))
    assert rows["decided_at"].max() < START + timedelta(days=128)


def test_click_model_learns_from_push_outcomes(pushed, tmp_path) -> None:
    store, _ = pushed
    with_push = train_click(store, AS_OF, tmp_path, FixedClock(TRAINED_AT), FAST_CLICK)
    assert with_push.metrics["n_push_train_rows"] == 4 * 80 * 3
    assert with_push.metrics["n_push_eval_rows"] == 80 * 3
    # Pushes are clicked only for items the user never buys: the opposite of the purchase signal.
    # Only a model that learned from the push rows can rank them right.
    assert with_push.metrics["push_auc"] > 0.75
    no_push = train_click(store, AS_OF, tmp_path, FixedClock(TRAINED_AT), replace(FAST_CLICK, push_weight=1e-9))
    assert no_push.metrics["push_auc"] < 0.5


def test_click_features_are_the_cards_features(trained) -> None:
    _, _, results = trained
    click = next(r for r in results if r.name == "click")
    assert click.card["features"] == list(CLICK_FEATURES)
    window = click.card["data_window"]
    end = datetime.fromisoformat(window["eval_label_window"][1])
    assert end <= AS_OF  # anchored just after the last purchase before as_of
    assert datetime.fromisoformat(window["eval_snapshot"]) == end - timedelta(days=14)
    assert window["train_snapshots"] == [(end - timedelta(days=14 * k)).isoformat() for k in (4, 3, 2)]
    # The served booster is refit with the judged window added: one snapshot more, more rows.
    assert window["served_fit_snapshots"] == [*window["train_snapshots"], window["eval_snapshot"]]
    assert click.metrics["n_refit_rows"] > click.metrics["n_train_rows"]
    assert np.isfinite(click.metrics["log_loss"])
