"""Golden tests of the pure APNs request builder and response parser, and of the one reason table."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from engine.domain import Outcome, PushMessage
from engine.push.apns import REASONS, REFRESH_REASONS, apns_id, build_request, parse_response

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TOKEN = "a" * 64

#: The reasons VENDORS.md §1 ("Reasons by status") lists, with the status APNs sends them with.
DOCUMENTED_REASONS = {
    400: ["BadCollapseId", "BadDeviceToken", "BadExpirationDate", "BadMessageId", "BadPriority", "BadTopic",
          "DeviceTokenNotForTopic", "DuplicateHeaders", "IdleTimeout", "InvalidPushType", "MissingDeviceToken",
          "MissingTopic", "PayloadEmpty", "TopicDisallowed"],
    403: ["BadCertificate", "BadCertificateEnvironment", "ExpiredProviderToken", "Forbidden",
          "InvalidProviderToken", "MissingProviderToken", "UnrelatedKeyIdInToken", "BadEnvironmentKeyInToken",
          "BadEnvironmentKeyIdInToken"],
    404: ["BadPath"],
    405: ["MethodNotAllowed"],
    410: ["Unregistered", "ExpiredToken"],
    413: ["PayloadTooLarge"],
    429: ["TooManyProviderTokenUpdates", "TooManyRequests"],
    500: ["InternalServerError"],
    503: ["ServiceUnavailable", "Shutdown"],
}


def message(**overrides) -> PushMessage:
    fields = {"send_id": "0b7c6f4e-2d1a-4c3b-9e8f-7a6b5c4d3e2f", "vendor": "apns", "token": TOKEN,
              "title": "Hi", "body": "There"}
    return PushMessage(**{**fields, **overrides})


def test_build_request_golden():
    msg = message(badge=3, collapse_id="restock", data={"deep_link": "app://item/7"}, message_class="transactional")
    path, headers, body = build_request(msg, "com.pushwise.demo", NOW)
    assert path == f"/3/device/{TOKEN}"
    assert headers == {
        "apns-topic": "com.pushwise.demo",
        "apns-push-type": "alert",
        "apns-id": "0b7c6f4e-2d1a-4c3b-9e8f-7a6b5c4d3e2f",
        "apns-priority": "10",
        "apns-expiration": str(int(NOW.timestamp()) + 86_400),
        "apns-collapse-id": "restock",
    }
    assert body == (b'{"deep_link":"app://item/7","aps":{"alert":{"title":"Hi","body":"There"},'
                    b'"badge":3,"sound":"default"}}')


def test_badge_zero_is_kept_and_none_is_left_out():
    _, _, with_zero = build_request(message(badge=0), "t", NOW)
    _, _, without = build_request(message(badge=None), "t", NOW)
    assert json.loads(with_zero)["aps"]["badge"] == 0
    assert "badge" not in json.loads(without)["aps"]


def test_marketing_priority_ttl_zero_and_collapse_id_from_the_send_id():
    _, headers, _ = build_request(message(message_class="marketing", ttl_seconds=0), "t", NOW)
    assert headers["apns-priority"] == "5"
    assert headers["apns-expiration"] == "0"
    # A repeat of the send (after a crash or a lost connection) replaces the first copy on the device.
    assert headers["apns-collapse-id"] == headers["apns-id"]
    _, own, _ = build_request(message(collapse_id="restock"), "t", NOW)
    assert own["apns-collapse-id"] == "restock"


def test_data_cannot_override_aps():
    _, _, body = build_request(message(data={"aps": "evil"}), "t", NOW)
    assert isinstance(json.loads(body)["aps"], dict)


@pytest.mark.parametrize(("send_id", "expected"), [
    ("0B7C6F4E-2D1A-4C3B-9E8F-7A6B5C4D3E2F", "0b7c6f4e-2d1a-4c3b-9e8f-7a6b5c4d3e2f"),
    ("0b7c6f4e2d1a4c3b9e8f7a6b5c4d3e2f", "0b7c6f4e-2d1a-4c3b-9e8f-7a6b5c4d3e2f"),
    ("send-42", "6384a2bb-5350-5750-a643-132e28e9c3e1"),  # uuid5: stable across runs and machines
])
def test_apns_id_is_canonical_and_stable(send_id, expected):
    assert apns_id(send_id) == expected
    assert build_request(message(send_id=send_id), "t", NOW)[1]["apns-id"] == expected


def test_parse_success_prefers_unique_id():
    r = parse_response(200, {"apns-id": "x", "apns-unique-id": "u"}, b"", "s1")
    assert (r.outcome, r.status_code, r.vendor_message_id) == (Outcome.DELIVERED, 200, "u")
    assert parse_response(200, {"Apns-Id": "x"}, b"", "s1").vendor_message_id == "x"


def test_parse_410_with_timestamp():
    r = parse_response(410, {"apns-id": "x"}, b'{"reason":"Unregistered","timestamp":1700000000123}', "s1")
    assert r.outcome is Outcome.INVALID_TOKEN
    assert r.reason == "Unregistered"
    assert r.token_invalid_since == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)


@pytest.mark.parametrize(("header", "expected"), [("30", 30.0), ("Sat, 01 Mar 2025 12:01:00 GMT", 60.0)])
def test_parse_retry_after_both_forms(header, expected):
    r = parse_response(503, {"Retry-After": header}, b'{"reason":"ServiceUnavailable"}', "s1", NOW)
    assert (r.outcome, r.retry_after) == (Outcome.TRANSIENT, expected)
    r = parse_response(429, {"retry-after": header}, b'{"reason":"TooManyRequests"}', "s1", NOW)
    assert (r.outcome, r.retry_after) == (Outcome.RATE_LIMITED, expected)


@pytest.mark.parametrize(("status", "body", "outcome", "reason"), [
    (500, b"", Outcome.TRANSIENT, "http_500"),                       # no apns-id, no body: no crash
    (502, b"<html>bad gateway</html>", Outcome.TRANSIENT, "http_502"),
    (400, b'{"reason":"SomethingNew"}', Outcome.REJECTED_PAYLOAD, "SomethingNew"),
    (403, b'{"reason":"SomethingNew"}', Outcome.AUTH_ERROR, "SomethingNew"),
    (410, b"[]", Outcome.INVALID_TOKEN, "http_410"),
    (429, b"{}", Outcome.RATE_LIMITED, "http_429"),
])
def test_parse_unknown_or_missing_reason_falls_back_on_status(status, body, outcome, reason):
    r = parse_response(status, {}, body, "s1", NOW)
    assert (r.send_id, r.outcome, r.reason, r.vendor_message_id) == ("s1", outcome, reason, None)


def test_one_table_covers_every_documented_reason():
    documented = {reason for reasons in DOCUMENTED_REASONS.values() for reason in reasons}
    assert documented - set(REASONS) == set(), "a reason listed in VENDORS.md §1 is not mapped"
    assert set(REASONS) >= REFRESH_REASONS


@pytest.mark.parametrize(("status", "reason"), [(s, r) for s, rs in DOCUMENTED_REASONS.items() for r in rs])
def test_every_documented_reason_parses_through_the_table(status, reason):
    r = parse_response(status, {}, json.dumps({"reason": reason}).encode(), "s1", NOW)
    assert r.outcome is REASONS[reason]
    assert r.reason == reason


@pytest.mark.parametrize(("reason", "outcome"), [
    ("Unregistered", Outcome.INVALID_TOKEN), ("ExpiredToken", Outcome.INVALID_TOKEN),
    ("BadDeviceToken", Outcome.INVALID_TOKEN), ("DeviceTokenNotForTopic", Outcome.INVALID_TOKEN),
    ("PayloadTooLarge", Outcome.REJECTED_PAYLOAD), ("BadCollapseId", Outcome.REJECTED_PAYLOAD),
    ("InvalidProviderToken", Outcome.AUTH_ERROR), ("ExpiredProviderToken", Outcome.AUTH_ERROR),
    ("TooManyRequests", Outcome.RATE_LIMITED), ("InternalServerError", Outcome.TRANSIENT),
    ("Shutdown", Outcome.TRANSIENT),
])
def test_engine_actions_from_vendors_md(reason, outcome):
    assert REASONS[reason] is outcome
