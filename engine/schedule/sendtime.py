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
    out = []
    start_utc = pd.Timestamp(window_start).tz_convert("UTC")
    end_utc = pd.Timestamp(window_end).tz_convert("UTC")
    for tz, group in prefs.groupby("time_zone", sort=False):
        local_start = start_utc.tz_convert(tz)
        day0 = local_start.tz_localize(None).normalize()
        offset = (group["weekday"].to_numpy() - local_start.weekday()) % 7
        naive = day0 + pd.to_timedelta(offset, unit="D") + pd.to_timedelta(group["local_hour"].to_numpy(), unit="h")
        naive = pd.DatetimeIndex(naive)
        # a time earlier than the window's local start this week means the same slot next week
        naive = naive.where(naive >= local_start.tz_localize(None), naive + pd.Timedelta(days=7))
        local = naive.tz_localize(tz, ambiguous="NaT", nonexistent="shift_forward")
        utc = local.tz_convert("UTC")
        minutes = group["local_hour"].to_numpy() * 60
        quiet = _quiet_mask(minutes, quiet_start_min, quiet_end_min)
        ok = (~quiet) & (~utc.isna()) & (utc >= start_utc) & (utc < end_utc)
        if message_class is not None and "vendor" in group:
            ok &= ~closed(group["vendor"], pd.Series(utc), message_class)
        chosen = group.assign(send_at=utc, ok=ok)
        out.append(chosen[chosen["ok"]])
    if not out:
        return pd.DataFrame(columns=["user_id", "send_at", "send_hour_local", "pref_rank"])
    allowed = pd.concat(out, ignore_index=True).sort_values(["user_id", "rank"], kind="stable")
    best = allowed.drop_duplicates("user_id", keep="first")
    return pd.DataFrame({
        "user_id": best["user_id"].to_numpy(),
        "send_at": best["send_at"].to_numpy(),
        "send_hour_local": best["local_hour"].to_numpy().astype(int),
        "pref_rank": best["rank"].to_numpy().astype(int),
    })


def _quiet_mask(minutes: np.ndarray, start: int, end: int) -> np.ndarray:
    if start == end:
        return np.zeros(len(minutes), dtype=bool)
    if start < end:
        return (minutes >= start) & (minutes < end)
    return (minutes >= start) | (minutes < end)
