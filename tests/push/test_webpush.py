"""Web Push: subscriptions as tokens, aes128gcm + VAPID checked by independent libraries, the sandbox's rules."""

from __future__ import annotations

import base64
import json
import random
import struct
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import http_ece
import httpx
import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from pywebpush import webpush

from engine.clock import FixedClock
from engine.domain import Outcome, PushMessage
from engine.push.base import tls_context
from engine.push.sandbox import Fault, Sandboxes, new_webpush_subscription, start_sandboxes
from engine.push.webpush import (
    MAX_BODY,
    STATUSES,
    VapidSigner,
    WebPushChannel,
    build_request,
    parse_response,
    parse_subscription,
)
from tests.push.conftest import T0, run


def _msg(token: str, rng: random.Random, **kw) -> PushMessage:
    fields = {"send_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "vendor": "webpush", "token": token,
              "title": "Back in stock", "body": "The teapot you viewed is back"}
    return PushMessage(**{**fields, **kw})


@pytest.fixture
def boxes(tmp_path: Path, fixed: FixedClock) -> Iterator[Sandboxes]:
    with start_sandboxes(tmp_path / "sb", clock=fixed) as sb:
        yield sb


def _send(boxes: Sandboxes, clock: FixedClock, msgs: list[PushMessage]):
    async def go():
        async with WebPushChannel(boxes.vendor_settings().webpush, clock) as channel:
            return await channel.send(msgs), channel.vapid.mints
    return run(go())


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- pure, checked by independent libraries --------------------------------------------------------

def test_subscription_token_round_trips(rng):
    token, key, auth = new_webpush_subscription(rng, "https://push.example:8443")
    sub = parse_subscription(token)
    assert sub.origin == "https://push.example:8443" and sub.auth == auth and len(sub.p256dh) == 65
    assert json.loads(token)["keys"].keys() == {"p256dh", "auth"}
    assert token == new_webpush_subscription(random.Random(20250301), "https://push.example:8443")[0]
    for bad in ("not json", '{"endpoint":"http://x/y","keys":{"p256dh":"AA","auth":"AA"}}'):
        with pytest.raises(ValueError):
            parse_subscription(bad)


def test_http_ece_decrypts_our_body_and_pyjwt_verifies_our_vapid(rng, fixed, tmp_path):
    from engine.push.sandbox.webpush import ensure_vapid_key

    token, ua_key, auth = new_webpush_subscription(rng, "https://push.example")
    signer = VapidSigner(ensure_vapid_key(tmp_path).read_bytes(), "mailto:ops@pushwise.invalid", fixed)
    msg = _msg(token, rng, message_class="transactional", collapse_id="promo7", ttl_seconds=600, data={"k": "v"})
    url, headers, body = build_request(msg, signer.header("https://push.example"))
    assert url == json.loads(token)["endpoint"]
    assert (headers["ttl"], headers["urgency"], headers["topic"]) == ("600", "high", "promo7")
    assert headers["content-encoding"] == "aes128gcm" and "encryption" not in headers
    plain = http_ece.decrypt(body, private_key=ua_key, auth_secret=auth, version="aes128gcm")
    assert json.loads(plain) == {"send_id": msg.send_id, "title": "Back in stock",
                                 "body": "The teapot you viewed is back", "data": {"k": "v"}}
    assert struct.unpack("!IB", body[16:21]) == (4096, 65)
    scheme, _, params = headers["authorization"].partition(" ")
    fields = dict(p.strip().split("=", 1) for p in params.split(","))
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _unb64(fields["k"]))
    claims = jwt.decode(fields["t"], public, algorithms=["ES256"], audience="https://push.example",
                        options={"verify_exp": False})
    assert scheme == "vapid" and claims["sub"] == "mailto:ops@pushwise.invalid"
    assert claims["exp"] == int((T0 + timedelta(hours=12)).timestamp())


def test_vapid_is_cached_per_origin_and_reminted_before_expiry(fixed, tmp_path):
    from engine.push.sandbox.webpush import ensure_vapid_key

    signer = VapidSigner(ensure_vapid_key(tmp_path).read_bytes(), "https://pushwise.invalid", fixed)
    a1, b1, a2 = signer.header("https://a"), signer.header("https://b"), signer.header("https://a")
    assert a1 == a2 and a1 != b1 and signer.mints == 2
    fixed.advance(timedelta(hours=11, minutes=1))
    assert signer.header("https://a") != a1 and signer.mints == 3


def test_plaintext_over_the_limit_is_refused_before_sending(rng):
    token, _, _ = new_webpush_subscription(rng, "https://push.example")
    with pytest.raises(ValueError, match="over 4096"):
        build_request(_msg(token, rng, body="x" * MAX_BODY), "vapid t=x, k=y")


@pytest.mark.parametrize("status", sorted(STATUSES))
def test_every_status_is_mapped(status):
    r = parse_response(status, {"Retry-After": "3", "Location": "https://p/m/1"}, b"", "s1", T0)
    assert r.outcome is STATUSES[status]
    if r.outcome is Outcome.RATE_LIMITED:
        assert r.retry_after == 3.0


# -- against the sandbox ----------------------------------------------------------------------------

def test_sandbox_decrypts_and_keeps_the_plaintext(boxes, fixed, rng):
    tokens = [boxes.webpush.new_subscription(rng) for _ in range(3)]
    receipts, mints = _send(boxes, fixed, [_msg(t, rng) for t in tokens])
    assert {r.outcome for r in receipts} == {Outcome.DELIVERED} and mints == 1
    kept = boxes.accepted("webpush")
    assert sorted(a.token for a in kept) == sorted(tokens)
    assert {a.payload["title"] for a in kept} == {"Back in stock"}
    assert kept[0].headers["ttl"] == "86400"


@pytest.mark.parametrize(("setup", "outcome", "status"), [
    ("unregister", Outcome.INVALID_TOKEN, 410),
    ("unknown", Outcome.INVALID_TOKEN, 404),
    ("fault429", Outcome.RATE_LIMITED, 429),
    ("fault413", Outcome.REJECTED_PAYLOAD, 413),
    ("fault503", Outcome.TRANSIENT, 503),
])
def test_dead_and_failing_subscriptions(boxes, fixed, rng, setup, outcome, status):
    token = boxes.webpush.new_subscription(rng)
    if setup == "unregister":
        boxes.unregister("webpush", token, T0 - timedelta(days=60))
    elif setup == "unknown":
        boxes.webpush.known_tokens = {boxes.webpush.new_token(rng)}
    else:
        boxes.inject("webpush", Fault.error(status, "injected", retry_after=2))
    (r,), _ = _send(boxes, fixed, [_msg(token, rng)])
    assert (r.outcome, r.status_code) == (outcome, status)


def test_403_resigns_once(boxes, fixed, rng):
    token = boxes.webpush.new_subscription(rng)
    boxes.inject("webpush", Fault.error(403, "invalid JWT provided"))
    (r,), mints = _send(boxes, fixed, [_msg(token, rng)])
    assert (r.outcome, mints) == (Outcome.DELIVERED, 2)


def _raw_post(boxes: Sandboxes, url: str, headers: dict[str, str], body: bytes) -> httpx.Response:
    with httpx.Client(verify=tls_context(str(boxes.ca.ca_file))) as client:
        return client.post(url, headers=headers, content=body)


@pytest.mark.parametrize(("change", "message"), [
    ({"encryption": "salt=abc"}, "aesgcm Encryption/Crypto-Key"),
    ({"crypto-key": "dh=BAAA"}, "aesgcm Encryption/Crypto-Key"),
    ({"ttl": None}, "TTL"),
    ({"urgency": "urgent"}, "Urgency"),
    ({"content-encoding": "aesgcm"}, "Content-Encoding"),
    ({"authorization": "WebPush abc"}, "vapid"),
])
def test_sandbox_rejects_bad_headers(boxes, fixed, rng, tmp_path, change, message):
    token = boxes.webpush.new_subscription(rng)
    config = boxes.vendor_settings().webpush
    signer = VapidSigner(Path(config.vapid_private_key_file).read_bytes(), config.vapid_subject, fixed)
    url, headers, body = build_request(_msg(token, rng), signer.header(boxes.urls["webpush"]))
    headers.update({k: v for k, v in change.items() if v is not None})
    for k in [k for k, v in change.items() if v is None]:
        headers.pop(k)
    answer = _raw_post(boxes, url, headers, body)
    assert answer.status_code in (400, 403) and message in answer.json()["message"]


@pytest.mark.parametrize(("mangle", "message"), [
    (lambda b: b[:16] + struct.pack("!IB", 4096, 16) + b[21:], "keyid"),
    (lambda b: b[:16] + struct.pack("!IB", 10, 65) + b[21:], "record size"),
    (lambda b: b[:20], "truncated"),
    (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "decrypt"),
    (lambda b: b + b"x" * 4096, "too large"),
])
def test_sandbox_rejects_malformed_bodies(boxes, fixed, rng, mangle, message):
    token = boxes.webpush.new_subscription(rng)
    config = boxes.vendor_settings().webpush
    signer = VapidSigner(Path(config.vapid_private_key_file).read_bytes(), config.vapid_subject, fixed)
    url, headers, body = build_request(_msg(token, rng), signer.header(boxes.urls["webpush"]))
    answer = _raw_post(boxes, url, headers, mangle(body))
    assert message in answer.json()["message"]


def test_sandbox_checks_vapid_audience_and_expiry(boxes, fixed, rng):
    token = boxes.webpush.new_subscription(rng)
    config = boxes.vendor_settings().webpush
    signer = VapidSigner(Path(config.vapid_private_key_file).read_bytes(), config.vapid_subject, fixed)
    url, headers, body = build_request(_msg(token, rng), signer.header("https://other.example"))
    assert _raw_post(boxes, url, headers, body).status_code == 403
    signer.LIFETIME = timedelta(hours=25)
    url, headers, body = build_request(_msg(token, rng), signer.header(boxes.urls["webpush"]))
    answer = _raw_post(boxes, url, headers, body)
    assert answer.status_code == 403 and "24h" in answer.json()["message"]


def test_pywebpush_is_accepted_by_the_sandbox(sandboxes, rng):
    token = sandboxes.webpush.new_subscription(rng)
    key_file = sandboxes.vendor_settings().webpush.vapid_private_key_file
    with requests.Session() as session:
        session.trust_env = False   # REQUESTS_CA_BUNDLE would otherwise replace our CA
        session.verify = str(sandboxes.ca.ca_file)
        response = webpush(json.loads(token), data=json.dumps({"title": "hi"}), vapid_private_key=key_file,
                           vapid_claims={"sub": "mailto:ops@pushwise.invalid"}, ttl=60, requests_session=session)
    assert response.status_code == 201
    (kept,) = sandboxes.accepted("webpush")
    assert kept.payload == {"title": "hi"}


@pytest.mark.parametrize("name", [
    "engine.push.oppo", "engine.push.vivo", "engine.push.meizu", "engine.push.webpush",
    "engine.push.sandbox.oppo", "engine.push.sandbox.vivo", "engine.push.sandbox.meizu", "engine.push.sandbox.webpush",
])
def test_all_is_honest(name):
    import importlib

    module = importlib.import_module(name)
    assert [n for n in module.__all__ if not hasattr(module, n)] == []
    assert module.__doc__ and module.__doc__.strip()


def test_a_stored_subscription_off_the_allow_list_is_never_posted_to(boxes, fixed, rng):
    """Allowed at registration, then the allow-list narrowed (or stored before it existed): refused at send."""
    allowed = boxes.webpush.new_subscription(rng)
    data = json.loads(boxes.webpush.new_subscription(rng))
    elsewhere = json.dumps({**data, "endpoint": data["endpoint"].replace("127.0.0.1", "localhost")})
    config = boxes.vendor_settings().webpush
    config.allowed_hosts = "fcm.googleapis.com"          # + the loopback sandbox host of base_url

    async def go():
        async with WebPushChannel(config, fixed) as channel:
            return await channel.send([_msg(allowed, rng), _msg(elsewhere, rng)])
    ok, refused = run(go())
    assert ok.outcome is Outcome.DELIVERED
    assert refused.outcome is Outcome.REJECTED_PAYLOAD and "allowed_hosts" in refused.reason
    assert [a.token for a in boxes.accepted("webpush")] == [allowed]        # nothing reached any server


@pytest.mark.parametrize(("endpoint", "allowed"), [
    ("https://fcm.googleapis.com/fcm/send/x", True),
    ("https://FCM.googleapis.com./fcm/send/x", True),
    ("https://db5p.notify.windows.com/w/?token=x", True),
    ("https://notify.windows.com/w/", False),             # *.domain covers subdomains only
    ("https://evilfcm.googleapis.com.attacker.net/x", False),
    ("https://169.254.169.254/latest/meta-data", False),
])
def test_endpoint_allowed(endpoint, allowed):
    from engine.config import WEBPUSH_HOSTS
    from engine.push.webpush import endpoint_allowed
    assert endpoint_allowed(endpoint, WEBPUSH_HOSTS.split(",")) is allowed
