"""Rate limits, daily quotas per (vendor, app, class), and the edges of the retry bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from engine.dispatch import (
    RetryPolicy,
    TokenBucket,
    VendorLimits,
    claim_due,
    next_reset,
    plannable,
    quota_day,
    quota_state,
    record_receipts,
)
from engine.domain import Outcome, Receipt

T0 = datetime(2025, 3, 1, 15, 30, tzinfo=UTC)   # 23:30 in Beijing


class Tick:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_grants_its_burst_then_refills_at_its_rate():
    now = Tick()
    bucket = TokenBucket(rate=10, now=now)
    assert bucket.take(25) == 10
    assert bucket.take(1) == 0
    now.t += 0.35
    assert bucket.take(25) == 3
    bucket.give_back(2)
    assert bucket.available() == 2
    assert bucket.seconds_until(5) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="rate must be positive, got 0"):
        TokenBucket(rate=0)


def test_vendor_limits_only_bind_configured_vendors_and_refund_unused_tokens():
    now = Tick()
    limits = VendorLimits({"huawei": 5, "apns": 0}, now=now)
    granted = limits.allowance(["apns", "huawei"], 100)
    assert granted == {"huawei": 5}
    limits.refund(granted, {"huawei": 2})
    assert limits.buckets["huawei"].available() == 3


def test_vendor_days_reset_at_china_midnight_for_chinese_vendors_and_utc_midnight_otherwise():
    assert quota_day("xiaomi", T0).isoformat() == "2025-03-01"
    assert quota_day("xiaomi", T0 + timedelta(hours=1)).isoformat() == "2025-03-02"   # 00:30 Beijing
    assert next_reset("oppo", T0) == datetime(2025, 3, 1, 16, tzinfo=UTC)
    assert next_reset("apns", T0) == datetime(2025, 3, 2, 0, tzinfo=UTC)
    assert next_reset("fcm", T0 + timedelta(hours=9)) == datetime(2025, 3, 3, 0, tzinfo=UTC)


def test_plannable_refuses_sends_past_a_known_quota_but_not_after_the_reset():
    state = pd.DataFrame({"vendor": ["xiaomi", "vivo"], "app_id": ["app", "app"],
                          "message_class": ["marketing", "marketing"], "accepted": [0, 8], "daily_limit": [None, 10],
                          "exhausted": [True, False],
                          "resets_at": [pd.Timestamp("2025-03-01 16:00", tz="UTC")] * 2})
    planned = pd.DataFrame({
        "vendor": ["xiaomi", "xiaomi", "xiaomi", "vivo", "vivo", "vivo", "apns"],
        "app_id": ["app", "app", "app", "app", "app", "app", "app"],
        "message_class": ["marketing", "transactional", "marketing", "marketing", "marketing", "marketing",
                          "marketing"],
        "send_at": pd.to_datetime(["2025-03-01 15:40", "2025-03-01 15:40", "2025-03-01 16:10",
                                   "2025-03-01 15:50", "2025-03-01 15:40", "2025-03-01 15:45",
                                   "2025-03-01 15:40"], utc=True),
    }, index=[10, 11, 12, 13, 14, 15, 16])
    ok = plannable(planned, state)
    # xiaomi marketing exhausted before the reset only; vivo has room for 2 more today, earliest first
    assert ok.to_dict() == {10: False, 11: True, 12: True, 13: False, 14: True, 15: True, 16: True}


@pytest.fixture
def outbox(store):
    store.execute("INSERT INTO users VALUES ('u1', 'CN', 'Asia/Shanghai', 't', NULL, NULL)")
    store.execute("INSERT INTO consents VALUES ('u1', 'push', 'marketing', true, ?, false)", [T0])
    store.execute("INSERT INTO devices (device_id, user_id, vendor, app_id, token, active, registered_at) "
                  "VALUES ('d1', 'u1', 'xiaomi', 'app', 'tok', true, ?)", [T0 - timedelta(days=3)])
    for i in range(4):
        store.execute(
            """INSERT INTO sends (send_id, decision_id, campaign_id, user_id, device_id, vendor, message_class,
                                  title, body, data, due_at, state, next_attempt_at, updated_at)
               VALUES (?, ?, 'c', 'u1', 'd1', 'xiaomi', 'marketing', 't', 'b', '{}', ?, 'pending', ?, ?)""",
            [f"s{i}", f"d{i}", T0, T0, T0])
    return store


def test_quota_exhausted_holds_the_key_until_the_vendors_day_resets_without_failing(outbox):
    policy = RetryPolicy(max_attempts=2)
    claimed = claim_due(outbox, T0, limit=2)
    receipts = [Receipt("s0", Outcome.DELIVERED, 200), Receipt("s1", Outcome.QUOTA_EXHAUSTED, 200, "200001")]
    assert record_receipts(outbox, claimed, receipts, T0, policy, np.random.default_rng(0)) == {
        "delivered": 1, "retry": 1}
    row = outbox.execute("SELECT state, attempts, next_attempt_at FROM sends WHERE send_id = 's1'").fetchone()
    assert row == ("retry", 0, datetime(2025, 3, 1, 16, tzinfo=UTC))
    state = quota_state(outbox, T0)
    assert state[["accepted", "exhausted"]].values.tolist() == [[1, True]]
    assert claim_due(outbox, T0 + timedelta(minutes=29), limit=10).empty      # s2, s3 wait too
    after = claim_due(outbox, datetime(2025, 3, 1, 16, 0, 1, tzinfo=UTC), limit=10)
    assert sorted(after["send_id"]) == ["s1", "s2", "s3"]


def test_claim_honours_per_vendor_limits(outbox):
    claimed = claim_due(outbox, T0, limit=10, vendor_limits={"xiaomi": 3})
    assert claimed["send_id"].tolist() == ["s0", "s1", "s2"]


def test_a_vendor_that_always_answers_retry_after_1_ends_in_retries_exhausted(outbox):
    policy = RetryPolicy(max_attempts=4, base_seconds=1, cap_seconds=5, max_total_seconds=30)
    now, rng = T0, np.random.default_rng(3)
    claims = 0
    for _ in range(10):
        claims += 1
        claimed = claim_due(outbox, now, 10)
        claimed = claimed[claimed["send_id"] == "s0"]
        if claimed.empty:
            break
        record_receipts(outbox, claimed, [Receipt("s0", Outcome.RATE_LIMITED, 429, "TooManyRequests",
                                                  retry_after=1.0)], now, policy, rng)
        now = max(now, outbox.scalar("SELECT next_attempt_at FROM sends WHERE send_id = 's0'"))
        outbox.execute("UPDATE sends SET state = 'delivered' WHERE send_id <> 's0'")
    assert claims == 5   # four attempts, then nothing more to claim
    assert outbox.execute("SELECT state, attempts, last_error FROM sends WHERE send_id = 's0'").fetchone() == (
        "failed", 4, "retries exhausted: rate_limited TooManyRequests")


def test_a_long_retry_after_is_bounded_by_the_total_delay(outbox):
    policy = RetryPolicy(max_attempts=10, max_total_seconds=600)
    claimed = claim_due(outbox, T0, 1)
    record_receipts(outbox, claimed, [Receipt("s0", Outcome.TRANSIENT, 503, retry_after=7200.0)], T0, policy,
                    np.random.default_rng(0))
    assert outbox.scalar("SELECT state FROM sends WHERE send_id = 's0'") == "failed"


def test_a_send_its_vendor_cannot_carry_goes_through_the_fallback_device(store):
    from engine.dispatch.routing import choose_route, reroute

    store.execute("INSERT INTO users VALUES ('u1', 'DE', 'Europe/Berlin', 't', NULL, NULL)")
    store.execute("INSERT INTO devices (device_id, user_id, vendor, app_id, token, active, registered_at) VALUES "
                  "('hw', 'u1', 'huawei', 'app', '', true, ?), ('gms', 'u1', 'fcm', 'app', 'ftok', true, ?)",
                  [T0, T0 - timedelta(days=1)])
    store.execute(
        """INSERT INTO sends (send_id, decision_id, campaign_id, user_id, device_id, vendor, message_class,
                              title, body, data, due_at, state, next_attempt_at, updated_at)
           VALUES ('s0', 'd0', 'c', 'u1', 'hw', 'huawei', 'marketing', 't', 'b', '{}', ?, 'pending', ?, ?)""",
        [T0, T0, T0])
    assert reroute(store, ["huawei", "apns"], {"huawei": "fcm"}, T0) == 0    # fcm not enabled: stays
    assert reroute(store, ["huawei", "fcm"], {"huawei": "fcm"}, T0) == 1     # no HMS token: through FCM
    assert store.execute("SELECT vendor, device_id, last_error FROM sends").fetchone() == (
        "fcm", "gms", "routed: huawei→fcm")
    devices = store.df("SELECT device_id, vendor, token, active, registered_at FROM devices")
    assert choose_route(devices, "huawei", {"huawei": "fcm"}, {"huawei", "fcm"}) == "gms"
    assert choose_route(devices, "huawei", {}, {"huawei", "fcm"}) is None


def test_a_send_to_a_deactivated_device_goes_through_the_fallback_like_choose_route_says(store):
    """A Huawei device whose HMS token died after planning (deactivated) is a phone without an HMS
    token: the send takes the fallback route the planner's `choose_route` would pick, not cancelled."""
    from engine.dispatch.routing import choose_route, reroute

    store.execute("INSERT INTO users VALUES ('u1', 'DE', 'Europe/Berlin', 't', NULL, NULL)")
    store.execute("INSERT INTO devices (device_id, user_id, vendor, app_id, token, active, registered_at) VALUES "
                  "('hw', 'u1', 'huawei', 'app', 'htok', false, ?), ('gms', 'u1', 'fcm', 'app', 'ftok', true, ?)",
                  [T0, T0 - timedelta(days=1)])
    store.execute(
        """INSERT INTO sends (send_id, decision_id, campaign_id, user_id, device_id, vendor, message_class,
                              title, body, data, due_at, state, next_attempt_at, updated_at)
           VALUES ('s0', 'd0', 'c', 'u1', 'hw', 'huawei', 'marketing', 't', 'b', '{}', ?, 'pending', ?, ?)""",
        [T0, T0, T0])
    devices = store.df("SELECT device_id, vendor, token, active, registered_at FROM devices")
    assert choose_route(devices, "huawei", {"huawei": "fcm"}, {"huawei", "fcm"}) == "gms"
    assert reroute(store, ["huawei", "fcm"], {"huawei": "fcm"}, T0) == 1
    assert store.execute("SELECT vendor, device_id, state FROM sends").fetchone() == ("fcm", "gms", "pending")


def test_rate_limits_come_from_each_vendor_section():
    from engine.config import VendorsConfig

    vendors = VendorsConfig()
    vendors.apns.rate_per_second = 50
    vendors.xiaomi.rate_per_second = 5
    limits = VendorLimits.from_settings(vendors)
    assert sorted(limits.buckets) == ["apns", "xiaomi"]
    assert limits.buckets["apns"].burst == 50 and limits.buckets["xiaomi"].rate == 5


def test_daily_limits_are_the_published_floors_overlaid_by_the_operators_figures():
    from engine.dispatch.quota import daily_limits

    assert daily_limits() == {("xiaomi", "marketing"): 10_000, ("oppo", "marketing"): 100_000,
                              ("vivo", "marketing"): 10_000}
    limits = daily_limits({"xiaomi": {"marketing": "25000"}, "vivo": {"marketing": -1},
                           "huawei": {"transactional": 500}})
    assert limits == {("xiaomi", "marketing"): 25_000, ("oppo", "marketing"): 100_000,
                      ("huawei", "transactional"): 500}


@pytest.mark.parametrize(("overrides", "message"), [
    ({"xiaomi": {"promo": 1}}, "daily_quota.xiaomi.promo: message class must be one of marketing, transactional"),
    ({"oppo": {"marketing": "lots"}}, "daily_quota.oppo.marketing must be a whole number, got 'lots'"),
    ({"oppo": {"marketing": 1.5}}, "daily_quota.oppo.marketing must be a whole number, got 1.5"),
])
def test_daily_limits_name_the_bad_key(overrides, message):
    from engine.dispatch.quota import daily_limits

    with pytest.raises(ValueError) as err:
        daily_limits(overrides)
    assert str(err.value) == message


def test_quota_state_has_a_row_for_every_limited_key_before_anything_was_sent(outbox):
    state = quota_state(outbox, T0)
    assert state.to_dict("records") == [{
        "vendor": "xiaomi", "app_id": "app", "message_class": "marketing", "accepted": 0, "daily_limit": 10_000,
        "exhausted": False, "resets_at": pd.Timestamp("2025-03-01 16:00", tz="UTC")}]
    assert quota_state(outbox, T0, limits={}).empty
    state = quota_state(outbox, T0, limits={("xiaomi", "marketing"): 3, ("xiaomi", "transactional"): 9,
                                            ("oppo", "marketing"): 5})   # no active oppo device: no row
    assert state[["message_class", "daily_limit"]].values.tolist() == [["marketing", 3], ["transactional", 9]]


def test_planning_stops_at_a_prefilled_limit_counting_what_was_accepted_today(outbox):
    from engine.dispatch.quota import record_quota

    record_quota(outbox, pd.DataFrame({"vendor": ["xiaomi"], "app_id": ["app"], "message_class": ["marketing"],
                                       "accepted": [1], "exhausted": [False]}), T0, limits={("xiaomi", "marketing"): 3})
    stored = outbox.execute("SELECT accepted, daily_limit FROM vendor_quota").fetchall()
    assert stored == [(1, 3)]                                  # the new day's row carries its limit
    state = quota_state(outbox, T0)                            # the stored limit wins over the default
    planned = pd.DataFrame({"vendor": ["xiaomi"] * 4, "app_id": ["app"] * 4, "message_class": ["marketing"] * 4,
                            "send_at": [T0 + timedelta(minutes=m) for m in (1, 2, 3, 40)]})
    assert plannable(planned, state).tolist() == [True, True, False, True]   # 00:10 Beijing is a new day


def test_a_send_refused_outside_vivos_send_window_waits_for_the_window_without_failing(outbox):
    outbox.execute("UPDATE devices SET vendor = 'vivo'")
    outbox.execute("UPDATE sends SET vendor = 'vivo'")
    policy = RetryPolicy(max_attempts=6, max_total_seconds=3600)
    claimed = claim_due(outbox, T0, limit=1)
    opens_in = 7.5 * 3600   # T0 is 23:30 China time; operational messages may go again at 07:00
    receipts = [Receipt("s0", Outcome.RATE_LIMITED, 200, "10071", retry_after=opens_in,
                        not_before=T0 + timedelta(seconds=opens_in))]
    record_receipts(outbox, claimed, receipts, T0, policy, np.random.default_rng(0))
    row = outbox.execute("SELECT state, attempts, next_attempt_at FROM sends WHERE send_id = 's0'").fetchone()
    assert row == ("retry", 0, T0 + timedelta(seconds=opens_in))
