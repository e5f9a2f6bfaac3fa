"""Golden tests of the pure FCM HTTP v1 request builder and response parser, and of the one code table."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from engine.domain import Outcome, PushMessage
from engine.push.fcm import ERROR_CODES, REFRESH_REASONS, build_request, parse_response

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"

#: VENDORS.md §2 error table: errorCode → (HTTP status, outcome the engine must take).
DOCUMENTED = {
    "INVALID_ARGUMENT": (400, Outcome.REJECTED_PAYLOAD),
    "UNREGISTERED": (404, Outcome.INVALID_TOKEN),
    "SENDER_ID_MISMATCH": (403, Outcome.INVALID_TOKEN),
    "QUOTA_EXCEEDED": (429, Outcome.RATE_LIMITED),
    "UNAVAILABLE": (503, Outcome.TRANSIENT),
    "INTERNAL": (500, Outcome.TRANSIENT),
    "THIRD_PARTY_AUTH_ERROR": (401, Outcome.AUTH_ERROR),
    "ACCESS_TOKEN_EXPIRED": (401, Outcome.AUTH_ERROR),
}


def google_error(code: int, status: str, message: str, *details: dict) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "status": status,
                                 "details": list(details)}}).encode()


def fcm_error(code: int, status: str, error_code: str, message: str = "x") -> bytes:
    return google_error(code, status, message, {"@type": FCM_ERROR, "errorCode": error_code})


def message(**overrides) -> PushMessage:
    fields = {"send_id": "s1", "vendor": "fcm", "token": "tok", "title": "Hi", "body": "There"}
    return PushMessage(**{**fields, **overrides})


def test_build_request_golden():
    msg = message(data={"deep_link": "app://item/7", "n": 3}, collapse_id="restock", message_class="transactional",
                  ttl_seconds=3600)
    path, headers, body = build_request(msg, "demo-project")
    assert path == "/v1/projects/demo-project/messages:send"
    assert headers == {"content-type": "application/json; charset=UTF-8"}
    assert json.loads(body) == {"message": {
        "token": "tok",
        "notification": {"title": "Hi", "body": "There"},
        "data": {"deep_link": "app://item/7", "n": "3"},
        "android": {"priority": "HIGH", "ttl": "3600s", "collapse_key": "restock",
                    "notification": {"tag": "restock"}},
        "apns": {"headers": {"apns-collapse-id": "restock"}},
    }}


def test_marketing_defaults():
    _, _, body = build_request(message(), "p")
    assert json.loads(body) == {"message": {"token": "tok", "notification": {"title": "Hi", "body": "There"},
                                            "android": {"priority": "NORMAL", "ttl": "86400s",
                                                        "notification": {"tag": "s1"}},
                                            "apns": {"headers": {"apns-collapse-id": "59e0f9d3-26c5-5b98-879d-523ffee32eb0"}}}}


def test_parse_success():
    r = parse_response(200, {}, b'{"name":"projects/p/messages/0:1%ab"}', "s1")
    assert (r.outcome, r.vendor_message_id, r.status_code) == (Outcome.DELIVERED, "projects/p/messages/0:1%ab", 200)


@pytest.mark.parametrize(("error_code", "status_and_outcome"), sorted(DOCUMENTED.items()))
def test_every_documented_code_is_in_the_one_table(error_code, status_and_outcome):
    status, outcome = status_and_outcome
    assert ERROR_CODES[error_code] is outcome
    r = parse_response(status, {}, fcm_error(status, "X", error_code), "s1", NOW)
    assert (r.outcome, r.reason) == (outcome, error_code)


def test_unregistered_real_shape():
    body = fcm_error(404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found.")
    assert parse_response(404, {}, body, "s1").outcome is Outcome.INVALID_TOKEN


def test_access_token_expired_is_the_refresh_signal():
    body = google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.", {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "ACCESS_TOKEN_EXPIRED",
        "domain": "googleapis.com"})
    r = parse_response(401, {}, body, "s1")
    assert (r.outcome, r.reason) == (Outcome.AUTH_ERROR, "ACCESS_TOKEN_EXPIRED")
    assert r.reason in REFRESH_REASONS


@pytest.mark.parametrize(("body", "outcome"), [
    (google_error(400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token",
                  {"@type": FCM_ERROR, "errorCode": "INVALID_ARGUMENT"}), Outcome.INVALID_TOKEN),
    (google_error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.",
                  {"@type": FCM_ERROR, "errorCode": "INVALID_ARGUMENT"},
                  {"@type": "type.googleapis.com/google.rpc.BadRequest",
                   "fieldViolations": [{"field": "message.token", "description": "Invalid registration"}]}),
     Outcome.INVALID_TOKEN),
    (google_error(400, "INVALID_ARGUMENT", "Invalid value at 'message.data[0].value' (TYPE_STRING), 3",
                  {"@type": FCM_ERROR, "errorCode": "INVALID_ARGUMENT"}), Outcome.REJECTED_PAYLOAD),
    (google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received."), Outcome.REJECTED_PAYLOAD),
])
def test_invalid_argument_about_the_token_is_an_invalid_token(body, outcome):
    assert parse_response(400, {}, body, "s1").outcome is outcome


@pytest.mark.parametrize(("status", "body", "outcome", "reason"), [
    (404, b"<html>not found</html>", Outcome.REJECTED_PAYLOAD, "http_404"),  # a wrong URL is not a dead token
    (404, google_error(404, "NOT_FOUND", "Requested entity was not found."), Outcome.INVALID_TOKEN, "NOT_FOUND"),
    (403, google_error(403, "PERMISSION_DENIED", "denied"), Outcome.AUTH_ERROR, "PERMISSION_DENIED"),
    (429, b"", Outcome.RATE_LIMITED, "http_429"),
    (502, b"", Outcome.TRANSIENT, "http_502"),
    (401, b"{}", Outcome.AUTH_ERROR, "http_401"),
])
def test_status_fallbacks(status, body, outcome, reason):
    r = parse_response(status, {}, body, "s1", NOW)
    assert (r.outcome, r.reason) == (outcome, reason)


@pytest.mark.parametrize(("header", "expected"), [("120", 120.0), ("Sat, 01 Mar 2025 12:00:30 GMT", 30.0),
                                                  ("not a date", None)])
def test_retry_after(header, expected):
    r = parse_response(503, {"Retry-After": header}, fcm_error(503, "UNAVAILABLE", "UNAVAILABLE"), "s1", NOW)
    assert (r.outcome, r.retry_after) == (Outcome.TRANSIENT, expected)
