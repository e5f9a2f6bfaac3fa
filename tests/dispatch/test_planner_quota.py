"""The planner does not schedule sends past a vendor's known daily quota (skip_reason 'vendor_quota')."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.clock import FixedClock
from engine.schedule.campaign import parse_campaign
from engine.schedule.planner import plan_campaign
from tests.schedule.test_planner import SPEC, chooser, population, ranker  # noqa: F401  (fixture)


def test_sends_before_an_exhausted_quota_resets_are_skipped_as_vendor_quota(store, population):  # noqa: F811
    now = datetime(2011, 11, 2, 0, 30, tzinfo=UTC)
    store.execute("""INSERT INTO vendor_quota VALUES ('apns', 'app', 'marketing', DATE '2011-11-02', 50, NULL,
                     TIMESTAMPTZ '2011-11-02 00:10:00+00', TIMESTAMPTZ '2011-11-03 00:00:00+00')""")
    spec = SPEC | {"limits": {"holdout_share": 0.0, "frequency_cap": 1, "frequency_days": 7}}
    report = plan_campaign(store, parse_campaign(spec), chooser, ranker, clock=FixedClock(now))
    rows = store.execute("""SELECT d.vendor, p.action, p.skip_reason FROM decisions p
                            JOIN devices d ON d.device_id = p.device_id""").fetchall()
    apns = [(a, r) for v, a, r in rows if v == "apns"]
    fcm = [(a, r) for v, a, r in rows if v == "fcm"]
    assert apns and all(r in ("vendor_quota", "no_consent") for _, r in apns)
    assert ("send", None) in fcm and all(r != "vendor_quota" for _, r in fcm)
    assert report.skipped["vendor_quota"] == sum(r == "vendor_quota" for _, r in apns) > 0
