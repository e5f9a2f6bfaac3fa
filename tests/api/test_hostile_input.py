"""Hostile input found by the adversarial review (issue 5): each gets a 4xx naming the problem, never a 5xx."""

from __future__ import annotations

import json

import pytest

from engine.errors import InputError
from engine.security import sign_request
from engine.service.operations import register_device
from tests.api.conftest import NOW, auth

pytestmark = pytest.mark.network

APNS = "ab" * 32
EVENT = {"user_id": "u1", "event_type": "view", "ts": "2026-01-15T08:00:00Z"}


@pytest.mark.parametrize("zone", ["localtime", "posixrules", "right/UTC", "posix/Europe/London"])
def test_time_zones_the_store_cannot_use_are_refused(service, zone):
    # zoneinfo loads these files, but DuckDB's ICU does not know the names: a device registered with one
    # used to make every later trigger that named its user fail with 503
    ctx, client, keys = service
    r = client.post("/v1/devices", headers=auth(keys["ingest"]),
                    json={"user_id": "u1", "vendor": "apns", "token": APNS, "time_zone": zone})
    assert r.status_code == 422 and "unknown time zone" in r.text
    assert ctx.store.count("devices") == 0


def test_the_command_line_path_checks_the_time_zone_too(service):
    ctx, _, _ = service
    with pytest.raises(InputError, match="unknown time zone"):
        register_device(ctx.store, ctx.keyring, user_id="u1", vendor="apns", token=APNS, now=NOW,
                        time_zone="Mars/Olympus")
    assert ctx.store.count("devices") == 0


def test_a_stored_zone_the_store_cannot_use_does_not_break_triggers(service):
    # users loaded before the check (or by other paths) may carry such a zone: plan them in UTC
    ctx, client, keys = service
    client.post("/v1/devices", headers=auth(keys["ingest"]), json={"user_id": "u1", "vendor": "apns", "token": APNS})
    client.put("/v1/consents", headers=auth(keys["ingest"]),
               json={"user_id": "u1", "message_class": "marketing", "granted": True})
    client.post("/v1/events", headers=auth(keys["ingest"]), json={"events": [EVENT]})
    ctx.store.execute("UPDATE users SET time_zone = 'right/UTC' WHERE user_id = 'u1'")
    r = client.post("/v1/triggers", headers=auth(keys["send"]),
                    json={"name": "x", "title": "t", "body": "b", "user_ids": ["u1"], "when": "best_time"})
    assert r.status_code == 202, r.text
    assert r.json()["sends"] == 1
    due = ctx.store.execute("SELECT due_at FROM sends").fetchall()[0][0]
    assert due.hour == 8   # the user's most active hour, read in UTC


def test_a_signed_timestamp_of_non_ascii_digits_is_a_401(service):
    # '²' is a digit to str.isdigit() but not to int(): it used to answer 500
    ctx, client, keys = service
    body = json.dumps({"events": [EVENT]}).encode()
    headers = sign_request(keys["ingest"], "POST", "/v1/events", body)
    headers["X-Pushwise-Timestamp"] = "\u00b2"
    r = client.post("/v1/events", content=body, headers={**{k: v.encode("latin-1") for k, v in headers.items()},
                                                          "Content-Type": "application/json"})
    assert r.status_code == 401 and "X-Pushwise-Timestamp must be Unix seconds" in r.text
    assert ctx.store.count("events") == 0


def test_a_chunked_body_over_the_limit_is_a_413(service):
    # without a Content-Length the limit is found while reading, inside FastAPI's body parsing
    ctx, client, keys = service

    def chunks():
        yield b'{"events": ['
        for _ in range(ctx.max_body_bytes // 50_000 + 1):
            yield b" " * 50_000
        yield b"]}"

    r = client.post("/v1/events", content=chunks(), headers={**auth(keys["ingest"]), "Content-Type": "application/json"})
    assert r.status_code == 413 and "larger than" in r.text


@pytest.mark.parametrize(("value", "where"), [
    (b"NaN", "properties.k"), (b"Infinity", "properties.k"), (b"-Infinity", "properties.k"),
    (b"1" + b"0" * 400, "properties.k"),
])
def test_event_properties_must_be_finite_numbers(service, value, where):
    # Python's JSON parser takes NaN and Infinity: stored as JSON they made the events table hold invalid JSON
    ctx, client, keys = service
    body = b'{"events": [{"user_id": "u1", "event_type": "view", "ts": "2026-01-15T08:00:00Z", "properties": {"k": ' \
        + value + b"}}]}"
    r = client.post("/v1/events", content=body, headers={**auth(keys["ingest"]), "Content-Type": "application/json"})
    assert r.status_code == 422 and where in r.text, r.text
    assert ctx.store.count("events") == 0


def test_rotating_the_data_key_hands_the_new_keyring_to_the_rest_of_the_service(service, monkeypatch):
    # the dispatcher decrypts tokens with the keyring it was given; after a rotation through the API it
    # must get the new one, or every send of a re-encrypted token fails
    ctx, client, keys = service
    client.post("/v1/devices", headers=auth(keys["ingest"]), json={"user_id": "u1", "vendor": "apns", "token": APNS})
    seen = []
    ctx.keyring_listeners.append(seen.append)
    monkeypatch.setenv("PUSHWISE_DATA_KEYS", f"k1:{'11' * 32},k2:{'22' * 32}")
    r = client.post("/v1/admin/rotate-data-key", headers=auth(keys["admin"]))
    assert r.status_code == 200 and r.json()["current_key"] == "k2"
    assert [k.current_id for k in seen] == ["k2"]
    token = ctx.store.execute("SELECT token FROM devices").fetchall()[0][0]
    assert seen[0].decrypt(token, "devices.token") == APNS



def test_a_flood_of_refused_requests_writes_a_bounded_number_of_audit_rows(service):
    # every 401 used to be an INSERT and a commit: keyless callers could fill the disk and hold the loop
    # (3,000 refused requests: 3,000 rows, about 130 a second on 2 cores). The clock is fixed, so the
    # bucket never refills: exactly its burst is written, and every refusal is still counted in /metrics.
    ctx, client, keys = service
    ctx.denials_audited_per_second = 1.0    # a burst of 2
    codes = [client.post("/v1/events", json={}, headers=auth(f"pwk_{n:012x}_nope")).status_code for n in range(10)]
    assert codes == [401] * 10
    rows = ctx.store.execute("SELECT count(*) FROM audit_log WHERE action = 'auth.denied'").fetchall()[0][0]
    assert rows == 2
    assert ctx.metrics.denied.labels("401")._value.get() == 10


def test_any_stored_user_id_can_be_erased_through_the_api(service):
    # ingested files may name users with spaces or accents; `pushwise erase` goes through the API while
    # the service runs, and the id pattern of the write endpoints used to refuse them (422)
    ctx, client, keys = service
    ctx.store.execute("""INSERT INTO users (user_id, time_zone, source)
                         VALUES ('Zoë Brontë', 'UTC', 'csv'), ('u9', 'UTC', 'csv')""")
    r = client.post("/v1/admin/erase", headers=auth(keys["admin"]), json={"user_id": "Zoë Brontë"})
    assert r.status_code == 200 and r.json()["deleted"]["users"] == 1
    near = client.post("/v1/admin/erase", headers=auth(keys["admin"]), json={"user_id": " u9"})
    assert near.status_code == 200 and near.json()["deleted"]["users"] == 0   # not stripped into "u9"
    assert ctx.store.execute("SELECT user_id FROM users").fetchall() == [("u9",)]


def _subscription(endpoint: str = "https://fcm.googleapis.com/fcm/send/abc") -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from engine.push.webpush import subscription_token

    point = ec.derive_private_key(7, ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return subscription_token(endpoint, point, bytes(range(16)))


def test_a_web_push_device_is_registered_with_the_subscription_the_channel_sends_to(service):
    # the API took only a bare https:// endpoint, which the Web Push channel then rejected on every send
    # ("not a subscription JSON"); the subscription itself was refused with 422
    ctx, client, keys = service
    sub = _subscription()
    ok = client.post("/v1/devices", headers=auth(keys["ingest"]), json={"user_id": "u1", "vendor": "webpush", "token": sub})
    assert ok.status_code == 200, ok.text
    stored = ctx.keyring.decrypt(ctx.store.execute("SELECT token FROM devices").fetchall()[0][0], "devices.token")
    assert json.loads(stored) == json.loads(sub)
    for bad in ("https://push.example/wpush/v2/abc", _subscription("http://push.example/x"), '{"endpoint": 1}'):
        r = client.post("/v1/devices", headers=auth(keys["ingest"]),
                        json={"user_id": "u2", "vendor": "webpush", "token": bad})
        assert r.status_code == 422 and "Web Push token is the subscription JSON" in r.text
        assert "push.example" not in r.text


def test_events_from_the_future_are_refused_so_retention_can_purge_them(service):
    # retention deletes by event time: an event dated 2100 was accepted and outlived every retention
    ctx, client, keys = service   # the service's clock reads 2026-01-15T09:00Z
    soon = {**EVENT, "ts": "2026-01-16T08:00:00Z"}
    later = {**EVENT, "ts": "2100-01-01T00:00:00Z"}
    r = client.post("/v1/events", headers=auth(keys["ingest"]), json={"events": [soon, later]})
    assert r.status_code == 422 and "events.1.ts is more than a day ahead of the server clock" in r.text
    assert ctx.store.count("events") == 0
    ok = client.post("/v1/events", headers=auth(keys["ingest"]), json={"events": [soon]})
    assert ok.status_code == 200 and ok.json()["stored"] == 1


def test_a_nonce_pushed_out_of_a_full_cache_is_still_a_replay(tmp_path):
    # a caller with a key of its own could fill the cache with fresh nonces to push out someone else's,
    # then replay that request within its timestamp window; the persisted nonces still know it
    from engine.security import NonceCache
    from engine.store import Store

    with Store(tmp_path / "n.duckdb") as store:
        cache = NonceCache.persistent(store, 1_000.0, max_entries=2)
        assert cache.add("victim", "nonce-0001", 1_000.0)
        assert cache.add("flood", "nonce-0002", 1_001.0) and cache.add("flood", "nonce-0003", 1_002.0)
        assert not cache.add("victim", "nonce-0001", 1_003.0)
        assert cache.add("victim", "nonce-0004", 1_004.0)
