"""The FCM sandbox's vendor logic as a pure handler: the OAuth grant, the send checks, the error shapes."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from engine.domain import Outcome
from engine.push.auth import FCM_SCOPE, JWT_BEARER, GoogleServiceAccountTokenProvider
from engine.push.fcm import parse_response
from engine.push.sandbox import Fault, FcmSandbox, new_fcm_token
from engine.push.sandbox.fcm import GOOGLE_TOKEN_URI
from engine.push.sandbox.server import ConnectionInfo, Request
from tests.push.conftest import T0

TOKEN_URI = "https://127.0.0.1:9/token"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
INFO = {"type": "service_account", "project_id": "demo", "private_key_id": "kid-1",
        "client_email": "sa@demo.iam.gserviceaccount.com", "token_uri": TOKEN_URI,
        "private_key": KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()).decode()}
DEVICE = new_fcm_token(random.Random(3))
CONN = ConnectionInfo(1, "2")


@pytest.fixture
def box(fixed) -> FcmSandbox:
    sandbox = FcmSandbox(fixed, access_token_ttl=60)
    sandbox.token_uri = TOKEN_URI
    sandbox.register_service_account(INFO)
    return sandbox


def assertion(*, key=KEY, kid="kid-1", aud=TOKEN_URI, iat=None, life=3600, scope=FCM_SCOPE,
              iss=INFO["client_email"]) -> str:
    iat = int(T0.timestamp()) if iat is None else iat
    claims = {"iss": iss, "scope": scope, "aud": aud, "iat": iat, "exp": iat + life}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def grant(box: FcmSandbox, grant_type: str = JWT_BEARER, **claims) -> tuple[int, dict]:
    body = urlencode({"grant_type": grant_type, "assertion": assertion(**claims)}).encode()
    response = box(Request("POST", "/token", [("content-type", "application/x-www-form-urlencoded")], body, CONN))
    return response.status, json.loads(response.body)


def send(box: FcmSandbox, message: dict | None = None, *, project: str = "demo", bearer: str | None = None,
         raw: bytes | None = None):
    if bearer is None:
        bearer = grant(box)[1]["access_token"]
    message = {"token": DEVICE, "notification": {"title": "t", "body": "b"}} if message is None else message
    body = raw if raw is not None else json.dumps({"message": message}).encode()
    headers = [("authorization", f"Bearer {bearer}")] if bearer else []
    response = box(Request("POST", f"/v1/projects/{project}/messages:send", headers, body, CONN))
    return response, json.loads(response.body)


def test_grant_issues_a_bearer_token(box):
    status, body = grant(box)
    assert status == 200
    assert set(body) == {"access_token", "expires_in", "token_type"}
    assert (body["expires_in"], body["token_type"]) == (60, "Bearer")
    assert box.stats()["token_grants"] == 1


def test_grant_accepts_our_provider_and_googles_canonical_audience(box, fixed):
    ours = GoogleServiceAccountTokenProvider(INFO, httpx.AsyncClient(), fixed).assertion(T0)
    body = urlencode({"grant_type": JWT_BEARER, "assertion": ours}).encode()
    assert box(Request("POST", "/token", [], body, CONN)).status == 200
    assert grant(box, aud=GOOGLE_TOKEN_URI)[0] == 200


@pytest.mark.parametrize(("changes", "error", "description"), [
    (dict(grant_type="client_credentials"), "unsupported_grant_type", "Invalid grant_type: client_credentials"),
    (dict(key=OTHER), "invalid_grant", "Invalid JWT Signature."),
    (dict(kid="kid-2"), "invalid_grant", "Invalid JWT Signature."),
    (dict(aud="https://evil.example/token"), "invalid_grant", "Invalid JWT: Failed audience check."),
    (dict(iss="someone@else.iam.gserviceaccount.com"), "invalid_grant", "Invalid email or User ID"),
    (dict(life=7200), "invalid_grant", "Invalid JWT: Token must be a short-lived token"),
    (dict(iat=int(T0.timestamp()) - 7200), "invalid_grant", "Invalid JWT: Token must be a short-lived token"),
    (dict(scope="https://www.googleapis.com/auth/userinfo.email"), "invalid_scope", "The scope does not allow"),
])
def test_grant_rejections(box, changes, error, description):
    status, body = grant(box, **changes)
    assert status == 400
    assert body["error"] == error and body["error_description"].startswith(description)


def test_send_accepts_and_logs(box):
    response, body = send(box, {"token": DEVICE, "notification": {"title": "t", "body": "b"},
                                "data": {"k": "v"}, "android": {"priority": "HIGH", "ttl": "3600s"}})
    assert response.status == 200 and body["name"].startswith("projects/demo/messages/0:")
    (item,) = box.accepted()
    assert (item.token, item.message_id, item.payload["data"], item.at) == (DEVICE, body["name"], {"k": "v"}, T0)
    assert "authorization" not in item.headers


SEND_CASES = [
    ("two targets", {"token": DEVICE, "topic": "news"}, "message", Outcome.REJECTED_PAYLOAD),
    ("no target", {"notification": {"title": "t"}}, "message", Outcome.REJECTED_PAYLOAD),
    ("malformed token", {"token": "not-a-token"}, "message.token", Outcome.INVALID_TOKEN),
    ("apns token", {"token": "ab" * 32}, "message.token", Outcome.INVALID_TOKEN),
    ("int data", {"token": DEVICE, "data": {"n": 3}}, "message.data[0].value", Outcome.REJECTED_PAYLOAD),
    ("reserved from", {"token": DEVICE, "data": {"from": "x"}}, "message.data", Outcome.REJECTED_PAYLOAD),
    ("reserved google.", {"token": DEVICE, "data": {"google.c": "x"}}, "message.data", Outcome.REJECTED_PAYLOAD),
    ("bad priority", {"token": DEVICE, "android": {"priority": "URGENT"}}, "message.android.priority",
     Outcome.REJECTED_PAYLOAD),
    ("bad ttl", {"token": DEVICE, "android": {"ttl": 3600}}, "message.android.ttl", Outcome.REJECTED_PAYLOAD),
    ("too big", {"token": DEVICE, "data": {"blob": "x" * 4100}}, "message", Outcome.REJECTED_PAYLOAD),
]


@pytest.mark.parametrize(("name", "message", "field", "outcome"), SEND_CASES, ids=[c[0] for c in SEND_CASES])
def test_send_rejections_are_invalid_argument_and_parse_as_intended(box, name, message, field, outcome):
    response, body = send(box, message)
    error = body["error"]
    assert (response.status, error["code"], error["status"]) == (400, 400, "INVALID_ARGUMENT")
    assert error["details"][0] == {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                                   "errorCode": "INVALID_ARGUMENT"}
    assert error["details"][1]["fieldViolations"][0]["field"] == field
    assert parse_response(response.status, {}, response.body, "s1").outcome is outcome
    assert box.accepted() == []


def test_unregistered_and_unknown_tokens_answer_404(box, fixed):
    box.unregister(DEVICE, T0 - timedelta(days=1))
    response, body = send(box)
    assert (response.status, body["error"]["status"], body["error"]["details"][0]["errorCode"]) == (
        404, "NOT_FOUND", "UNREGISTERED")
    assert parse_response(404, {}, response.body, "s1").outcome is Outcome.INVALID_TOKEN
    other = new_fcm_token(random.Random(4))
    box.known_tokens = {DEVICE}
    response, _ = send(box, {"token": other})
    assert response.status == 404


@pytest.mark.parametrize(("bearer", "reason"), [("", "CREDENTIALS_MISSING"), ("ya29.forged", "ACCESS_TOKEN_TYPE_UNSUPPORTED")])
def test_send_without_a_valid_bearer(box, bearer, reason):
    response, body = send(box, bearer=bearer)
    assert (response.status, body["error"]["status"], body["error"]["details"][0]["reason"]) == (
        401, "UNAUTHENTICATED", reason)
    assert parse_response(401, {}, response.body, "s1").outcome is Outcome.AUTH_ERROR


def test_expired_access_token_answers_the_real_shape(box, fixed):
    bearer = grant(box)[1]["access_token"]
    fixed.advance(timedelta(seconds=61))
    response, body = send(box, bearer=bearer)
    assert response.status == 401
    assert body["error"]["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    receipt = parse_response(401, {}, response.body, "s1")
    assert (receipt.outcome, receipt.reason) == (Outcome.AUTH_ERROR, "ACCESS_TOKEN_EXPIRED")


def test_other_project_is_permission_denied_and_bad_json_is_rejected(box):
    response, body = send(box, project="someone-else")
    assert (response.status, body["error"]["status"]) == (403, "PERMISSION_DENIED")
    response, body = send(box, raw=b"{not json")
    assert (response.status, body["error"]["status"]) == (400, "INVALID_ARGUMENT")


def test_faults_target_sends_or_the_token_endpoint(box):
    box.inject(Fault.error(503, "UNAVAILABLE", retry_after=10))
    box.inject(Fault.error(500, "internal_failure", target="token"))
    assert grant(box)[0] == 500
    response, body = send(box)
    assert (response.status, body["error"]["details"][0]["errorCode"]) == (503, "UNAVAILABLE")
    receipt = parse_response(503, dict(response.headers), response.body, "s1", T0)
    assert (receipt.outcome, receipt.retry_after) == (Outcome.TRANSIENT, 10.0)
    box.inject(Fault.error(401, "ACCESS_TOKEN_EXPIRED"))
    response, _ = send(box)
    assert parse_response(401, {}, response.body, "s1").reason == "ACCESS_TOKEN_EXPIRED"


def test_a_device_gets_240_messages_a_minute_then_quota_exceeded_until_the_next_minute(box, fixed):
    fixed.advance(timedelta(seconds=60 - T0.second % 60 + 15))        # 15 s into a minute
    box.access_token_ttl = 3600
    bearer = grant(box, iat=int(fixed.now().timestamp()))[1]["access_token"]
    answers = [send(box, bearer=bearer)[0].status for _ in range(241)]
    assert answers == [200] * 240 + [429]
    response, body = send(box, bearer=bearer)
    assert (response.status, body["error"]["status"], body["error"]["details"][0]["errorCode"]) == (
        429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED")
    receipt = parse_response(429, dict(response.headers), response.body, "s1", fixed.now())
    assert (receipt.outcome, receipt.retry_after) == (Outcome.RATE_LIMITED, 45.0)   # to the minute's end
    other = new_fcm_token(random.Random(5))
    assert send(box, {"token": other}, bearer=bearer)[0].status == 200             # another device is fine
    fixed.advance(timedelta(seconds=45))
    assert send(box, bearer=bearer)[0].status == 200


def test_the_project_quota_counts_client_errors_but_not_its_own_429s(box, fixed):
    box.project_per_minute, box.device_per_minute, box.access_token_ttl = 3, None, 3600
    fixed.advance(timedelta(seconds=60 - T0.second % 60))
    bearer = grant(box, iat=int(fixed.now().timestamp()))[1]["access_token"]
    assert send(box, {"token": DEVICE, "data": {"n": 3}}, bearer=bearer)[0].status == 400   # counts
    assert [send(box, bearer=bearer)[0].status for _ in range(4)] == [200, 200, 429, 429]
    fixed.advance(timedelta(minutes=1))
    assert send(box, bearer=bearer)[0].status == 200
    assert box.stats()["rejected:QUOTA_EXCEEDED"] == 2
