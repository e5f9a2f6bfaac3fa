"""Golden values of each feature set on a hand-written log (see conftest.LOG)."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from engine.errors import InputError
from engine.features import (
    CLICK_FEATURES,
    click_features,
    hour_of_week_counts,
    item_features,
    item_neighbors,
    user_features,
    user_item_features,
)
from engine.features.timing import engagements
from engine.store import Store


def test_user_features(store: Store, as_of: datetime) -> None:
    uf = user_features(store, as_of).set_index("user_id")
    alice = uf.loc["alice"]
    assert alice["u_baskets"] == 3 and alice["u_lines"] == 5 and alice["u_distinct_items"] == 3
    assert alice["u_monetary"] == pytest.approx(2 * 1.5 + 4 + 1.5 + 4 + 3 * 2.0)
    assert alice["u_recency_days"] == pytest.approx(3 + 15 / 24)  # 2011-02-25 09:00 → 03-01 00:00
    assert alice["u_tenure_days"] == pytest.approx(56 + 13.5 / 24)
    assert (alice["u_baskets_7d"], alice["u_baskets_30d"], alice["u_baskets_90d"]) == (1, 2, 3)
    assert uf.loc["bob", "u_recency_days"] == pytest.approx(1.5)
    assert list(user_features(store, as_of, user_ids=["bob", "nobody"])["user_id"]) == ["bob"]


def test_item_features(store: Store, as_of: datetime) -> None:
    itf = item_features(store, as_of).set_index("item_id")
    a = itf.loc["a"]
    assert (a["i_pop_7d"], a["i_pop_30d"], a["i_pop_90d"], a["i_pop_total"]) == (1, 2, 3, 3)
    assert a["i_buyers"] == 2 and a["i_price"] == pytest.approx(1.5) and a["category"] == "mug"
    assert a["i_trend"] == pytest.approx((2 + 1) / (1 + 1))
    d = itf.loc["d"]  # in the catalog, never bought
    assert d["i_pop_total"] == 0 and d["i_price"] == 9.0 and math.isnan(d["i_age_days"]) and d["i_trend"] == 1.0


def test_item_neighbors_use_baskets_of_two_or_more(store: Store, as_of: datetime) -> None:
    nb = item_neighbors(store, as_of)
    sim = {(r.item_id, r.neighbor_id): r.similarity for r in nb.itertuples()}
    # a is in 3 multi-item baskets, b in 2, c in 1; a+b together twice, a+c once.
    assert sim[("a", "b")] == pytest.approx(2 / np.sqrt(3 * 2))
    assert sim[("a", "c")] == pytest.approx(1 / np.sqrt(3 * 1))
    assert ("b", "c") not in sim and all(i != j for i, j in sim)
    top1 = item_neighbors(store, as_of, k=1)
    assert top1.groupby("item_id").size().max() == 1
    assert top1.set_index("item_id").loc["a", "neighbor_id"] == "b"


def test_user_item_features(store: Store, as_of: datetime) -> None:
    pairs = pd.DataFrame({"user_id": ["alice", "bob", "carol", "dave"], "item_id": ["a", "b", "d", "a"]})
    uif = user_item_features(store, as_of, pairs)
    assert list(uif["user_id"]) == list(pairs["user_id"])  # input order kept
    alice, bob, carol, dave = (uif.iloc[i] for i in range(4))
    assert alice["ui_count"] == 2 and alice["ui_days_since"] == pytest.approx(8 + 13.5 / 24)
    assert alice["ui_category_count"] == 4 and alice["ui_category_share"] == pytest.approx(4 / 5)
    assert alice["ui_cooc_score"] == pytest.approx(2 / np.sqrt(6) + 1 / np.sqrt(3))
    assert bob["ui_count"] == 0 and math.isnan(bob["ui_days_since"])
    assert bob["ui_category_count"] == 1 and bob["ui_cooc_max"] == pytest.approx(2 / np.sqrt(6))
    assert carol["ui_category_count"] == 0 and carol["ui_cooc_score"] == 0.0
    assert dave["ui_count"] == 0 and dave["ui_category_share"] == 0.0


def test_user_item_features_needs_both_columns(store: Store, as_of: datetime) -> None:
    with pytest.raises(InputError, match=r"^pairs is missing column\(s\): item_id$"):
        user_item_features(store, as_of, pd.DataFrame({"user_id": ["alice"]}))


def test_click_features_frame(store: Store, as_of: datetime) -> None:
    pairs = pd.DataFrame({"user_id": ["alice", "dave"], "item_id": ["b", "zzz"], "extra": [1, 2]})
    frame = click_features(store, as_of, pairs, label_is_push=False)
    assert list(frame.columns) == ["user_id", "item_id", "extra", *CLICK_FEATURES]
    assert frame["ui_repeat_share"].tolist() == pytest.approx([2 / 5, 0.0])
    assert frame["label_is_push"].tolist() == [0.0, 0.0]
    assert math.isnan(frame.loc[1, "u_baskets"])  # unknown user: missing, not zero
    assert frame.loc[1, "i_pop_total"] == 0.0  # unknown item: never bought


def test_hour_of_week_in_each_users_time_zone(store: Store, as_of: datetime) -> None:
    hours = hour_of_week_counts(store, as_of)
    got = {(r.user_id, r.hour_of_week): r.n for r in hours.itertuples()}
    # alice (London, UTC in winter): Mon 10:30, Sun 10:30, Fri 09:00
    assert {k: v for k, v in got.items() if k[0] == "alice"} == {("alice", 10): 1, ("alice", 154): 1, ("alice", 105): 1}
    # bob: Sun 2011-02-27 12:00 UTC = Sun 07:00 in New York; two lines at one instant count once
    assert got[("bob", 6 * 24 + 7)] == 1
    # carol: Mon 2011-01-03 23:30 UTC = Tue 08:30 in Tokyo
    assert got[("carol", 24 + 8)] == 1
    later = engagements(store, datetime(2011, 1, 1, tzinfo=as_of.tzinfo), as_of, ["carol"])
    assert later[["hour_of_week", "local_hour", "weekday"]].values.tolist() == [[32, 8, 1]]
