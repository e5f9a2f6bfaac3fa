"""Fixtures for the recommendation tests: a small hand-written log and a trained synthetic click model."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from engine.clock import FixedClock
from engine.store import Store
from engine.training import ClickConfig, load_model, train_click
from engine.training.synthetic import add_shoppers, insert_events


def _purchase(i: int, user: str, item: str, day: int, invoice: str) -> dict:
    return {
        "event_id": f"e{i}", "user_id": user, "item_id": item, "event_type": "purchase",
        "ts": pd.Timestamp(datetime(2011, 1, 1, 12, tzinfo=UTC) + timedelta(days=day)),
        "properties": json.dumps({"invoice": invoice, "quantity": 1, "unit_price": 1.0}), "source": "test",
    }


@pytest.fixture
def small_store() -> Store:
    """u1 buys a (3×) and b; u2 buys a+c together; u3 buys d+c together, twice; e is only in the catalog."""
    log = [
        _purchase(1, "u1", "a", 1, "I1"), _purchase(2, "u1", "a", 5, "I2"), _purchase(3, "u1", "a", 9, "I3"),
        _purchase(4, "u1", "b", 9, "I3"), _purchase(5, "u2", "a", 20, "I4"), _purchase(6, "u2", "c", 20, "I4"),
        _purchase(7, "u3", "d", 25, "I5"), _purchase(8, "u3", "c", 25, "I5"), _purchase(9, "u3", "d", 27, "I6"),
        _purchase(10, "u3", "c", 27, "I6"),
    ]
    s = Store(":memory:")
    insert_events(s, pd.DataFrame(log))
    s.execute(
        "INSERT INTO items VALUES ('a', 'A', 'mug', 1.0, 'GBP', 'test', NULL), ('b', 'B', 'mug', 3.0, 'GBP', 'test', NULL), "
        "('c', 'C', 'bag', 5.0, 'GBP', 'test', NULL), ('d', 'D', 'bag', 8.0, 'GBP', 'test', NULL), "
        "('e', 'E', 'hat', 2.0, 'GBP', 'other', NULL)"
    )
    yield s
    s.close()


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A synthetic shop and a click model trained on it."""
    store = Store(":memory:")
    truth = add_shoppers(store, np.random.default_rng(21), n_users=60, n_items=40, days=100)
    as_of = datetime(2011, 1, 3, tzinfo=UTC) + timedelta(days=100)
    models = tmp_path_factory.mktemp("rec_models")
    train_click(store, as_of, models, FixedClock(datetime(2026, 1, 1, tzinfo=UTC)),
                ClickConfig(num_boost_round=30, min_data_in_leaf=20))
    return store, truth, load_model(models, "click"), as_of
