"""Fixtures for the feature tests: a fresh in-memory store with a small hand-written purchase log."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
import pytest

from engine.store import Store
from engine.training.synthetic import insert_events

AS_OF = datetime(2011, 3, 1, tzinfo=UTC)


def purchase(event_id: str, user: str, item: str, ts: str, invoice: str, qty: int = 1, price: float = 1.0) -> dict:
    return {
        "event_id": event_id,
        "user_id": user,
        "item_id": item,
        "event_type": "purchase",
        "ts": pd.Timestamp(ts, tz="UTC"),
        "properties": json.dumps({"invoice": invoice, "quantity": qty, "unit_price": price}),
        "source": "test",
    }


#: Alice buys a+b together twice and c once; Bob buys a+c; Carol (Tokyo) buys b at 23:30 UTC.
LOG = [
    purchase("e1", "alice", "a", "2011-01-03 10:30", "I1", 2, 1.5),
    purchase("e2", "alice", "b", "2011-01-03 10:30", "I1", 1, 4.0),
    purchase("e3", "alice", "a", "2011-02-20 10:30", "I2", 1, 1.5),
    purchase("e4", "alice", "b", "2011-02-20 10:30", "I2", 1, 4.0),
    purchase("e5", "alice", "c", "2011-02-25 09:00", "I3", 3, 2.0),
    purchase("e6", "bob", "a", "2011-02-27 12:00", "I4", 1, 1.5),
    purchase("e7", "bob", "c", "2011-02-27 12:00", "I4", 1, 2.0),
    purchase("e8", "carol", "b", "2011-01-03 23:30", "I5", 1, 4.0),
]


@pytest.fixture
def store() -> Store:
    s = Store(":memory:")
    insert_events(s, pd.DataFrame(LOG))
    s.execute(
        "INSERT INTO users VALUES ('alice', 'United Kingdom', 'Europe/London', 'test', NULL, NULL), "
        "('bob', 'USA', 'America/New_York', 'test', NULL, NULL), "
        "('carol', 'Japan', 'Asia/Tokyo', 'test', NULL, NULL)"
    )
    s.execute(
        "INSERT INTO items VALUES ('a', 'A', 'mug', 1.0, 'GBP', 'test', NULL), "
        "('b', 'B', 'mug', 5.0, 'GBP', 'test', NULL), ('c', 'C', 'bag', 2.0, 'GBP', 'test', NULL), "
        "('d', 'D', 'bag', 9.0, 'GBP', 'test', NULL)"
    )
    yield s
    s.close()


@pytest.fixture
def as_of() -> datetime:
    return AS_OF
