"""Turn each user's preferred local hours of the week into a concrete UTC send time inside a window.

Pure and vectorised per time zone: the planner calls it for millions of users.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from engine.push.windows import closed

__all__ = ["resolve_send_times"]


def resolve_send_times(
    prefs: pd.DataFrame,
    window_start: datetime,
    window_end: datetime,
    quiet_start_min: int,
    quiet_end_min: int,
    message_class: str | None = None,
) -> pd.DataFrame:
    """Choose, per user, the earliest-ranked preferred hour that falls in the window and outside quiet hours.

    With a ``vendor`` column and a ``message_class``, hours outside that vendor's send window for the
    class (`engine.push.windows`: vivo marketing 07–23 China time, Huawei/Honor 06–24) are skipped too.

    Args:
        prefs: one row per (user, preference) with columns ``user_id``, ``time_zone`` (IANA),
            ``rank`` (0 = most preferred), ``weekday`` (0 = Monday), ``local_hour`` (0–23); optionally
            ``vendor`` (the channel the user is reached through).
        window_start, window_end: aware datetimes bounding the send window.
        quiet_start_min, quiet_end_min: quiet span in minutes after local midnight; the span wraps
            midnight when start > end; equal values mean no quiet hours.
        message_class: the campaign's class, for the vendors' send windows.

    Returns:
        One row per user that got a time: ``user_id``, ``send_at`` (UTC), ``send_hour_local``,
        ``pref_rank`` (which preference was used).
    """
    start_utc = pd.Timestamp(window_start).tz_convert("UTC")
    end_utc = pd.Timestamp(window_end).tz_convert("UTC")
    hours = prefs["local_hour"].to_numpy()
    utc = _utc_slots(prefs["time_zone"], prefs["weekday"].to_numpy(), hours, start_utc)
    ok = (~_quiet_mask(hours * 60, quiet_start_min, quiet_end_min)) & (~utc.isna()) & (utc >= start_utc) & (utc < end_utc)
    if message_class is not None and "vendor" in prefs:
        ok &= ~closed(prefs["vendor"], pd.Series(utc), message_class)
    best = _best_allowed(prefs["user_id"], prefs["rank"].to_numpy(), np.asarray(ok))
    return pd.DataFrame({
        "user_id": prefs["user_id"].to_numpy()[best],
        "send_at": utc[best],
        "send_hour_local": hours[best].astype(int),
        "pref_rank": prefs["rank"].to_numpy()[best].astype(int),
    })


def _utc_slots(time_zones: pd.Series, weekday: np.ndarray, local_hour: np.ndarray,
               start_utc: pd.Timestamp) -> pd.DatetimeIndex:
    """The first (weekday, local hour) at or after the window start in each row's zone, in UTC.

    NaT where the zone is missing or the local time is ambiguous (a DST fall-back hour); a time in a
    DST gap moves forward to the first valid instant. Vectorised per zone (a few dozen at most).
    """
    codes, zones = pd.factorize(time_zones)
    utc = np.full(len(codes), np.datetime64("NaT"), dtype="datetime64[us]")
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(zones) + 1))
    for z, tz in enumerate(zones):
        rows = order[bounds[z]:bounds[z + 1]]
        local_start = start_utc.tz_convert(tz)
        day0 = local_start.tz_localize(None).normalize()
        offset = (weekday[rows] - local_start.weekday()) % 7
        naive = pd.DatetimeIndex(day0 + pd.to_timedelta(offset, unit="D") + pd.to_timedelta(local_hour[rows], unit="h"))
        # a time earlier than the window's local start this week means the same slot next week
        naive = naive.where(naive >= local_start.tz_localize(None), naive + pd.Timedelta(days=7))
        local = naive.tz_localize(tz, ambiguous="NaT", nonexistent="shift_forward")
        utc[rows] = local.tz_convert("UTC").tz_localize(None).as_unit("us").to_numpy()
    return pd.DatetimeIndex(utc).tz_localize("UTC")


def _best_allowed(user_ids: pd.Series, rank: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Row positions of each user's allowed row with the lowest rank (the first such row on a tie)."""
    allowed = np.flatnonzero(ok)
    users, _ = pd.factorize(user_ids.iloc[allowed])
    order = np.lexsort((allowed, rank[allowed], users))
    users = users[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = users[1:] != users[:-1]
    return allowed[order[first]]


def _quiet_mask(minutes: np.ndarray, start: int, end: int) -> np.ndarray:
    if start == end:
        return np.zeros(len(minutes), dtype=bool)
    if start < end:
        return (minutes >= start) & (minutes < end)
    return (minutes >= start) | (minutes < end)
