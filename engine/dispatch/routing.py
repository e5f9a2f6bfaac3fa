"""Routing: a send goes through its device's own vendor, or through the configured fallback vendor.

The planner picks a device (the user's newest active one). At dispatch, a send whose vendor cannot
carry it — no channel is enabled for that vendor, or the device has no live token for it (a Huawei
phone without HMS, or whose HMS token was deactivated since planning) — is moved to the same user's
newest active device on ``settings.fallback[vendor]``
(for example ``huawei = "fcm"``). The send keeps its ``send_id`` (so its idempotency key), and the
move is recorded in ``last_error`` as ``routed: huawei→fcm``. Sends with no fallback device stay
where they are (and wait, or are cancelled at claim if their device is gone).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import pandas as pd

from engine.store import Store

__all__ = ["choose_route", "reroute"]


def choose_route(devices: pd.DataFrame, preferred: str, fallback: Mapping[str, str],
                 available: set[str]) -> str | None:
    """The device one user's send should use (pure).

    Args:
        devices: one user's devices: DataFrame[device_id, vendor, token, active, registered_at].
        preferred: the vendor the planner chose.
        fallback: vendor → fallback vendor.
        available: vendors with an enabled channel.

    Returns:
        A device_id, or None when neither the vendor nor its fallback can reach the user.
    """
    live = devices[devices["active"].astype(bool) & devices["token"].fillna("").astype(bool)]
    live = live.sort_values(["registered_at", "device_id"], ascending=[False, True])
    for vendor in (preferred, fallback.get(preferred)):
        if vendor is None or vendor not in available:
            continue
        rows = live[live["vendor"] == vendor]
        if not rows.empty:
            return str(rows["device_id"].iloc[0])
    return None


def reroute(store: Store, available: list[str], fallback: Mapping[str, str], now: datetime) -> int:
    """Move waiting sends that their vendor cannot carry to the user's device on the fallback vendor.

    Args:
        available: vendors with an enabled channel.
        fallback: ``settings.fallback``.

    Returns:
        Number of sends rerouted.
    """
    pairs = [(v, f) for v, f in fallback.items() if f in available]
    if not pairs:
        return 0
    with store.transaction() as con:
        rows = con.execute(
            """WITH fb AS (SELECT unnest($from) AS vendor, unnest($to) AS via),
                    target AS (
                        SELECT s.send_id, fb.via, alt.device_id AS alt_device, s.vendor AS was
                        FROM sends s JOIN fb ON fb.vendor = s.vendor
                        LEFT JOIN devices d ON d.device_id = s.device_id
                        JOIN devices alt ON alt.user_id = s.user_id AND alt.vendor = fb.via AND alt.active
                                        AND coalesce(alt.token, '') <> ''
                        WHERE s.state IN ('pending', 'retry')
                          AND (s.vendor NOT IN (SELECT unnest($avail)) OR coalesce(d.token, '') = ''
                               OR NOT coalesce(d.active, false))
                        QUALIFY row_number() OVER (PARTITION BY s.send_id
                                                   ORDER BY alt.registered_at DESC, alt.device_id) = 1)
               UPDATE sends SET vendor = target.via, device_id = target.alt_device, updated_at = $now,
                                last_error = 'routed: ' || target.was || '→' || target.via
               FROM target WHERE sends.send_id = target.send_id RETURNING sends.send_id""",
            {"from": [p[0] for p in pairs], "to": [p[1] for p in pairs], "avail": list(available), "now": now},
        ).fetchall()
    return len(rows)
