"""Fixtures for the vendor-channel tests: messages, clocks, and loopback sandboxes per test."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from engine.clock import FixedClock
from engine.config import Settings
from engine.domain import PushMessage
from engine.push.sandbox import Sandboxes, new_apns_token, new_fcm_token, start_sandboxes

T = TypeVar("T")
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one coroutine on a fresh event loop (no pytest-asyncio needed)."""
    return asyncio.run(coro)


def make_message(vendor: str, rng: random.Random, **overrides: Any) -> PushMessage:
    """A realistic message with a uuid send_id and a well-formed token for ``vendor``."""
    token = new_apns_token(rng) if vendor == "apns" else new_fcm_token(rng)
    fields: dict[str, Any] = {"send_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "vendor": vendor,
                              "token": token, "title": "Back in stock", "body": "The teapot you viewed is back"}
    fields.update(overrides)
    return PushMessage(**fields)


@pytest.fixture
def rng() -> random.Random:
    return random.Random(20250301)


@pytest.fixture
def fixed() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def sandboxes(tmp_path: Path) -> Iterator[Sandboxes]:
    """Both sandboxes on the system clock (third-party clients sign with real time)."""
    with start_sandboxes(tmp_path / "sandbox") as boxes:
        yield boxes


@pytest.fixture
def skewed(tmp_path: Path) -> Iterator[tuple[Sandboxes, FixedClock]]:
    """Sandboxes on their own FixedClock, 20 minutes ahead of ``T0``: the vendor's clock runs ahead."""
    server_clock = FixedClock(T0 + timedelta(minutes=20))
    with start_sandboxes(tmp_path / "sandbox", clock=server_clock) as boxes:
        yield boxes, server_clock


def settings_for(boxes: Sandboxes) -> Settings:
    settings = Settings()
    settings.vendors = boxes.vendor_settings()
    return settings
