"""Preferred local hours → concrete UTC send times inside the window, outside quiet hours."""

from datetime import UTC, datetime

import pandas as pd

from engine.schedule.sendtime import resolve_send_times

START = datetime(2011, 11, 1, tzinfo=UTC)  # a Tuesday
END = datetime(2011, 11, 8, tzinfo=UTC)


def _resolve(rows):
    prefs = pd.DataFrame(rows, columns=["user_id", "time_zone", "rank", "weekday", "local_hour"])
    out = resolve_send_times(prefs, START, END, 21 * 60, 8 * 60)
    return {r.user_id: (pd.Timestamp(r.send_at).isoformat(), r.pref_rank) for r in out.itertuples()}


def test_best_allowed_hour_in_the_users_own_time_zone():
    got = _resolve([
        ("london", "Europe/London", 0, 1, 22),   # Tue 22:00 is quiet → next preference
        ("london", "Europe/London", 1, 2, 10),
        ("tokyo", "Asia/Tokyo", 0, 0, 9),
        ("newyork", "America/New_York", 0, 6, 12),  # Sunday 6 Nov 2011: US DST ended that night
    ])
    assert got == {
        "london": ("2011-11-02T10:00:00+00:00", 1),
        "tokyo": ("2011-11-07T00:00:00+00:00", 0),
        "newyork": ("2011-11-06T17:00:00+00:00", 0),
    }


def test_a_slot_already_past_this_week_moves_to_next_week_only_if_inside_the_window():
    # Tuesday 00:00 London is the window start itself → allowed? 00:00 is quiet; Tuesday 09:00 is fine
    got = _resolve([("a", "Europe/London", 0, 1, 9), ("b", "Asia/Tokyo", 0, 1, 8)])
    assert got["a"] == ("2011-11-01T09:00:00+00:00", 0)
    # Tue 08:00 Tokyo = Mon 23:00 UTC, before the window: next Tuesday is Nov 7 23:00 UTC, inside
    assert got["b"] == ("2011-11-07T23:00:00+00:00", 0)


def test_user_with_only_quiet_preferences_gets_no_time():
    assert _resolve([("owl", "Europe/London", 0, 3, 23), ("owl", "Europe/London", 1, 4, 2)]) == {}


def test_marketing_through_vivo_skips_hours_outside_vivos_china_time_window():
    # A vivo phone in London: Wed 16:00 London is 00:00 China (vivo refuses operational messages
    # 23:00-07:00 China), so the next preference is used; an APNs user keeps the same hour.
    prefs = pd.DataFrame([
        ("vivo_user", "Europe/London", 0, 2, 16, "vivo"), ("vivo_user", "Europe/London", 1, 3, 10, "vivo"),
        ("apns_user", "Europe/London", 0, 2, 16, "apns"), ("apns_user", "Europe/London", 1, 3, 10, "apns"),
    ], columns=["user_id", "time_zone", "rank", "weekday", "local_hour", "vendor"])
    marketing = resolve_send_times(prefs, START, END, 21 * 60, 8 * 60, "marketing").set_index("user_id")
    service = resolve_send_times(prefs, START, END, 21 * 60, 8 * 60, "transactional").set_index("user_id")
    assert pd.Timestamp(marketing.loc["vivo_user", "send_at"]).isoformat() == "2011-11-03T10:00:00+00:00"
    assert pd.Timestamp(marketing.loc["apns_user", "send_at"]).isoformat() == "2011-11-02T16:00:00+00:00"
    assert pd.Timestamp(service.loc["vivo_user", "send_at"]).isoformat() == "2011-11-02T16:00:00+00:00"
