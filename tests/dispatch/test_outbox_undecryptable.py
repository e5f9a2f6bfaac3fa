"""A device token that cannot be decrypted ends its own send, not the claimed batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.dispatch import claim_due
from engine.security.crypto import Keyring

T0 = datetime(2011, 11, 1, 10, tzinfo=UTC)
KEYRING = Keyring((("k1", bytes(range(32))),))
OTHER = Keyring((("k9", bytes(range(1, 33))),))


@pytest.fixture
def outbox(store):
    """Three due sends to three users; u2's token is corrupted, u3's is under a key nobody holds."""
    tokens = {"u1": KEYRING.encrypt("tok-u1", "devices.token"),
              "u2": KEYRING.encrypt("tok-u2", "devices.token")[:-6] + "AAAAAA",
              "u3": OTHER.encrypt("tok-u3", "devices.token")}
    for i, (u, token) in enumerate(tokens.items()):
        store.execute("INSERT INTO users VALUES (?, 'UK', 'Europe/London', 't', NULL, NULL)", [u])
        store.execute("INSERT INTO consents VALUES (?, 'push', 'marketing', true, ?, false)", [u, T0])
        store.execute("INSERT INTO devices (device_id, user_id, vendor, app_id, token, active, registered_at) "
                      "VALUES (?, ?, 'apns', 'app', ?, true, ?)", [f"d-{u}", u, token, T0 - timedelta(days=1)])
        store.execute(
            """INSERT INTO sends (send_id, decision_id, campaign_id, user_id, device_id, vendor, message_class,
                                  title, body, data, due_at, state, next_attempt_at, updated_at)
               VALUES (?, ?, 'c', ?, ?, 'apns', 'marketing', 't', 'b', '{}', ?, 'pending', ?, ?)""",
            [f"s{i}", f"dec{i}", u, f"d-{u}", T0, T0, T0])
    return store


def test_undecryptable_tokens_fail_their_send_and_the_rest_of_the_batch_proceeds(outbox):
    claimed = claim_due(outbox, T0 + timedelta(minutes=1), limit=10, keyring=KEYRING)
    assert claimed["send_id"].tolist() == ["s0"]
    assert claimed["token"].tolist() == ["tok-u1"]
    rows = outbox.execute("SELECT send_id, state, last_error FROM sends ORDER BY 1").fetchall()
    assert rows[0] == ("s0", "in_flight", None)
    assert rows[1] == ("s1", "failed", "device token cannot be decrypted: "
                       "a value in devices.token failed authentication (altered, or another column's)")
    assert rows[2][:2] == ("s2", "failed")
    assert rows[2][2].startswith("device token cannot be decrypted: devices.token is encrypted under data key 'k9'")
    # nothing is stranded, and no claim picks the failed sends up again
    assert outbox.scalar("SELECT count(*) FROM sends WHERE state = 'in_flight'") == 1
    assert claim_due(outbox, T0 + timedelta(hours=1), limit=10, keyring=KEYRING).empty


def test_the_failure_reason_never_holds_the_token_or_its_ciphertext(outbox):
    claim_due(outbox, T0 + timedelta(minutes=1), limit=10, keyring=KEYRING)
    stored = [t for (t,) in outbox.execute("SELECT token FROM devices").fetchall()]
    for (reason,) in outbox.execute("SELECT last_error FROM sends WHERE state = 'failed'").fetchall():
        assert "tok-" not in reason
        assert not any(t.split(":")[-1][:12] in reason for t in stored)
