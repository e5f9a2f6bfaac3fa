"""Vendor send windows: the hours of a vendor's day in which it takes (or shows) a message class.

One table, `SEND_WINDOWS` (VENDORS.md §10): vivo refuses operational (marketing) messages outside
07:00–23:00 China time with result 10071; Huawei and Honor accept marketing messages at night but
hold them until 06:00 China time. The planner keeps sends of those classes inside the window
(`closed`), and a vendor's refusal becomes a deferral to the next opening (`reopens_at`), not a
failed attempt: the send was not at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

__all__ = ["SEND_WINDOWS", "SendWindow", "closed", "reopens_at"]

_CHINA = ZoneInfo("Asia/Shanghai")


@dataclass(frozen=True)
class SendWindow:
    """Open from ``opens`` to ``closes`` (hours, local to ``zone``; ``closes`` 24 means midnight).

    ``refused`` says what happens outside: True, the vendor answers with an error; False, it
    accepts and holds the message until the window opens.
    """

    zone: ZoneInfo
    opens: int
    closes: int
    refused: bool


#: (vendor, message class) → its window; pairs not listed take messages at any hour.
SEND_WINDOWS: dict[tuple[str, str], SendWindow] = {
    ("vivo", "marketing"): SendWindow(_CHINA, 7, 23, refused=True),
    ("huawei", "marketing"): SendWindow(_CHINA, 6, 24, refused=False),
    ("honor", "marketing"): SendWindow(_CHINA, 6, 24, refused=False),
}


def closed(vendors: pd.Series, send_at: pd.Series, message_class: str) -> np.ndarray:
    """True where a send at ``send_at`` (aware) through ``vendors`` falls outside its vendor's window (pure).

    Args:
        vendors: vendor per send (None/NaN: no vendor, never closed).
        send_at: aligned send times.
        message_class: the campaign's class.
    """
    out = np.zeros(len(vendors), dtype=bool)
    at = pd.to_datetime(pd.Series(send_at).reset_index(drop=True), utc=True)
    names = pd.Series(vendors).reset_index(drop=True)
    for (vendor, klass), window in SEND_WINDOWS.items():
        if klass != message_class:
            continue
        mine = (names == vendor).to_numpy() & at.notna().to_numpy()
        if not mine.any():
            continue
        hours = at[mine].dt.tz_convert(window.zone).dt.hour.to_numpy()
        out[mine] = (hours < window.opens) | (hours >= window.closes)
    return out


def reopens_at(vendor: str, message_class: str, at: datetime) -> datetime | None:
    """When the window of (vendor, class) next opens after ``at`` (aware), or None if it is open or has none."""
    window = SEND_WINDOWS.get((vendor, message_class))
    if window is None:
        return None
    local = at.astimezone(window.zone)
    if window.opens <= local.hour < window.closes:
        return None
    opening = local.replace(hour=window.opens, minute=0, second=0, microsecond=0)
    if opening <= local:
        opening = opening + timedelta(days=1)
    return opening.astimezone(at.tzinfo)
