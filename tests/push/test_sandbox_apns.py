"""The APNs sandbox's vendor logic as a pure handler: every rule it enforces, one row each."""

from __future__ import annotations

import json
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from engine.domain import Outcome
from engine.push.apns import parse_response
from engine.push.sandbox import ApnsSandbox, Fault
from engine.push.sandbox.server import ConnectionInfo, Request
from tests.push.conftest import T0

TOPIC = "com.pushwise.demo"
TOKEN = "ab" * 32
APNS_ID = "0b7c6f4e-2d1a-4c3b-9e8f-7a6b5c4d3e2f"
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())


def provider_jwt(iat: int, *, key=KEY, kid: str = "KEY1234567", iss: str = "TEAM123456") -> str:
    return jwt.encode({"iss": iss, "iat": iat}, key, algorithm="ES256", headers={"kid": kid})


@pytest.fixture
def box(fixed) -> ApnsSandbox:
    sandbox = ApnsSandbox(TOPIC, fixed)
    sandbox.register_key("TEAM123456", "KEY1234567", KEY.public_key())
    return sandbox


def request(conn: ConnectionInfo | None = None, *, method: str = "POST", path: str = f"/3/device/{TOKEN}",
            body: bytes = b'{"aps":{"alert":"hi"}}', drop: tuple[str, ...] = (),
            extra: tuple[tuple[str, str], ...] = (), **headers: str) -> Request:
    base = {"authorization": f"bearer {provider_jwt(int(T0.timestamp()))}", "apns-topic": TOPIC,
            "apns-push-type": "alert", "apns-id": APNS_ID, "apns-priority": "10", "apns-expiration": "0"}
    base.update({k.replace("_", "-"): v for k, v in headers.items()})
    pairs = [(k, v) for k, v in base.items() if k not in drop] + list(extra)
    return Request(method, path, pairs, body, conn or ConnectionInfo(1, "2"))


def answer(box: ApnsSandbox, req: Request) -> tuple[int, str | None]:
    response = box(req)
    return response.status, (json.loads(response.body).get("reason") if response.body else None)


CASES = [
    ("GET", dict(method="GET"), 405, "MethodNotAllowed"),
    ("other path", dict(path="/3/other"), 404, "BadPath"),
    ("no token", dict(path="/3/device/"), 400, "MissingDeviceToken"),
    ("no jwt", dict(drop=("authorization",)), 403, "MissingProviderToken"),
    ("garbage jwt", dict(authorization="bearer abc.def.ghi"), 403, "InvalidProviderToken"),
    ("basic auth", dict(authorization="basic dXNlcg=="), 403, "InvalidProviderToken"),
    ("other key", dict(authorization=f"bearer {provider_jwt(int(T0.timestamp()), key=OTHER)}"),
     403, "InvalidProviderToken"),
    ("unknown kid", dict(authorization=f"bearer {provider_jwt(int(T0.timestamp()), kid='NOPE000000')}"),
     403, "InvalidProviderToken"),
    ("string iat", dict(authorization="bearer " + jwt.encode({"iss": "TEAM123456", "iat": str(int(T0.timestamp()))},
                                                             KEY, algorithm="ES256", headers={"kid": "KEY1234567"})),
     403, "InvalidProviderToken"),
    ("hs256", dict(authorization="bearer " + jwt.encode({"iss": "TEAM123456", "iat": int(T0.timestamp())},
                                                        "a-shared-secret-long-enough-for-hmac-256",
                                                        algorithm="HS256", headers={"kid": "KEY1234567"})),
     403, "InvalidProviderToken"),
    ("iat 61 min old", dict(authorization=f"bearer {provider_jwt(int(T0.timestamp()) - 3660)}"),
     403, "ExpiredProviderToken"),
    ("iat in the future", dict(authorization=f"bearer {provider_jwt(int(T0.timestamp()) + 3600)}"),
     403, "InvalidProviderToken"),
    ("no topic", dict(drop=("apns-topic",)), 400, "MissingTopic"),
    ("other app", dict(apns_topic="com.other.app"), 400, "TopicDisallowed"),
    ("voip without suffix", dict(apns_push_type="voip"), 400, "InvalidPushType"),
    ("unknown push type", dict(apns_push_type="banner"), 400, "InvalidPushType"),
    ("uppercase apns-id", dict(apns_id=APNS_ID.upper()), 400, "BadMessageId"),
    ("priority 7", dict(apns_priority="7"), 400, "BadPriority"),
    ("background at 10", dict(apns_push_type="background"), 400, "BadPriority"),
    ("expiration text", dict(apns_expiration="soon"), 400, "BadExpirationDate"),
    ("collapse id 65 bytes", dict(apns_collapse_id="c" * 65), 400, "BadCollapseId"),
    ("duplicate topic", dict(extra=(("apns-topic", TOPIC),)), 400, "DuplicateHeaders"),
    ("short token", dict(path="/3/device/abc123"), 400, "BadDeviceToken"),
    ("empty payload", dict(body=b""), 400, "PayloadEmpty"),
    ("4097 bytes", dict(body=b'{"aps":{},"x":"' + b"x" * 4080 + b'"}'), 413, "PayloadTooLarge"),
    ("no aps", dict(body=b'{"alert":"hi"}'), 400, "BadPayload"),
    ("not json", dict(body=b"{aps"), 400, "BadPayload"),
]


@pytest.mark.parametrize(("name", "changes", "status", "reason"), CASES, ids=[c[0] for c in CASES])
def test_rejections(box, name, changes, status, reason):
    assert answer(box, request(**changes)) == (status, reason)
    assert box.accepted() == []
    assert box.stats()[f"rejected:{reason}"] == 1


def test_accepts_a_valid_request_and_keeps_it(box, fixed):
    response = box(request(body=b'{"aps":{"badge":0},"k":"v"}', apns_collapse_id="c" * 64))
    headers = dict(response.headers)
    assert response.status == 200 and response.body == b""
    assert headers["apns-id"] == APNS_ID and len(headers["apns-unique-id"]) == 36
    (item,) = box.accepted()
    assert (item.token, item.message_id, item.payload, item.at) == (TOKEN, APNS_ID, {"aps": {"badge": 0}, "k": "v"}, T0)
    assert "authorization" not in item.headers and item.headers["apns-collapse-id"] == "c" * 64


def test_missing_apns_id_is_generated(box):
    response = box(request(drop=("apns-id",)))
    assert response.status == 200 and len(dict(response.headers)["apns-id"]) == 36


def test_unregistered_token_answers_410_from_its_time_on(box, fixed):
    box.unregister(TOKEN, T0 + timedelta(hours=1))
    assert answer(box, request()) == (200, None)            # not uninstalled yet
    fixed.advance(timedelta(hours=2))
    conn = ConnectionInfo(2, "2")
    fresh = f"bearer {provider_jwt(int(fixed.now().timestamp()))}"
    response = box(request(conn, authorization=fresh))
    body = json.loads(response.body)
    assert (response.status, body) == (410, {"reason": "Unregistered",
                                             "timestamp": int((T0 + timedelta(hours=1)).timestamp() * 1000)})
    receipt = parse_response(response.status, dict(response.headers), response.body, "s1")
    assert (receipt.outcome, receipt.token_invalid_since) == (Outcome.INVALID_TOKEN, T0 + timedelta(hours=1))


def test_provider_token_changes_at_most_every_20_minutes_per_connection(box, fixed):
    conn = ConnectionInfo(7, "2")
    assert answer(box, request(conn)) == (200, None)
    fixed.advance(timedelta(minutes=10))
    newer = f"bearer {provider_jwt(int(fixed.now().timestamp()))}"
    assert answer(box, request(conn, authorization=newer)) == (429, "TooManyProviderTokenUpdates")
    assert answer(box, request(ConnectionInfo(8, "2"), authorization=newer)) == (200, None)  # other connection
    fixed.advance(timedelta(minutes=10))
    assert answer(box, request(conn, authorization=newer)) == (200, None)
    assert box.stats()["provider_token_changes"] == 1


def test_an_expired_token_may_be_replaced_at_once(box, fixed):
    conn = ConnectionInfo(9, "2")
    assert answer(box, request(conn)) == (200, None)
    fixed.advance(timedelta(minutes=61))
    assert answer(box, request(conn)) == (403, "ExpiredProviderToken")
    fresh = f"bearer {provider_jwt(int(fixed.now().timestamp()))}"
    assert answer(box, request(conn, authorization=fresh)) == (200, None)


def test_a_connection_is_bound_to_its_first_key(box):
    box.register_key("TEAM123456", "KEY2222222", OTHER.public_key())
    conn = ConnectionInfo(10, "2")
    assert answer(box, request(conn)) == (200, None)
    other = f"bearer {provider_jwt(int(T0.timestamp()), key=OTHER, kid='KEY2222222')}"
    assert answer(box, request(conn, authorization=other)) == (403, "UnrelatedKeyIdInToken")


def test_faults_play_in_order_then_stop(box):
    box.inject(Fault.error(503, "ServiceUnavailable", retry_after=30, count=2))
    box.inject(Fault.reset())
    box.inject(Fault.slow(0.5))
    box.inject(Fault.goaway(after=2))
    first = box(request())
    assert (first.status, first.body, dict(first.headers).get("retry-after")) == (
        503, b'{"reason":"ServiceUnavailable"}', "30")
    assert "apns-id" not in dict(first.headers)       # like real 5xx answers: no apns-id to correlate by
    assert box(request()).status == 503
    assert box(request()).action == "reset"
    slow = box(request())
    assert (slow.status, slow.delay) == (200, 0.5)
    goaway = box(request())
    assert (goaway.status, goaway.goaway_after) == (200, 2)
    after = box(request())
    assert (after.status, after.delay, after.action, after.goaway_after) == (200, 0.0, None, None)
    assert box.stats()["fault_error"] == 2


def test_inject_http_date_retry_after(box):
    box.inject(Fault.error(503, "ServiceUnavailable", retry_after=T0 + timedelta(seconds=90)))
    response = box(request())
    receipt = parse_response(response.status, dict(response.headers), response.body, "s1", T0)
    assert dict(response.headers)["retry-after"] == "Sat, 01 Mar 2025 12:01:30 GMT"
    assert (receipt.outcome, receipt.retry_after) == (Outcome.TRANSIENT, 90.0)
