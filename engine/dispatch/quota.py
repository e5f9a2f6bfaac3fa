"""Daily vendor quotas per (vendor, app, message class): vendor days, the blocked set, and a pure planner check.

A vendor's quota day follows its own clock: China time (UTC+8, no DST) for the Chinese vendors, UTC
for the others (`DAY_ZONE`, the one table). When a vendor answers ``QUOTA_EXHAUSTED`` the key is
blocked until the vendor's next midnight; its sends wait in the outbox (state ``retry``, due at the
reset, the attempt not counted) instead of failing. The planner calls `plannable` with the rows of
`quota_state` so that it does not schedule past a known quota.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pandas as pd

from engine.store import Store

__all__ = ["DAY_ZONE", "blocked_keys", "next_reset", "plannable", "quota_day", "quota_state", "record_quota"]

_CHINA = ZoneInfo("Asia/Shanghai")
#: Where each vendor's day starts; vendors not listed (APNs, FCM, Web Push, new ones) use UTC.
DAY_ZONE: dict[str, ZoneInfo | timezone] = {
    "huawei": _CHINA, "honor": _CHINA, "xiaomi": _CHINA, "oppo": _CHINA, "vivo": _CHINA, "meizu": _CHINA,
}


def _zone(vendor: str) -> ZoneInfo | timezone:
    return DAY_ZONE.get(vendor, UTC)


def quota_day(vendor: str, at: datetime) -> date:
    """The vendor's calendar day containing ``at`` (aware)."""
    return at.astimezone(_zone(vendor)).date()


def next_reset(vendor: str, at: datetime) -> datetime:
    """The start of the vendor's next day after ``at``, in UTC."""
    zone = _zone(vendor)
    tomorrow = quota_day(vendor, at) + timedelta(days=1)
    return datetime.combine(tomorrow, time(0), tzinfo=zone).astimezone(UTC)


def record_quota(store: Store, rows: pd.DataFrame, now: datetime) -> None:
    """Add a batch of vendor answers to ``vendor_quota``.

    Args:
        rows: DataFrame[vendor, app_id, message_class, accepted (int, sends the vendor accepted),
            exhausted (bool, the vendor answered QUOTA_EXHAUSTED)], one row per key.
        now: when the answers arrived; picks the vendor day.
    """
    if rows.empty:
        return
    frame = rows.copy()
    frame["quota_day"] = [quota_day(v, now) for v in frame["vendor"]]
    frame["resets_at"] = [next_reset(v, now) for v in frame["vendor"]]
    frame["exhausted_at"] = pd.Series([now if e else None for e in frame["exhausted"]], dtype="object")
    frame = frame[["vendor", "app_id", "message_class", "quota_day", "accepted", "exhausted_at", "resets_at"]]
    with store.transaction() as con:
        con.register("pw_quota", frame)
        con.execute(
            """INSERT INTO vendor_quota (vendor, app_id, message_class, quota_day, accepted, exhausted_at, resets_at)
               SELECT vendor, app_id, message_class, quota_day, accepted, CAST(exhausted_at AS TIMESTAMPTZ),
                      resets_at FROM pw_quota
               ON CONFLICT (vendor, app_id, message_class, quota_day) DO UPDATE SET
                   accepted = vendor_quota.accepted + excluded.accepted,
                   exhausted_at = coalesce(vendor_quota.exhausted_at, excluded.exhausted_at)""")
        con.unregister("pw_quota")


def quota_state(store: Store, now: datetime) -> pd.DataFrame:
    """Today's quota rows per key (each vendor's own today).

    Returns:
        DataFrame[vendor, app_id, message_class, accepted, daily_limit, exhausted (bool), resets_at].
    """
    return store.df(
        """SELECT vendor, app_id, message_class, accepted, daily_limit,
                  exhausted_at IS NOT NULL AS exhausted, resets_at
           FROM vendor_quota WHERE resets_at > $now AND resets_at <= $now + INTERVAL 1 DAY""",
        {"now": now},
    )


def blocked_keys(store: Store, now: datetime) -> pd.DataFrame:
    """Keys the vendor declared exhausted whose day has not reset yet.

    Returns:
        DataFrame[vendor, app_id, message_class, resets_at].
    """
    return store.df(
        """SELECT vendor, app_id, message_class, resets_at FROM vendor_quota
           WHERE exhausted_at IS NOT NULL AND resets_at > $now""",
        {"now": now},
    )


def plannable(planned: pd.DataFrame, state: pd.DataFrame) -> pd.Series:
    """Which planned sends fit today's known quotas (pure).

    A send is refused when its key is exhausted and it is due before the reset, or when the key has
    a known ``daily_limit`` and the sends already accepted plus those planned before it (in ``send_at``
    order) reach the limit.

    Args:
        planned: DataFrame[vendor, app_id, message_class, send_at (aware)], any index.
        state: `quota_state` rows.

    Returns:
        Boolean Series aligned with ``planned``: True where the send may be scheduled.
    """
    if planned.empty or state.empty:
        return pd.Series(True, index=planned.index, dtype=bool)
    keys = ["vendor", "app_id", "message_class"]
    frame = planned[keys + ["send_at"]].reset_index(drop=True)
    frame["_row"] = range(len(frame))
    merged = frame.merge(state, on=keys, how="left")
    send_at = pd.to_datetime(merged["send_at"], utc=True)
    resets = pd.to_datetime(merged["resets_at"], utc=True)
    today = resets.notna() & (send_at < resets)
    blocked = today & merged["exhausted"].fillna(False).astype(bool)
    merged["_today"] = today.astype(int)
    merged = merged.assign(_send_at=send_at).sort_values(["_send_at", "_row"])
    order = merged.groupby(keys, dropna=False)["_today"].cumsum()
    limit = pd.to_numeric(merged["daily_limit"], errors="coerce")
    over = today.loc[merged.index] & limit.notna() & (
        merged["accepted"].fillna(0) + order > limit)
    refuse = (blocked.loc[merged.index] | over).groupby(merged["_row"]).any()
    return pd.Series(~refuse.sort_index().to_numpy(), index=planned.index, dtype=bool)
