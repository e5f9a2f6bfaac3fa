"""Data-key encryption: round trip, column binding, tampering, unknown keys, rotation, the key file."""

from __future__ import annotations

import stat

import pytest

from engine.security.crypto import CryptoError, Keyring, load_keyring
from engine.service.operations import register_device, rotate_data_key
from engine.store import Store

K1 = Keyring((("k1", bytes(range(32))),))


def test_round_trip_and_legacy_plaintext_passes_through():
    sealed = K1.encrypt("tok-123", "devices.token")
    assert sealed.startswith("pw1:k1:") and "tok-123" not in sealed
    assert K1.decrypt(sealed, "devices.token") == "tok-123"
    assert K1.encrypt("tok-123", "devices.token") != sealed          # fresh nonce each time
    assert K1.decrypt("legacy-plain", "devices.token") == "legacy-plain"


@pytest.mark.parametrize(("mutate", "column", "message"), [
    (lambda s: s, "api_keys.signing_secret", "another column's"),
    (lambda s: s[:-4] + ("AAAA" if not s.endswith("AAAA") else "BBBB"), "devices.token", "failed authentication"),
    (lambda s: s.replace("pw1:k1:", "pw1:k9:"), "devices.token", "data key 'k9'"),
    (lambda s: "pw1:k1:%%%", "devices.token", "malformed ciphertext"),
])
def test_tampered_misplaced_or_foreign_values_do_not_decrypt(mutate, column, message):
    sealed = mutate(K1.encrypt("tok-123", "devices.token"))
    with pytest.raises(CryptoError, match=message) as info:
        K1.decrypt(sealed, column)
    assert "tok-123" not in str(info.value)


def test_rotation_reencrypts_every_token_and_hashes_stay_stable(clock):
    store = Store(":memory:")
    for n in range(3):
        register_device(store, K1, user_id=f"u{n}", vendor="apns", token=f"{n:064x}", now=clock.now())
    k2 = K1.with_new_key()
    assert k2.current_id == "k2" and k2.token_hash("apns", "0" * 64) == K1.token_hash("apns", "0" * 64)
    assert rotate_data_key(store, k2) == {"devices.token": 3, "api_keys.signing_secret": 0,
                                          "vendor_secrets.ciphertext": 0}
    tokens = [r[0] for r in store.execute("SELECT token FROM devices ORDER BY user_id").fetchall()]
    assert all(t.startswith("pw1:k2:") for t in tokens)
    assert [k2.decrypt(t, "devices.token") for t in tokens] == [f"{n:064x}" for n in range(3)]
    assert rotate_data_key(store, k2)["devices.token"] == 0        # idempotent


def test_key_file_is_created_owner_only_and_env_keys_win(tmp_path):
    path = tmp_path / "cfg" / "data.keys"
    ring = load_keyring(env={}, key_file=path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_keyring(env={}, key_file=path).keys == ring.keys
    env_ring = load_keyring(env={"PUSHWISE_DATA_KEYS": "a1:" + "22" * 32 + ",b2:" + "33" * 32}, key_file=path)
    assert env_ring.current_id == "b2" and env_ring.source == "env"
