"""The outbox state machine: claim, receipts, retries, deactivation, crash recovery, consent at send time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from engine.dispatch import RetryPolicy, claim_due, record_receipts, recover_in_flight
from engine.domain import Outcome, Receipt

T0 = datetime(2011, 11, 1, 10, tzinfo=UTC)
POLICY = RetryPolicy(max_attempts=3, base_seconds=10, cap_seconds=100, max_total_seconds=1000)


@pytest.fixture
def outbox(store):
    store.execute("INSERT INTO users VALUES ('u1', 'UK', 'Europe/London', 't', NULL, NULL), "
                  "('u2', 'UK', 'Europe/London', 't', NULL, NULL)")
    for u in ("u1", "u2"):
        store.execute("INSERT INTO consents VALUES (?, 'push', 'marketing', true, ?, false)", [u, T0])
        store.execute("INSERT INTO devices (device_id, user_id, vendor, app_id, token, active, registered_at) "
                      "VALUES (?, ?, 'apns', 'app', ?, true, ?)", [f"d-{u}", u, f"tok-{u}", T0 - timedelta(days=30)])
    for i, u in enumerate(["u1", "u2", "u1"]):
        store.execute(
            """INSERT INTO sends (send_id, decision_id, campaign_id, user_id, device_id, vendor, message_class,
                                  title, body, data, due_at, state, next_attempt_at, updated_at)
               VALUES (?, ?, 'c', ?, ?, 'apns', 'marketing', 't', 'b', '{}', ?, 'pending', ?, ?)""",
            [f"s{i}", f"d{i}", u, f"d-{u}", T0 + timedelta(hours=i), T0 + timedelta(hours=i), T0])
    return store


def _states(store):
    return dict(store.execute("SELECT send_id, state FROM sends ORDER BY send_id").fetchall())


def test_only_due_sends_are_claimed_and_each_only_once(outbox):
    first = claim_due(outbox, T0 + timedelta(minutes=90), limit=10)
    assert first["send_id"].tolist() == ["s0", "s1"]
    assert first["token"].tolist() == ["tok-u1", "tok-u2"]
    assert first["attempts"].tolist() == [1, 1]
    assert claim_due(outbox, T0 + timedelta(minutes=90), limit=10).empty


def test_receipts_move_sends_to_their_states_and_invalid_token_deactivates_the_device(outbox):
    now = T0 + timedelta(hours=3)
    claimed = claim_due(outbox, now, 10)
    receipts = [Receipt("s0", Outcome.DELIVERED, 200, vendor_message_id="m0"),
                Receipt("s1", Outcome.INVALID_TOKEN, 410, "Unregistered"),
                Receipt("s2", Outcome.TRANSIENT, 503, "ServiceUnavailable", retry_after=50.0)]
    states = record_receipts(outbox, claimed, receipts, now, POLICY, np.random.default_rng(0))
    assert states == {"delivered": 1, "invalid_token": 1, "retry": 1}
    assert _states(outbox) == {"s0": "delivered", "s1": "invalid_token", "s2": "retry"}
    assert outbox.scalar("SELECT vendor_message_id FROM sends WHERE send_id = 's0'") == "m0"
    assert outbox.execute("SELECT device_id, active FROM devices ORDER BY 1").fetchall() == [
        ("d-u1", True), ("d-u2", False)]
    delay = outbox.scalar("SELECT epoch(next_attempt_at) - epoch(?) FROM sends WHERE send_id = 's2'", [now])
    assert delay == pytest.approx(50.0)  # Retry-After (50 s) is longer than the jittered 5–10 s backoff
    assert outbox.count("send_attempts") == 3


def test_a_token_re_registered_after_the_410_timestamp_stays_active(outbox):
    claimed = claim_due(outbox, T0 + timedelta(hours=1), 10)
    stale = T0 - timedelta(days=60)  # APNs last saw the token invalid before the device registered again
    receipts = [Receipt("s0", Outcome.INVALID_TOKEN, 410, "Unregistered", token_invalid_since=stale),
                Receipt("s1", Outcome.DELIVERED, 200)]
    record_receipts(outbox, claimed, receipts, T0 + timedelta(hours=1), POLICY, np.random.default_rng(0))
    assert outbox.scalar("SELECT active FROM devices WHERE device_id = 'd-u1'") is True


def test_retries_are_bounded_and_end_in_failed(outbox):
    now = T0 + timedelta(hours=5)
    for attempt in range(1, 4):
        claimed = claim_due(outbox, now, 10)
        claimed = claimed[claimed["send_id"] == "s0"]
        assert claimed["attempts"].tolist() == [attempt]
        record_receipts(outbox, claimed, [Receipt("s0", Outcome.TRANSIENT, 500)], now, POLICY,
                        np.random.default_rng(attempt))
        now = outbox.scalar("SELECT next_attempt_at FROM sends WHERE send_id = 's0'") + timedelta(seconds=1)
        outbox.execute("UPDATE sends SET state = 'delivered' WHERE send_id <> 's0'")
    assert outbox.execute("SELECT state, attempts, last_error FROM sends WHERE send_id = 's0'").fetchone() == (
        "failed", 3, "retries exhausted: transient ")


def test_crash_recovery_resends_in_flight_with_the_same_id(outbox):
    claimed = claim_due(outbox, T0 + timedelta(hours=1), 10)
    assert set(claimed["send_id"]) == {"s0", "s1"}
    # the dispatcher dies here, before any receipt is written
    assert recover_in_flight(outbox, T0 + timedelta(hours=2)) == 2
    again = claim_due(outbox, T0 + timedelta(hours=2), 10)
    assert set(again["send_id"]) == {"s0", "s1", "s2"}
    assert dict(zip(again["send_id"], again["attempts"], strict=True)) == {"s0": 2, "s1": 2, "s2": 1}


def test_consent_withdrawn_after_planning_cancels_the_send(outbox):
    outbox.execute("UPDATE consents SET granted = false WHERE user_id = 'u2'")
    outbox.execute("UPDATE devices SET active = false WHERE user_id = 'u1'")
    claimed = claim_due(outbox, T0 + timedelta(hours=5), 10)
    assert claimed.empty
    rows = outbox.execute("SELECT send_id, state, last_error FROM sends ORDER BY 1").fetchall()
    assert rows == [("s0", "cancelled", "device inactive"), ("s1", "cancelled", "consent withdrawn"),
                    ("s2", "cancelled", "device inactive")]
