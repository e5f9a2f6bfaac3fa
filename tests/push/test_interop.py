"""Independent clients as oracles: google-auth gets a token from our OAuth sandbox, aioapns pushes to our APNs."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from pathlib import Path

import httpx
import pytest
import requests
from aioapns import APNs, NotificationRequest, PushType
from aioapns.connection import APNsProductionClientProtocol
from google.auth.transport.requests import Request as GoogleRequest
from google.oauth2 import service_account

from engine.config import load_settings
from engine.push.auth import FCM_SCOPE
from engine.push.sandbox import Sandboxes, serve_forever
from tests.push.conftest import make_message, run

pytestmark = pytest.mark.network


def test_google_auth_obtains_a_token_that_fcm_sandbox_accepts(sandboxes: Sandboxes, rng):
    credentials = service_account.Credentials.from_service_account_file(
        str(sandboxes.service_account_file), scopes=[FCM_SCOPE])
    with requests.Session() as session:
        session.trust_env = False      # else REQUESTS_CA_BUNDLE from the environment beats session.verify
        session.verify = str(sandboxes.ca.ca_file)
        credentials.refresh(GoogleRequest(session))
    assert credentials.valid and credentials.token.startswith("ya29.sandbox.")

    msg = make_message("fcm", rng)

    async def send() -> httpx.Response:
        ctx = ssl.create_default_context(cafile=str(sandboxes.ca.ca_file))
        async with httpx.AsyncClient(verify=ctx, http2=True) as client:
            return await client.post(f"{sandboxes.fcm_url}/v1/projects/{sandboxes.project_id}/messages:send",
                                     json={"message": {"token": msg.token, "notification": {"title": "t"}}},
                                     headers={"authorization": f"Bearer {credentials.token}"})

    response = run(send())
    assert response.status_code == 200 and response.http_version == "HTTP/2"
    stats = sandboxes.stats()["fcm"]
    assert stats["token_grants"] == 1 and stats["http1_connections"] == 1   # requests speaks HTTP/1.1


def test_aioapns_is_accepted_by_the_apns_sandbox(sandboxes: Sandboxes, rng, monkeypatch):
    host, port = sandboxes.apns_url.removeprefix("https://").split(":")
    monkeypatch.setattr(APNsProductionClientProtocol, "APNS_SERVER", host)
    monkeypatch.setattr(APNsProductionClientProtocol, "APNS_PORT", int(port))
    creds = sandboxes.apns_credentials
    live, dead = make_message("apns", rng, badge=0), make_message("apns", rng)
    sandboxes.unregister("apns", dead.token, sandboxes.apns.clock.now())

    async def go():
        # aioapns negotiates no ALPN: the sandbox recognises the HTTP/2 preface instead.
        ctx = ssl.create_default_context(cafile=str(sandboxes.ca.ca_file))
        client = APNs(key=creds.key_file.read_text(), key_id=creds.key_id, team_id=creds.team_id,
                      topic=creds.topic, ssl_context=ctx)
        try:
            ok = await client.send_notification(NotificationRequest(
                device_token=live.token, message={"aps": {"alert": "hi", "badge": 0}},
                notification_id=live.send_id, push_type=PushType.ALERT, priority=5))
            gone = await client.send_notification(NotificationRequest(
                device_token=dead.token, message={"aps": {"alert": "hi"}}, push_type=PushType.ALERT))
            return ok, gone
        finally:
            client.pool.close()
            await asyncio.sleep(0.05)

    ok, gone = run(go())
    assert ok.is_successful and ok.notification_id == live.send_id
    assert (gone.status, gone.description) == ("410", "Unregistered") and gone.timestamp
    (accepted,) = sandboxes.accepted("apns")
    assert accepted.message_id == live.send_id and accepted.payload["aps"]["badge"] == 0


def test_serve_forever_prints_endpoints_and_writes_a_usable_config(tmp_path: Path):
    stop, lines = threading.Event(), []
    thread = threading.Thread(target=serve_forever, args=(tmp_path,), kwargs={"stop": stop, "echo": lines.append})
    thread.start()
    try:
        config = tmp_path / "sandbox.toml"
        for _ in range(200):
            if len(lines) >= 6:
                break
            threading.Event().wait(0.05)
        settings = load_settings(config, env={}).validate()
    finally:
        stop.set()
        thread.join(timeout=10)
    assert settings.vendors.apns.enabled and settings.vendors.fcm.enabled
    assert settings.vendors.apns.base_url.startswith("https://127.0.0.1:")
    assert any(str(tmp_path / "tls" / "ca.pem") in line for line in lines)
    info = json.loads(Path(settings.vendors.fcm.service_account_file).read_text())
    assert info["token_uri"].startswith(settings.vendors.fcm.base_url)
