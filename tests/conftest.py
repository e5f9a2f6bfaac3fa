"""Shared fixtures: a fresh in-memory store per test, a fixed clock, the repository's paths."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.clock import FixedClock
from engine.store import Store

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"


@pytest.fixture
def store():
    s = Store(":memory:")
    yield s
    s.close()


@pytest.fixture
def clock():
    return FixedClock(datetime(2011, 11, 1, tzinfo=UTC))
