"""Retention: raw events older than the configured age are purged, newer ones kept."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from engine.service.operations import purge_events, record_events

NOW = datetime(2026, 1, 15, tzinfo=UTC)


def test_purge_removes_only_events_older_than_the_retention(store):
    record_events(store, pd.DataFrame({
        "event_id": ["old", "edge", "new"], "user_id": ["u1"] * 3, "item_id": [None] * 3,
        "event_type": ["view"] * 3,
        "ts": pd.to_datetime(["2025-01-01T00:00:00Z", "2025-10-17T00:00:01Z", "2026-01-14T00:00:00Z"], utc=True),
        "properties": ["{}"] * 3}), NOW)
    assert purge_events(store, NOW, retention_days=90) == 1
    assert store.execute("SELECT count(*) FROM events").fetchall() == [(2,)]
    assert purge_events(store, NOW, retention_days=90) == 0
