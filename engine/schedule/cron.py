"""Crontab expressions (UTC) as APScheduler triggers, with crontab's meaning of the weekday field, checked up front."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from apscheduler.triggers.cron import CronTrigger

__all__ = ["crontab_problem", "crontab_trigger"]

_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def crontab_trigger(cron: str) -> CronTrigger:
    """A UTC :class:`CronTrigger` with crontab's meaning of the weekday field (0 or 7 = Sunday, 1 = Monday).

    APScheduler 3's ``CronTrigger.from_crontab`` reads weekday numbers as Monday = 0, so ``0 3 * * 1``
    would fire on Tuesdays; numbers are turned into day names first (steps such as ``*/2`` expanded).

    Raises:
        ValueError: not five fields, or a field APScheduler rejects.
    """
    fields = cron.split()
    if len(fields) != 5:
        raise ValueError(f"crontab expression needs 5 fields (minute hour day month weekday), got {cron!r}")
    minute, hour, day, month, weekday = fields
    weekday = ",".join(_weekday_part(part) for part in weekday.split(","))
    return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=weekday, timezone=UTC)


def crontab_problem(cron: str, now: datetime | None = None) -> str | None:
    """Why ``cron`` cannot drive a schedule (unparseable, or never fires after ``now``), or None when it can."""
    try:
        trigger = crontab_trigger(cron)
    except ValueError as exc:
        return f"{cron!r} is not a crontab expression: {exc}"
    if trigger.get_next_fire_time(None, now or datetime.now(UTC)) is None:
        return f"{cron!r} never fires (no such date)"
    return None


def _weekday_part(part: str) -> str:
    """One comma-separated crontab weekday term in APScheduler's day names; steps are expanded."""
    base, _, step = part.partition("/")
    if not step:
        if re.search(r"\d\d|[89]", base):   # 10 would become "monsun"; cron weekdays are 0-7
            raise ValueError(f"crontab weekday must be 0-7 or a day name, got {part!r}")
        return re.sub(r"[0-7]", lambda m: _WEEKDAYS[int(m.group(0))], base)
    lo, _, hi = ("0-6" if base == "*" else base).partition("-")
    if not (lo.isdigit() and (hi or "6").isdigit() and step.isdigit()):
        raise ValueError(f"unsupported crontab weekday term {part!r}")
    days = range(int(lo), int(hi or 6) + 1, int(step))
    return ",".join(dict.fromkeys(_WEEKDAYS[d] for d in days))
