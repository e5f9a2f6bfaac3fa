"""Daily vendor quotas per (vendor, app, message class): vendor days, the blocked set, and a pure planner check.

A vendor's quota day follows its own clock: China time (UTC+8, no DST) for the Chinese vendors, UTC
for the others (`DAY_ZONE`, the one table). When a vendor answers ``QUOTA_EXHAUSTED`` the key is
blocked until the vendor's next midnight; its sends wait in the outbox (state ``retry``, due at the
reset, the attempt not counted) instead of failing. The planner calls `plannable` with the rows of
`quota_state` so that it does not schedule past a known quota: every (vendor, app, class) with a
daily limit (`DEFAULT_DAILY_QUOTA`, or the caller's) has a row for today, even before anything was sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pandas as pd

from engine.store import Store

__all__ = ["DAY_ZONE", "DEFAULT_DAILY_QUOTA", "blocked_keys", "daily_limits", "next_reset", "plannable", "quota_day",
           "quota_state", "record_quota"]

_CHINA = ZoneInfo("Asia/Shanghai")
#: Where each vendor's day starts; vendors not listed (APNs, FCM, Web Push, new ones) use UTC.
DAY_ZONE: dict[str, ZoneInfo | timezone] = {
    "huawei": _CHINA, "honor": _CHINA, "xiaomi": _CHINA, "oppo": _CHINA, "vivo": _CHINA, "meizu": _CHINA,
}


#: Messages per vendor day and app that every app of a vendor is granted, per message class: the floors
#: the vendors publish (VENDORS.md §6, §7, §10). An app with more users gets more (Xiaomi public:
#: notification-enabled installs × 2; OPPO marketing: accumulated users × 2; vivo operational:
#: effective users × 2), so an operator passes the real figures to `daily_limits`. Classes and
#: vendors not listed have no app-wide daily total (APNs, FCM, Web Push, Huawei, Honor, Meizu, and
#: the service classes, which are unlimited after approval).
DEFAULT_DAILY_QUOTA: dict[str, dict[str, int]] = {
    "xiaomi": {"marketing": 10_000},
    "oppo": {"marketing": 100_000},
    "vivo": {"marketing": 10_000},
}

_CLASSES = ("marketing", "transactional")


def daily_limits(overrides: Mapping[str, Mapping[str, object]] | None = None) -> dict[tuple[str, str], int]:
    """The daily limit per (vendor, message class): `DEFAULT_DAILY_QUOTA` overlaid by ``overrides``.

    Args:
        overrides: ``{vendor: {message_class: messages per day}}`` (e.g. from a TOML table); a
            negative value removes the default (no known limit).

    Raises:
        ValueError: an unknown message class or a value that is not a whole number, naming the key.
    """
    limits = {(v, c): n for v, per in DEFAULT_DAILY_QUOTA.items() for c, n in per.items()}
    for vendor, per_class in (overrides or {}).items():
        for klass, value in per_class.items():
            if klass not in _CLASSES:
                raise ValueError(f"daily_quota.{vendor}.{klass}: message class must be one of {', '.join(_CLASSES)}")
            try:
                n = int(str(value))
            except ValueError:
                raise ValueError(f"daily_quota.{vendor}.{klass} must be a whole number, got {value!r}") from None
            if n < 0:
                limits.pop((vendor, klass), None)
            else:
                limits[(vendor, klass)] = n
    return limits


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


def record_quota(store: Store, rows: pd.DataFrame, now: datetime,
                 limits: Mapping[tuple[str, str], int] | None = None) -> None:
    """Add a batch of vendor answers to ``vendor_quota``; a new day's row gets its known ``daily_limit``.

    Args:
        rows: DataFrame[vendor, app_id, message_class, accepted (int, sends the vendor accepted),
            exhausted (bool, the vendor answered QUOTA_EXHAUSTED)], one row per key.
        now: when the answers arrived; picks the vendor day.
        limits: `daily_limits` (default: the vendors' published floors).
    """
    if rows.empty:
        return
    limits = daily_limits() if limits is None else limits
    frame = rows.copy()
    frame["daily_limit"] = pd.array([limits.get((v, c)) for v, c in zip(frame["vendor"], frame["message_class"],
                                                                        strict=True)], dtype="Int64")
    frame["quota_day"] = [quota_day(v, now) for v in frame["vendor"]]
    frame["resets_at"] = [next_reset(v, now) for v in frame["vendor"]]
    frame["exhausted_at"] = pd.Series([now if e else None for e in frame["exhausted"]], dtype="object")
    frame = frame[["vendor", "app_id", "message_class", "quota_day", "accepted", "daily_limit", "exhausted_at",
                   "resets_at"]]
    with store.transaction() as con:
        con.register("pw_quota", frame)
        con.execute(
            """INSERT INTO vendor_quota (vendor, app_id, message_class, quota_day, accepted, daily_limit,
                                         exhausted_at, resets_at)
               SELECT vendor, app_id, message_class, quota_day, accepted, daily_limit,
                      CAST(exhausted_at AS TIMESTAMPTZ), resets_at FROM pw_quota
               ON CONFLICT (vendor, app_id, message_class, quota_day) DO UPDATE SET
                   accepted = vendor_quota.accepted + excluded.accepted,
                   daily_limit = coalesce(vendor_quota.daily_limit, excluded.daily_limit),
                   exhausted_at = coalesce(vendor_quota.exhausted_at, excluded.exhausted_at)""")
        con.unregister("pw_quota")


def quota_state(store: Store, now: datetime, limits: Mapping[tuple[str, str], int] | None = None) -> pd.DataFrame:
    """Today's quota rows per key (each vendor's own today), pre-filled with the known daily limits.

    Every (vendor, app of an active device, class) with a limit in ``limits`` has a row, with
    ``accepted`` 0 when nothing was sent yet today; a limit stored in ``vendor_quota`` wins.

    Args:
        limits: `daily_limits` (default: the vendors' published floors).

    Returns:
        DataFrame[vendor, app_id, message_class, accepted, daily_limit, exhausted (bool), resets_at].
    """
    limits = daily_limits() if limits is None else limits
    keys = sorted(limits)
    params = {"now": now, "lv": [v for v, _ in keys] or [""], "lc": [c for _, c in keys] or [""],
              "ln": [int(limits[k]) for k in keys] or [0], "lr": [next_reset(v, now) for v, _ in keys] or [now]}
    return store.df(
        """WITH today AS (
               SELECT vendor, app_id, message_class, accepted, daily_limit, exhausted_at, resets_at
               FROM vendor_quota WHERE resets_at > $now AND resets_at <= $now + INTERVAL 1 DAY),
           known AS (
               SELECT unnest($lv) AS vendor, unnest($lc) AS message_class, unnest($ln) AS daily_limit,
                      unnest($lr) AS resets_at),
           keys AS (
               SELECT DISTINCT d.vendor, d.app_id, k.message_class, k.daily_limit, k.resets_at
               FROM devices d JOIN known k ON k.vendor = d.vendor
               WHERE d.active AND d.app_id IS NOT NULL AND k.vendor <> '')
           SELECT coalesce(t.vendor, k.vendor) AS vendor, coalesce(t.app_id, k.app_id) AS app_id,
                  coalesce(t.message_class, k.message_class) AS message_class,
                  coalesce(t.accepted, 0) AS accepted,
                  CAST(coalesce(t.daily_limit, k.daily_limit) AS INTEGER) AS daily_limit,
                  t.exhausted_at IS NOT NULL AS exhausted,
                  CAST(coalesce(t.resets_at, k.resets_at) AS TIMESTAMPTZ) AS resets_at
           FROM today t FULL OUTER JOIN keys k
             ON t.vendor = k.vendor AND t.app_id = k.app_id AND t.message_class = k.message_class
           ORDER BY 1, 2, 3""",
        params,
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
