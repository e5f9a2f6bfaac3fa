"""Vendor send windows: which send times are closed, and when a closed window opens again."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from engine.push.windows import SEND_WINDOWS, closed, reopens_at


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("vendor", "klass", "at", "expected"), [
    ("vivo", "marketing", "2025-03-01 22:59", True),        # 06:59 China
    ("vivo", "marketing", "2025-03-01 23:00", False),       # 07:00 China: open
    ("vivo", "marketing", "2025-03-01 14:59", False),       # 22:59 China
    ("vivo", "marketing", "2025-03-01 15:00", True),        # 23:00 China: closed
    ("vivo", "transactional", "2025-03-01 15:00", False),   # system messages at any hour
    ("huawei", "marketing", "2025-03-01 17:00", True),      # 01:00 China: held until 06:00
    ("honor", "marketing", "2025-03-01 22:00", False),      # 06:00 China
    ("apns", "marketing", "2025-03-01 15:00", False),       # no window
    (None, "marketing", "2025-03-01 15:00", False),         # no device
])
def test_closed(vendor, klass, at, expected):
    assert closed(pd.Series([vendor]), pd.Series([_utc(at)]), klass).tolist() == [expected]


def test_closed_keeps_the_callers_order_and_ignores_its_index():
    vendors = pd.Series(["vivo", "apns", "vivo"], index=[10, 3, 7])
    at = pd.Series([_utc("2025-03-01 16:00"), _utc("2025-03-01 16:00"), _utc("2025-03-01 02:00")], index=[10, 3, 7])
    assert closed(vendors, at, "marketing").tolist() == [True, False, False]


@pytest.mark.parametrize(("vendor", "at", "expected"), [
    ("vivo", "2025-03-01 15:30", "2025-03-01 23:00"),    # 23:30 China → 07:00 China the next morning
    ("vivo", "2025-03-01 20:00", "2025-03-01 23:00"),    # 04:00 China → 07:00 China the same morning
    ("vivo", "2025-03-01 02:00", None),                  # 10:00 China: open
    ("huawei", "2025-03-01 16:30", "2025-03-01 22:00"),  # 00:30 China → 06:00 China
    ("fcm", "2025-03-01 16:30", None),
])
def test_reopens_at(vendor, at, expected):
    assert reopens_at(vendor, "marketing", _utc(at)) == (None if expected is None else _utc(expected))


def test_every_window_is_a_proper_span():
    for window in SEND_WINDOWS.values():
        assert 0 <= window.opens < window.closes <= 24
