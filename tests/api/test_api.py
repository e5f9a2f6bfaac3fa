"""The API over real HTTP on loopback: devices, consent, events, triggers, validation messages, auth, audit."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from engine.api import create_app
from engine.security import NonceCache, create_key, sign_request
from engine.security.apikeys import MAX_SKEW_SECONDS
from engine.store import Store
from tests.api.conftest import auth

pytestmark = pytest.mark.network

APNS = "ab" * 32
FCM = "cYzT3x1bQ0u9o8F2f9hR3k:APA91b" + "Q" * 134


def _device(client, keys, user="u1", vendor="apns", token=APNS, **extra):
    return client.post("/v1/devices", json={"user_id": user, "vendor": vendor, "token": token, **extra},
                       headers=auth(keys["ingest"]))


def _consent(client, keys, user="u1", granted=True, cls="marketing"):
    return client.put("/v1/consents", json={"user_id": user, "message_class": cls, "granted": granted},
                      headers=auth(keys["ingest"]))


def test_a_device_token_is_stored_encrypted_and_refreshing_it_keeps_one_row(service):
    ctx, client, keys = service
    first = _device(client, keys)
    again = _device(client, keys, user="u2")
    assert first.status_code == 200 and first.json()["created"] is True
    assert again.json() == {"device_id": first.json()["device_id"], "created": False}
    rows = ctx.store.execute("SELECT user_id, token, token_hash FROM devices").fetchall()
    assert len(rows) == 1 and rows[0][0] == "u2"
    assert rows[0][1].startswith("pw1:k1:") and APNS not in rows[0][1]
    assert ctx.keyring.decrypt(rows[0][1], "devices.token") == APNS
    assert rows[0][2] == ctx.keyring.token_hash("apns", APNS)


def test_trigger_personalizes_checks_consent_and_reports_status(service):
    ctx, client, keys = service
    _device(client, keys, user="u1")
    _device(client, keys, user="u2", vendor="fcm", token=FCM)
    _consent(client, keys, "u1")
    _consent(client, keys, "u2", granted=False)
    _consent(client, keys, "u3")
    client.post("/v1/events", headers=auth(keys["ingest"]), json={"events": [
        {"user_id": "u1", "event_type": "add_to_cart", "item_id": "mug", "ts": "2026-01-14T18:20:00Z"},
        {"user_id": "u1", "event_type": "view", "item_id": "mug", "ts": "2026-01-13T18:05:00Z"}]})
    r = client.post("/v1/triggers", headers=auth(keys["send"]), json={
        "name": "abandoned_cart", "title": "Still thinking about {item}?", "body": "Your {item} is waiting",
        "user_ids": ["u1", "u2", "u3"], "when": "best_time"})
    assert r.status_code == 202
    out = r.json()
    assert (out["audience"], out["sends"], out["skipped"]) == (3, 1, {"no_consent": 1, "no_device": 1})
    title, due = ctx.store.execute("SELECT title, due_at FROM sends").fetchall()[0]
    assert title == "Still thinking about mug?"
    assert due.isoformat() == "2026-01-15T18:00:00+00:00"   # u1 is active at 18h UTC; now is 09:00
    status = client.get(f"/v1/triggers/{out['trigger_id']}", headers=auth(keys["send"])).json()
    assert status["states"] == {"pending": 1} and status["audience"] == 3


def test_withdrawing_consent_cancels_planned_sends(service):
    ctx, client, keys = service
    _device(client, keys)
    _consent(client, keys)
    client.post("/v1/triggers", headers=auth(keys["send"]),
                json={"name": "promo", "title": "t", "body": "b", "user_ids": ["u1"]})
    _consent(client, keys, granted=False)
    assert ctx.store.execute("SELECT state, last_error FROM sends").fetchall() == [("cancelled", "consent withdrawn")]


def test_events_are_stored_once_per_client_id(service):
    ctx, client, keys = service
    batch = {"events": [{"event_id": "e-1", "user_id": "u1", "event_type": "push_open", "ts": "2026-01-15T08:00:00Z",
                         "properties": {"send_id": "s1"}}]}
    assert client.post("/v1/events", json=batch, headers=auth(keys["ingest"])).json() == {"stored": 1, "duplicates": 0}
    assert client.post("/v1/events", json=batch, headers=auth(keys["ingest"])).json() == {"stored": 0, "duplicates": 1}
    props = ctx.store.execute("SELECT CAST(properties AS VARCHAR), source FROM events").fetchall()
    assert props == [('{"send_id": "s1"}', "api")]


BAD_INPUT = [
    # (path, body bytes, status, text in the answer)
    ("/v1/events", b'{"events": [', 400, "malformed JSON"),
    ("/v1/events", json.dumps({"events": [{"user_id": "u", "event_type": "view", "ts": 5}]}).encode(), 422,
     "body.events.0.ts"),
    ("/v1/events", json.dumps({"events": [{"user_id": "u", "event_type": "teleport",
                                           "ts": "2026-01-01T00:00:00Z"}]}).encode(), 422, "unknown event type"),
    ("/v1/events", json.dumps({"events": [{"user_id": "u", "event_type": "view",
                                           "ts": "2026-01-01T00:00:00"}]}).encode(), 422, "needs a UTC offset"),
    ("/v1/devices", json.dumps({"user_id": "u", "vendor": "nokia", "token": APNS}).encode(), 422, "unknown vendor"),
    ("/v1/devices", json.dumps({"user_id": "u", "vendor": "apns", "token": "xyz"}).encode(), 422,
     "64 hexadecimal characters"),
    ("/v1/devices", json.dumps({"user_id": "u", "vendor": "apns", "token": APNS, "time_zone": "Mars/Olympus"}).encode(),
     422, "unknown time zone"),
    ("/v1/devices", json.dumps({"user_id": 7, "vendor": "apns", "token": APNS}).encode(), 422, "body.user_id"),
    ("/v1/events", b'{"events": [' + b'{"user_id": "u"},' * 70_000 + b'{}]}', 413, "larger than"),
    ("/v1/triggers", json.dumps({"name": "x", "title": "t", "body": "b"}).encode(), 422,
     "exactly one of user_ids and countries"),
]


@pytest.mark.parametrize(("path", "body", "status", "text"), BAD_INPUT, ids=[b[3] for b in BAD_INPUT])
def test_bad_input_gets_a_4xx_naming_the_problem_and_loses_nothing(service, path, body, status, text):
    ctx, client, keys = service
    _device(client, keys)
    client.post("/v1/events", headers=auth(keys["ingest"]),
                json={"events": [{"user_id": "u1", "event_type": "view", "ts": "2026-01-15T08:00:00Z"}]})
    before = {t: ctx.store.count(t) for t in ("events", "devices", "sends")}
    r = client.post(path, content=body, headers={**auth(keys["admin"]), "Content-Type": "application/json"})
    assert r.status_code == status
    assert text in r.text
    assert APNS not in r.text
    assert {t: ctx.store.count(t) for t in before} == before


def test_401_and_403_say_what_is_wrong_without_telling_which_keys_exist(service):
    ctx, client, keys = service
    body = {"name": "x", "title": "t", "body": "b", "user_ids": ["u1"]}
    missing = client.post("/v1/triggers", json=body)
    key_id = keys["send"].split("_")[1]
    wrong_secret = client.post("/v1/triggers", json=body, headers=auth(f"pwk_{key_id}_nope"))
    unknown = client.post("/v1/triggers", json=body, headers=auth("pwk_000000000000_nope"))
    scope = client.post("/v1/triggers", json=body, headers=auth(keys["ingest"]))
    assert missing.status_code == 401 and "missing credentials" in missing.json()["error"]
    assert wrong_secret.status_code == unknown.status_code == 401
    assert wrong_secret.json() == unknown.json() == {"error": "invalid API key"}
    assert scope.status_code == 403 and scope.json() == {"error": "this key lacks the 'send' scope"}
    denied = ctx.store.execute("SELECT status FROM audit_log WHERE action = 'auth.denied' ORDER BY status").fetchall()
    assert [d[0] for d in denied] == [401, 401, 401, 403]


def test_the_audit_log_records_who_triggered_what(service):
    ctx, client, keys = service
    _device(client, keys)
    _consent(client, keys)
    out = client.post("/v1/triggers", headers=auth(keys["send"]),
                      json={"name": "promo", "title": "t", "body": "b", "user_ids": ["u1"]}).json()
    rows = ctx.store.execute("SELECT key_id, action, target FROM audit_log ORDER BY logged_at, action").fetchall()
    assert (keys["send"].split("_")[1], "trigger", out["trigger_id"]) in rows
    consent = [r for r in rows if r[1] == "consent"][0]
    assert consent[2].startswith("u:") and "u1" not in consent[2]   # pseudonymous


def test_per_key_rate_limit_answers_429(service):
    ctx, client, keys = service
    slow = client.post("/v1/admin/keys", headers=auth(keys["admin"]),
                       json={"scopes": ["send"], "rate_per_second": 1.0}).json()["key"]
    codes = [client.get("/v1/triggers/api:none", headers=auth(slow)).status_code for _ in range(4)]
    assert codes[:2] == [404, 404] and codes[2:] == [429, 429]


def test_signed_requests_are_accepted_once_and_replays_or_stale_ones_refused(service):
    ctx, client, keys = service
    body = json.dumps({"user_id": "u9", "message_class": "marketing", "granted": True}).encode()
    headers = {**sign_request(keys["ingest"], "PUT", "/v1/consents", body), "Content-Type": "application/json"}
    assert client.put("/v1/consents", content=body, headers=headers).status_code == 200
    replay = client.put("/v1/consents", content=body, headers=headers)
    assert replay.status_code == 401 and "replayed" in replay.json()["error"]
    stale = {**sign_request(keys["ingest"], "PUT", "/v1/consents", body, timestamp=1_000_000_000),
             "Content-Type": "application/json"}
    assert "within 300 s" in client.put("/v1/consents", content=body, headers=stale).json()["error"]
    tampered = {**sign_request(keys["ingest"], "PUT", "/v1/consents", body), "Content-Type": "application/json"}
    r = client.put("/v1/consents", content=body.replace(b"true", b"false"), headers=tampered)
    assert r.status_code == 401 and r.json() == {"error": "invalid signature"}


def test_a_replay_after_a_restart_is_refused_when_nonces_are_persisted(service):
    ctx, client, keys = service
    body = json.dumps({"user_id": "u9", "message_class": "marketing", "granted": True}).encode()
    headers = {**sign_request(keys["ingest"], "PUT", "/v1/consents", body), "Content-Type": "application/json"}
    ctx.nonces = NonceCache.persistent(ctx.store, time.time())
    assert client.put("/v1/consents", content=body, headers=headers).status_code == 200
    ctx.nonces = NonceCache()                                # a restart with the in-memory cache only:
    assert client.put("/v1/consents", content=body, headers=headers).status_code == 200   # the replay got in
    ctx.nonces = NonceCache.persistent(ctx.store, time.time())   # a restart as `pushwise serve` does it
    replay = client.put("/v1/consents", content=body, headers=headers)
    assert replay.status_code == 401 and "replayed" in replay.json()["error"]


def test_persisted_nonces_expire_with_the_window_and_are_pruned(tmp_path):
    with Store(tmp_path / "n.duckdb") as store:
        cache = NonceCache.persistent(store, 1_000_000.0)
        cache.PRUNE_EVERY = 3
        assert cache.add("k", "nonce-0001", 1_000_000.0) and not cache.add("k", "nonce-0001", 1_000_001.0)
        assert cache.add("k", "nonce-0002", 1_000_001.0)
        later = 1_000_000.0 + 2 * MAX_SKEW_SECONDS + 2
        assert NonceCache.persistent(store, later).add("k", "nonce-0001", later)    # outside the window: gone
        assert cache.add("k", "nonce-0003", later)                          # third write: prunes the old rows
        assert store.execute("SELECT nonce, seen_at FROM request_nonces ORDER BY nonce").fetchall() == [
            ("nonce-0001", later), ("nonce-0003", later)]


def test_health_and_metrics(service):
    ctx, client, keys = service
    _device(client, keys)
    _consent(client, keys)
    client.post("/v1/triggers", headers=auth(keys["send"]),
                json={"name": "promo", "title": "t", "body": "b", "user_ids": ["u1"]})
    assert client.get("/v1/health").json() == {"status": "ok", "queue_depth": 1}
    scraper = create_key(ctx.store, ctx.keyring, ["metrics"], ctx.clock.now())[0]
    text = client.get("/metrics", headers=auth(scraper)).text
    assert 'pushwise_sends{state="pending",vendor="apns"} 1.0' in text
    assert "pushwise_queue_depth 1.0" in text
    assert 'pushwise_api_requests_total{route="/v1/triggers",status="202"} 1.0' in text


def test_erase_removes_every_row_about_the_user(service):
    ctx, client, keys = service
    _device(client, keys)
    _consent(client, keys)
    client.post("/v1/events", headers=auth(keys["ingest"]),
                json={"events": [{"user_id": "u1", "event_type": "view", "ts": "2026-01-15T08:00:00Z"}]})
    client.post("/v1/triggers", headers=auth(keys["send"]),
                json={"name": "promo", "title": "t", "body": "b", "user_ids": ["u1"]})
    r = client.post("/v1/admin/erase", headers=auth(keys["admin"]), json={"user_id": "u1"})
    assert r.json()["deleted"] == {"send_attempts": 0, "events": 1, "devices": 1, "decisions": 1, "sends": 1,
                                   "consents": 1, "users": 1, "quarantine": 0}
    for table in ("events", "devices", "decisions", "sends", "consents", "users"):
        assert ctx.store.execute(f"SELECT count(*) FROM {table} WHERE user_id = 'u1'").fetchall() == [(0,)]


def test_metrics_need_a_metrics_or_admin_key_and_a_metrics_key_can_do_nothing_else(service):
    ctx, client, keys = service
    scraper = create_key(ctx.store, ctx.keyring, ["metrics"], ctx.clock.now())[0]
    anonymous = client.get("/metrics")
    assert anonymous.status_code == 401 and "pushwise_" not in anonymous.text
    assert anonymous.json()["error"].startswith("missing credentials")
    assert client.get("/metrics", headers=auth(keys["send"])).json() == {"error": "this key lacks the 'metrics' scope"}
    assert client.get("/metrics", headers=auth(keys["admin"])).status_code == 200
    assert "pushwise_queue_depth" in client.get("/metrics", headers=auth(scraper)).text
    denied = client.post("/v1/triggers", headers=auth(scraper),
                         json={"name": "promo", "title": "t", "body": "b", "user_ids": ["u1"]})
    assert denied.status_code == 403 and denied.json() == {"error": "this key lacks the 'send' scope"}


async def _get_from(peer: str, app, path: str) -> int:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://pushwise.test") as client:
        return (await client.get(path)).status_code


def test_metrics_open_on_loopback_admits_local_scrapes_only(service):
    ctx, client, keys = service
    ctx.metrics_open_on_loopback = True
    assert client.get("/metrics").status_code == 200                       # this client is 127.0.0.1
    assert client.get("/metrics", headers=auth("pwk_nope_nope")).status_code == 401   # a key given is checked
    assert asyncio.run(_get_from("203.0.113.7", create_app(ctx), "/metrics")) == 401   # a non-loopback peer
    assert asyncio.run(_get_from("::1", create_app(ctx), "/metrics")) == 200
    ctx.metrics_open_on_loopback = False
    assert client.get("/metrics").status_code == 401


def test_an_admin_lists_and_revokes_keys_and_a_revoked_key_stops_at_once(service):
    ctx, client, keys = service
    send_id = keys["send"].split("_")[1]
    assert client.get("/v1/admin/keys", headers=auth(keys["send"])).status_code == 403
    listed = client.get("/v1/admin/keys", headers=auth(keys["admin"])).json()
    assert {k["key_id"] for k in listed} >= {send_id} and all("secret" not in json.dumps(k) for k in listed)
    assert [k for k in listed if k["key_id"] == send_id][0]["revoked_at"] is None
    body = {"name": "promo", "title": "t", "body": "b", "user_ids": ["u1"]}
    assert client.post("/v1/triggers", headers=auth(keys["send"]), json=body).status_code == 202   # now cached
    r = client.delete(f"/v1/admin/keys/{send_id}", headers=auth(keys["admin"]))
    assert r.status_code == 200 and r.json() == {"key_id": send_id, "revoked": True}
    assert client.post("/v1/triggers", headers=auth(keys["send"]), json=body).status_code == 401   # no grace
    assert client.delete(f"/v1/admin/keys/{send_id}", headers=auth(keys["admin"])).status_code == 404
    listed = {k["key_id"]: k for k in client.get("/v1/admin/keys", headers=auth(keys["admin"])).json()}
    assert listed[send_id]["revoked_at"] is not None
