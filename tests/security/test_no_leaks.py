"""A known device token, API secret and vendor credential written through the API appear nowhere.

Not in the database file, the logs, the backups, or any answer (errors included).
"""

from __future__ import annotations

import logging

import pytest

from engine.backup import write_backup
from engine.security.vendor_secrets import get_secret
from tests.api.conftest import auth

pytestmark = pytest.mark.network

TOKEN = "5ec7e7" + "d" * 58          # a valid APNs token we can search for
FCM_TOKEN = "leakcheck0123456789ab:APA91b" + "Z" * 134
VENDOR_SECRET = "-----BEGIN PRIVATE KEY-----\nLEAKCHECKvendorSecret0123456789abcdef\n-----END PRIVATE KEY-----\n"
SECRET_BODY = VENDOR_SECRET.splitlines()[1]      # the part to search for


def _files_containing(root, needles: list[bytes]) -> list[str]:
    hits = []
    for f in root.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            hits += [f"{f.name}:{n[:8]!r}" for n in needles if n in data]
    return hits


def test_token_and_secret_never_reach_storage_logs_backups_or_errors(service, tmp_path, caplog):
    ctx, client, keys = service
    caplog.set_level(logging.DEBUG)
    answers = []
    answers.append(client.post("/v1/devices", headers=auth(keys["ingest"]),
                               json={"user_id": "u1", "vendor": "apns", "token": TOKEN}))
    answers.append(client.post("/v1/devices", headers=auth(keys["ingest"]),
                               json={"user_id": "u1", "vendor": "fcm", "token": FCM_TOKEN}))
    made = client.post("/v1/admin/keys", headers=auth(keys["admin"]), json={"scopes": ["send"]})
    secret = made.json()["key"]
    answers.append(client.put("/v1/admin/secrets/apns/p8", headers=auth(keys["admin"]),
                              json={"value": VENDOR_SECRET}))
    answers.append(client.get("/v1/admin/secrets", headers=auth(keys["admin"])))
    # error paths that carry the values: wrong vendor, wrong token shape, wrong time zone, wrong key
    answers.append(client.post("/v1/devices", headers=auth(keys["ingest"]),
                               json={"user_id": "u1", "vendor": "nokia", "token": TOKEN}))
    answers.append(client.post("/v1/devices", headers=auth(keys["ingest"]),
                               json={"user_id": "u1", "vendor": "apns", "token": FCM_TOKEN}))
    answers.append(client.post("/v1/devices", headers=auth(keys["ingest"]),
                               json={"user_id": "u1", "vendor": "fcm", "token": FCM_TOKEN, "time_zone": TOKEN}))
    answers.append(client.post("/v1/triggers", headers=auth(secret + "x"), json={}))
    answers.append(client.post("/v1/devices", headers={**auth(keys["ingest"]), "Content-Type": "application/json"},
                               content=b'{"user_id": "u1", "vendor": "apns", "token": "' + TOKEN.encode()))
    # and the vendor secret's: unknown vendor, bad name, extra field, malformed JSON, wrong scope, no key
    answers.append(client.put("/v1/admin/secrets/nokia/p8", headers=auth(keys["admin"]),
                              json={"value": VENDOR_SECRET}))
    answers.append(client.put("/v1/admin/secrets/apns/P8!", headers=auth(keys["admin"]),
                              json={"value": VENDOR_SECRET}))
    answers.append(client.put("/v1/admin/secrets/apns/p8", headers=auth(keys["admin"]),
                              json={"value": VENDOR_SECRET, "note": VENDOR_SECRET}))
    answers.append(client.put("/v1/admin/secrets/apns/p8",
                              headers={**auth(keys["admin"]), "Content-Type": "application/json"},
                              content=b'{"value": "' + SECRET_BODY.encode()))
    answers.append(client.put("/v1/admin/secrets/apns/p8", headers=auth(keys["ingest"]),
                              json={"value": VENDOR_SECRET}))
    answers.append(client.put("/v1/admin/secrets/apns/p8", json={"value": VENDOR_SECRET}))
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 422, 422, 422, 401, 400,
                                                422, 422, 422, 400, 403, 401]
    assert answers[2].json() == {"vendor": "apns", "name": "p8", "created": True}
    assert [(s["vendor"], s["name"], s["key_id"]) for s in answers[3].json()] == [("apns", "p8", "k1")]
    backup = write_backup(ctx.store, tmp_path / "backups", ctx.keyring, ctx.clock.now())
    ctx.store.execute("CHECKPOINT")

    needles = [TOKEN, FCM_TOKEN, secret.split("_", 2)[2], SECRET_BODY]
    for a in answers[2:]:
        assert not any(n in a.text for n in needles), a.text
    assert not any(n in caplog.text for n in needles)
    assert _files_containing(tmp_path, [n.encode() for n in needles]) == []
    # and not merely compressed out of sight: no column of any table holds them
    for (table,) in ctx.store.execute("SELECT table_name FROM information_schema.tables "
                                      "WHERE table_schema = 'main'").fetchall():
        row = ctx.store.execute(f"SELECT count(*) FROM {table} t WHERE CAST(t AS VARCHAR) LIKE ? "
                                "OR CAST(t AS VARCHAR) LIKE ? OR CAST(t AS VARCHAR) LIKE ?",
                                [f"%{TOKEN}%", f"%{FCM_TOKEN}%", f"%{SECRET_BODY}%"]).fetchall()
        assert row == [(0,)], table
    assert backup.row_counts["devices"] == 2 and backup.row_counts["vendor_secrets"] == 1
    assert get_secret(ctx.store, ctx.keyring, "apns", "p8") == VENDOR_SECRET     # stored intact, byte for byte
