"""The channel contract without a network: httpx MockTransport handlers stand in for the vendors."""

from __future__ import annotations

import asyncio
import json
import ssl
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from engine.config import ApnsConfig, FcmConfig, Settings
from engine.domain import Outcome
from engine.errors import ConfigError
from engine.push import CHANNELS, ApnsChannel, FcmChannel, build_channels
from engine.push.base import TRANSPORT_OUTCOMES, parse_retry_after, transport_receipt
from tests.push.conftest import make_message, run

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture
def apns_config(tmp_path: Path) -> ApnsConfig:
    key_file = tmp_path / "AuthKey_KEY1234567.p8"
    key_file.write_bytes(_pem(ec.generate_private_key(ec.SECP256R1())))
    return ApnsConfig(enabled=True, base_url="https://apns.test", team_id="TEAM123456", key_id="KEY1234567",
                      key_file=str(key_file), topic="com.pushwise.demo", concurrency=3)


@pytest.fixture
def fcm_config(tmp_path: Path) -> FcmConfig:
    info = {"type": "service_account", "project_id": "p", "private_key_id": "k1",
            "private_key": _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)).decode(),
            "client_email": "sa@p.iam.gserviceaccount.com", "token_uri": "https://oauth.test/token"}
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(info))
    return FcmConfig(enabled=True, base_url="https://fcm.test", project_id="p", service_account_file=str(path))


# -- pure helpers ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("120", 120.0), (" 7 ", 7.0), ("0", 0.0),
    ("Sat, 01 Mar 2025 12:02:00 GMT", 120.0),
    ("Sat, 01 Mar 2025 11:00:00 GMT", 0.0),        # in the past: retry now, never negative
    ("1.5", None), ("-5", None), ("soon", None), ("", None), (None, None),
])
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value, NOW) == expected


def test_every_httpx_exception_is_mapped():
    classes = [getattr(httpx, n) for n in httpx.__all__]
    errors = {c for c in classes if isinstance(c, type) and (issubclass(c, httpx.HTTPError) or c is httpx.InvalidURL)}
    assert errors - set(TRANSPORT_OUTCOMES) == set()


def test_transport_receipt_names_the_failure_and_spots_untrusted_certificates():
    r = transport_receipt("s1", httpx.ReadTimeout("slow"))
    assert (r.outcome, r.reason) == (Outcome.TRANSIENT, "transport: ReadTimeout")
    try:
        raise httpx.ConnectError("handshake") from ssl.SSLCertVerificationError("certificate verify failed")
    except httpx.ConnectError as exc:
        r = transport_receipt("s1", exc)
    assert (r.outcome, r.reason) == (Outcome.AUTH_ERROR, "tls: server certificate not trusted")


# -- APNs over a handler transport ----------------------------------------------------------------

def test_one_receipt_per_message_in_order_with_failures_as_values(apns_config, fixed, rng):
    msgs = [make_message("apns", rng) for _ in range(6)]
    dead, broken = msgs[1].token, msgs[4].token

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(dead):
            return httpx.Response(410, json={"reason": "Unregistered", "timestamp": 1_700_000_000_000})
        if request.url.path.endswith(broken):
            raise httpx.RemoteProtocolError("GOAWAY", request=request)
        return httpx.Response(200, headers={"apns-id": request.headers["apns-id"]})

    async def go():
        async with ApnsChannel(apns_config, fixed, transport=httpx.MockTransport(handler)) as channel:
            return await channel.send(msgs)

    receipts = run(go())
    assert [r.send_id for r in receipts] == [m.send_id for m in msgs]
    assert [r.outcome for r in receipts] == [Outcome.DELIVERED, Outcome.INVALID_TOKEN, Outcome.DELIVERED,
                                             Outcome.DELIVERED, Outcome.TRANSIENT, Outcome.DELIVERED]
    assert receipts[4].reason == "transport: RemoteProtocolError"


def test_expired_provider_token_is_reminted_and_retried_once(apns_config, fixed, rng):
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        if len(seen) == 1:
            return httpx.Response(403, json={"reason": "ExpiredProviderToken"})
        return httpx.Response(200)

    async def go():
        async with ApnsChannel(apns_config, fixed, transport=httpx.MockTransport(handler)) as channel:
            return await channel.send([make_message("apns", rng)]), channel.tokens.mints

    (receipt,), mints = run(go())
    assert receipt.outcome is Outcome.DELIVERED
    assert mints == 2 and len(seen) == 2 and seen[0] != seen[1]


@pytest.mark.parametrize(("reason", "requests"), [("ExpiredProviderToken", 2), ("InvalidProviderToken", 1)])
def test_auth_rejections_are_bounded(apns_config, fixed, rng, reason, requests):
    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(1)
        return httpx.Response(403, json={"reason": reason})

    async def go():
        async with ApnsChannel(apns_config, fixed, transport=httpx.MockTransport(handler)) as channel:
            return await channel.send([make_message("apns", rng)])

    (receipt,) = run(go())
    assert (receipt.outcome, receipt.reason, len(seen)) == (Outcome.AUTH_ERROR, reason, requests)


def test_concurrency_is_bounded_by_config(apns_config, fixed, rng):
    in_flight, peak = 0, 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.005)
        in_flight -= 1
        return httpx.Response(200)

    async def go():
        async with ApnsChannel(apns_config, fixed, transport=httpx.MockTransport(handler)) as channel:
            return await channel.send([make_message("apns", rng) for _ in range(20)])

    assert {r.outcome for r in run(go())} == {Outcome.DELIVERED}
    assert peak == apns_config.concurrency


def test_unreadable_key_file_fails_fast(apns_config, fixed):
    apns_config.key_file = "/nonexistent/AuthKey.p8"
    with pytest.raises(ConfigError, match="vendors.apns.key_file cannot be read"):
        ApnsChannel(apns_config, fixed)


# -- FCM over a handler transport -----------------------------------------------------------------

def _fcm_handler(send_answers: list[httpx.Response], token_answers: list[httpx.Response] | None = None):
    calls = {"token": 0, "send": 0, "bearers": []}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            calls["token"] += 1
            if token_answers:
                return token_answers.pop(0)
            return httpx.Response(200, json={"access_token": f"at-{calls['token']}", "expires_in": 3599,
                                             "token_type": "Bearer"})
        calls["send"] += 1
        calls["bearers"].append(request.headers["authorization"])
        return send_answers.pop(0) if send_answers else httpx.Response(200, json={"name": "projects/p/messages/1"})

    return handler, calls


EXPIRED = httpx.Response(401, json={"error": {"code": 401, "status": "UNAUTHENTICATED", "message": "x", "details": [
    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "ACCESS_TOKEN_EXPIRED"}]}})


def test_fcm_refreshes_once_on_access_token_expired(fcm_config, fixed, rng):
    handler, calls = _fcm_handler([EXPIRED])

    async def go():
        async with FcmChannel(fcm_config, fixed, transport=httpx.MockTransport(handler)) as channel:
            return await channel.send([make_message("fcm", rng)])

    (receipt,) = run(go())
    assert (receipt.outcome, receipt.vendor_message_id) == (Outcome.DELIVERED, "projects/p/messages/1")
    assert (calls["token"], calls["send"]) == (2, 2)
    assert calls["bearers"] == ["Bearer at-1", "Bearer at-2"]


@pytest.mark.parametrize(("token_answer", "outcome"), [
    (httpx.Response(400, json={"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
     Outcome.AUTH_ERROR),
    (httpx.Response(503, text="busy"), Outcome.TRANSIENT),
])
def test_fcm_token_endpoint_failures_become_receipts(fcm_config, fixed, rng, token_answer, outcome):
    handler, calls = _fcm_handler([], [token_answer, token_answer])

    async def go():
        async with FcmChannel(fcm_config, fixed, transport=httpx.MockTransport(handler)) as channel:
            return await channel.send([make_message("fcm", rng), make_message("fcm", rng)])

    receipts = run(go())
    assert [r.outcome for r in receipts] == [outcome, outcome]
    assert calls["send"] == 0
    assert all(r.reason and r.reason.startswith("credential:") for r in receipts)


def test_fcm_bad_service_account_file_fails_fast(fcm_config, fixed, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    fcm_config.service_account_file = str(bad)
    with pytest.raises(ConfigError, match="not valid JSON"):
        FcmChannel(fcm_config, fixed)


# -- registry --------------------------------------------------------------------------------------

def test_registry_builds_only_enabled_vendors(apns_config, fcm_config, fixed):
    assert {"apns", "fcm"} <= set(CHANNELS)   # other vendors register more; only enabled ones are built
    settings = Settings()
    assert build_channels(settings, fixed) == {}
    settings.vendors.apns = apns_config
    settings.vendors.fcm = fcm_config

    async def go():
        channels = build_channels(settings, fixed)
        kinds = {name: type(ch) for name, ch in channels.items()}
        for ch in channels.values():
            await ch.aclose()
        return kinds

    from engine.push.lean_apns import LeanApnsChannel

    assert run(go()) == {"apns": LeanApnsChannel, "fcm": FcmChannel}


def test_registry_fails_fast_on_incomplete_sections(fixed):
    settings = Settings()
    settings.vendors.apns = ApnsConfig(enabled=True)
    with pytest.raises(ConfigError, match="vendors.apns.team_id is required"):
        build_channels(settings, fixed)


def test_a_message_that_cannot_be_encoded_is_rejected_not_raised(apns_config, fixed, rng):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200)

    bad = make_message("apns", rng, data={"when": object()})

    async def go():
        async with ApnsChannel(apns_config, fixed, transport=httpx.MockTransport(handler)) as channel:
            return await channel.send([bad, make_message("apns", rng)])

    rejected, delivered = run(go())
    assert (rejected.outcome, rejected.reason) == (Outcome.REJECTED_PAYLOAD, "build: TypeError")
    assert delivered.outcome is Outcome.DELIVERED
