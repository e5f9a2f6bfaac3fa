"""As-of discipline: no feature may change when events at or after ``as_of`` are added (no leakage)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from engine.features import (
    click_features,
    hour_of_week_counts,
    item_features,
    item_neighbors,
    user_features,
    user_item_features,
)
from engine.features.send_time import hour_shares, user_hours
from engine.recommend.candidates import generate_candidates
from engine.store import Store
from engine.training.synthetic import add_shoppers, insert_events

PAIRS = pd.DataFrame({"user_id": ["alice", "bob", "carol", "newbie"], "item_id": ["a", "b", "d", "a"]})


def all_feature_sets(db, as_of: datetime) -> dict[str, pd.DataFrame]:
    users = ["alice", "bob", "carol", "newbie"]
    pairs = PAIRS
    if db.count("events") > 100:  # the synthetic store: pick some of its users and items
        users = sorted(db.df("SELECT DISTINCT user_id FROM events")["user_id"])[:25]
        pairs = generate_candidates(db, as_of, users)[["user_id", "item_id"]]
    shares = hour_shares(db, as_of)
    return {
        "user": user_features(db, as_of),
        "item": item_features(db, as_of),
        "neighbors": item_neighbors(db, as_of),
        "user_item": user_item_features(db, as_of, pairs),
        "click": click_features(db, as_of, pairs),
        "hours": hour_of_week_counts(db, as_of),
        "shares": shares.by_country.assign(g=np.tile(shares.global_share, len(shares.by_country) // 168)),
        "user_hours": user_hours(db, as_of, shares, users).frame,
        "candidates": generate_candidates(db, as_of, users),
    }


def future_events(as_of: datetime) -> pd.DataFrame:
    """Events exactly at as_of and after it, for known and new users and items, of every kind."""
    rows = []
    for i, (user, item, kind, delay) in enumerate(
        [
            ("alice", "a", "purchase", timedelta(0)),  # exactly at the cut-off: excluded too
            ("alice", "d", "purchase", timedelta(minutes=1)),
            ("bob", "b", "purchase", timedelta(days=1)),
            ("newbie", "a", "purchase", timedelta(days=2)),
            ("carol", "b", "click", timedelta(hours=3)),
            ("bob", None, "push_open", timedelta(days=3)),
            ("alice", "b", "impression", timedelta(days=4)),
        ]
    ):
        rows.append(
            {
                "event_id": f"future{i}",
                "user_id": user,
                "item_id": item,
                "event_type": kind,
                "ts": pd.Timestamp(as_of + delay),
                "properties": json.dumps({"invoice": f"F{i}", "quantity": 50, "unit_price": 99.0}),
                "source": "test",
            }
        )
    return pd.DataFrame(rows)


def assert_same(before: dict[str, pd.DataFrame], after: dict[str, pd.DataFrame]) -> None:
    for name, frame in before.items():
        pd.testing.assert_frame_equal(frame, after[name], obj=name)


def test_features_ignore_events_at_or_after_as_of(store: Store, as_of: datetime) -> None:
    before = all_feature_sets(store, as_of)
    insert_events(store, future_events(as_of))
    assert_same(before, all_feature_sets(store, as_of))
    # The same queries do see the new events once the cut-off moves past them (the test has teeth).
    later = all_feature_sets(store, as_of + timedelta(days=10))
    for name in ("user", "item", "user_item", "hours", "candidates"):
        assert not before[name].equals(later[name]), name


def test_features_on_full_log_equal_features_on_log_cut_at_as_of() -> None:
    full, cut = Store(":memory:"), Store(":memory:")
    add_shoppers(full, np.random.default_rng(3), n_users=40, n_items=30, days=60)
    as_of = datetime(2011, 2, 1, 13, 30, tzinfo=UTC)
    for table in ("users", "items"):
        cut.con.register("src", full.df(f"SELECT * FROM {table}"))
        cut.execute(f"INSERT INTO {table} SELECT * FROM src")
    cut.con.register("src_events", full.df("SELECT * FROM events WHERE ts < $a", {"a": as_of}))
    cut.execute("INSERT INTO events SELECT * FROM src_events")
    assert full.count("events") > cut.count("events") > 100
    assert_same(all_feature_sets(cut, as_of), all_feature_sets(full, as_of))


@pytest.mark.parametrize(
    "fn", [user_features, item_features, item_neighbors, hour_of_week_counts], ids=lambda f: f.__name__
)
def test_naive_as_of_is_refused_with_a_clear_message(store: Store, fn: Callable) -> None:
    from engine.errors import InputError

    with pytest.raises(InputError, match=r"^as_of must be a timezone-aware datetime, got datetime\.datetime\(2011, 3, 1, 0, 0\)$"):
        fn(store, datetime(2011, 3, 1))
