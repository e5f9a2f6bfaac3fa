"""Golden values and as-of discipline of the repeat-buying features (baskets, decay, overdue ratio, repeat rates).

The log is conftest.LOG: Alice buys a+b in I1 (2011-01-03) and again in I2 (2011-02-20), c in I3
(02-25); Bob buys a+c in I4 (02-27); Carol buys b in I5 (01-03). As of 2011-03-01 00:00 UTC.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pandas as pd
import pytest

from engine.features import click_features, item_features, user_features, user_item_features
from engine.features.user_item import HALF_LIFE_DAYS
from engine.store import Store
from engine.training.synthetic import insert_events


def purchase(event_id: str, user: str, item: str, ts: str, invoice: str, qty: int = 1) -> dict:
    return {"event_id": event_id, "user_id": user, "item_id": item, "event_type": "purchase",
            "ts": pd.Timestamp(ts, tz="UTC"), "source": "test",
            "properties": json.dumps({"invoice": invoice, "quantity": qty, "unit_price": 1.0})}


NEW = ["ui_baskets", "ui_baskets_30d", "ui_quantity", "ui_decayed", "ui_share", "ui_gap_ratio"]
PAIRS = pd.DataFrame({"user_id": ["alice", "alice", "bob", "alice"], "item_id": ["a", "c", "b", "d"]})
AGE_I1, AGE_I2 = 56 + 13.5 / 24, 8 + 13.5 / 24  # days from each of Alice's a+b baskets to as_of


def test_user_item_repeat_features(store: Store, as_of: datetime) -> None:
    uif = user_item_features(store, as_of, PAIRS)
    a, c, bob_b, never = (uif.iloc[i] for i in range(4))
    assert (a["ui_baskets"], a["ui_baskets_30d"], a["ui_quantity"]) == (2, 1, 3.0)
    assert a["ui_decayed"] == pytest.approx(0.5 ** (AGE_I1 / HALF_LIFE_DAYS) + 0.5 ** (AGE_I2 / HALF_LIFE_DAYS))
    assert a["ui_share"] == pytest.approx(2 / 5)  # a 2 + b 2 + c 1 basket-items
    # 48 days between her two baskets of a; the last one 8.56 days ago.
    assert a["ui_gap_ratio"] == pytest.approx(AGE_I2 / (48 + 1))
    assert (c["ui_baskets"], c["ui_quantity"], c["ui_share"]) == (1, 3.0, pytest.approx(1 / 5))
    assert c["ui_gap_ratio"] == 0.0  # one basket: no gap to be overdue on
    for row in (bob_b, never):
        assert row[NEW].tolist() == [0, 0, 0.0, 0.0, 0.0, 0.0]


def test_two_lines_of_an_item_in_one_basket_count_as_one_basket(store: Store, as_of: datetime) -> None:
    insert_events(store, pd.DataFrame([purchase("e9", "alice", "c", "2011-02-25 09:00", "I3", 2)]))
    c = user_item_features(store, as_of, PAIRS).iloc[1]
    assert c["ui_count"] == 2 and c["ui_baskets"] == 1 and c["ui_quantity"] == 5.0
    assert c["ui_gap_ratio"] == 0.0 and c["ui_decayed"] == pytest.approx(0.5 ** ((3 + 15 / 24) / HALF_LIFE_DAYS))


def test_user_and_item_repeat_rates(store: Store, as_of: datetime) -> None:
    uf = user_features(store, as_of).set_index("user_id")["u_repeat_rate"]
    assert uf.to_dict() == {"alice": pytest.approx(2 / 3), "bob": 0.0, "carol": 0.0}  # a, b twice; c once
    itf = item_features(store, as_of).set_index("item_id")
    assert itf["i_repeat_rate"].to_dict() == {"a": 0.5, "b": 0.5, "c": 0.0, "d": 0.0}
    assert itf.loc["a", ["i_buyers_7d", "i_buyers_30d", "i_buyers_90d"]].tolist() == [1, 2, 2]
    assert itf.loc["c", ["i_buyers_7d", "i_buyers_90d"]].tolist() == [2, 2]
    frame = click_features(store, as_of, pd.DataFrame({"user_id": ["bob"], "item_id": ["zzz"]}))
    assert frame.loc[0, ["i_repeat_rate", "i_buyers_7d", "i_buyers_90d"]].tolist() == [0.0, 0.0, 0.0]


def test_repeat_features_ignore_purchases_at_or_after_as_of(store: Store, as_of: datetime) -> None:
    """A third basket of a, exactly at as_of and a day later, must not move any of the new features."""
    before = (user_item_features(store, as_of, PAIRS), user_features(store, as_of), item_features(store, as_of))
    insert_events(store, pd.DataFrame([
        purchase("f1", "alice", "a", "2011-03-01 00:00", "F1", 7),
        purchase("f2", "bob", "a", "2011-03-02 00:00", "F2", 1),
        purchase("f3", "bob", "b", "2011-03-02 00:00", "F2", 1),
    ]))
    after = (user_item_features(store, as_of, PAIRS), user_features(store, as_of), item_features(store, as_of))
    for old, new in zip(before, after, strict=True):
        pd.testing.assert_frame_equal(old, new)
    # The features do see those baskets once as_of passes them (the test has teeth).
    later = user_item_features(store, as_of + timedelta(days=2), PAIRS).iloc[0]
    assert (later["ui_baskets"], later["ui_quantity"]) == (3, 10.0)
    assert later["ui_gap_ratio"] == pytest.approx(2 / ((56 + 13.5 / 24) / 2 + 1))
    assert user_features(store, as_of + timedelta(days=2)).set_index("user_id").loc["bob", "u_repeat_rate"] == pytest.approx(1 / 3)  # a twice; b, c once
    assert item_features(store, as_of + timedelta(days=2)).set_index("item_id").loc["a", "i_repeat_rate"] == 1.0


def test_stable_floats_absorbs_the_last_bits_parallel_sums_leave():
    """Two sums of the same numbers in another order differ in the last bits; the features must not."""
    import numpy as np

    from engine.features.base import stable_floats

    rng = np.random.default_rng(3)
    parts = rng.uniform(0.01, 500.0, size=(200, 997))
    forward = np.array([sum(row) for row in parts])
    backward = np.array([sum(row[::-1]) for row in parts])
    assert (forward != backward).any()                        # the raw sums do differ
    assert np.array_equal(stable_floats(forward), stable_floats(backward))
    assert np.allclose(stable_floats(forward), forward, rtol=1e-7, atol=0)
    assert np.isnan(stable_floats(np.array([np.nan]))[0])
