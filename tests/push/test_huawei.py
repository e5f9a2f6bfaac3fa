"""Huawei Push Kit: golden builder, every code mapped, partial batches, chunking, refresh, quota, real TLS."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from engine.clock import FixedClock
from engine.config import Settings
from engine.domain import Outcome, PushMessage
from engine.push.base import tls_context
from engine.push.huawei import CODES, QUOTA_CODE, HuaweiChannel, build_request, illegal_tokens, parse_response
from engine.push.sandbox import Fault, Sandboxes, new_huawei_token, start_sandboxes
from tests.push.conftest import T0, run

PAST = datetime(2025, 1, 1, tzinfo=UTC)


def _msgs(n: int, rng: random.Random, **kw) -> list[PushMessage]:
    fields = {"title": "Back in stock", "body": "The teapot you viewed is back", **kw}
    return [PushMessage(send_id=f"s{i:05d}", vendor="huawei", token=new_huawei_token(rng), **fields) for i in range(n)]


def _body(**payload) -> bytes:
    return json.dumps(payload).encode()


# -- pure builder and parser ---------------------------------------------------------------------

def test_golden_request_single_marketing_message():
    msg = PushMessage(send_id="s1", vendor="huawei", token="T" * 40, title="Hi", body="Teapots", data={"item": "42"},
                      badge=0, collapse_id="promo", ttl_seconds=3600)
    path, headers, body = build_request([msg], "10086")
    assert path == "/v1/10086/messages:send"
    assert headers == {"content-type": "application/json; charset=UTF-8"}
    assert json.loads(body) == {"validate_only": False, "message": {
        "android": {"category": "MARKETING", "ttl": "3600s", "bi_tag": "s1", "collapse_key": -1,
                    "notification": {"title": "Hi", "body": "Teapots", "click_action": {"type": 3},
                                     "badge": {"set_num": 0, "class": "Classic"}, "tag": "promo"}},
        "token": ["T" * 40], "data": '{"item":"42"}'}}


def test_batch_request_lists_every_token_and_maps_transactional_to_a_service_category(rng):
    msgs = _msgs(3, rng, message_class="transactional")
    _, _, body = build_request(msgs, "1")
    message = json.loads(body)["message"]
    assert message["token"] == [m.token for m in msgs]
    assert message["android"]["category"] == "WORK" and "bi_tag" not in message["android"]
    with pytest.raises(ValueError, match="1..1000 tokens, not 1001"):
        build_request(_msgs(1001, rng), "1")


@pytest.mark.parametrize(("code", "outcome"), sorted(CODES.items()))
def test_every_code_is_mapped(code, outcome, rng):
    batch = _msgs(2, rng)
    receipts = parse_response(200, {}, _body(code=code, msg="x", requestId="r1"), batch, T0)
    assert [r.outcome for r in receipts] == [outcome, outcome]
    assert {r.reason for r in receipts} == {code}


@pytest.mark.parametrize("shape", ["v1", "v3"])
def test_partial_success_marks_exactly_the_listed_tokens_invalid(shape, rng):
    """Failure report #19: one illegal token out of three deactivates exactly that token."""
    batch = _msgs(3, rng)
    listed = [batch[1].token]
    msg = ({"success": 2, "failure": 1, "illegal_tokens": listed} if shape == "v1"
           else {"success": 2, "failure": 1, "illegalTokens": {"invalid": listed}})
    receipts = parse_response(200, {}, _body(code="80100000", msg=json.dumps(msg), requestId="r9"), batch, T0)
    assert [r.outcome for r in receipts] == [Outcome.DELIVERED, Outcome.INVALID_TOKEN, Outcome.DELIVERED]
    assert receipts[0].vendor_message_id == "r9"
    assert all(m.token not in (r.reason or "") for m, r in zip(batch, receipts, strict=True))


@pytest.mark.parametrize("msg", ["not json", "", None, "[1,2]", '{"illegal_tokens": "abc"}'])
def test_unparseable_partial_list_marks_nothing(msg):
    assert illegal_tokens(msg) == set()


@pytest.mark.parametrize(("status", "headers", "body", "outcome", "retry_after"), [
    (503, {"Retry-After": "30"}, b'{"msg":"flow control"}', Outcome.RATE_LIMITED, 30.0),
    (503, {}, b"", Outcome.RATE_LIMITED, None),
    (401, {}, b'{"code":"80200003","msg":"Oauth Token expired"}', Outcome.AUTH_ERROR, None),
    (500, {}, b"<html>", Outcome.TRANSIENT, None),
    (400, {}, b"", Outcome.REJECTED_PAYLOAD, None),
    (200, {}, b'{"code":"99999999"}', Outcome.TRANSIENT, None),
])
def test_http_layer(status, headers, body, outcome, retry_after, rng):
    (receipt,) = parse_response(status, headers, body, _msgs(1, rng), T0)
    assert (receipt.outcome, receipt.retry_after) == (outcome, retry_after)


# -- against the sandbox, over real TLS ----------------------------------------------------------

@pytest.fixture
def box(tmp_path: Path) -> Iterator[tuple[Sandboxes, FixedClock]]:
    clock = FixedClock(T0)
    with start_sandboxes(tmp_path / "sb", clock=clock) as boxes:
        yield boxes, clock


def _channel(boxes: Sandboxes, clock: FixedClock | None = None) -> HuaweiChannel:
    settings = Settings()
    settings.vendors = boxes.vendor_settings()
    return HuaweiChannel(settings.vendors.huawei, clock or FixedClock(T0))


def _send(boxes: Sandboxes, msgs: list[PushMessage], clock: FixedClock | None = None):
    async def go():
        async with _channel(boxes, clock) as channel:
            return await channel.send(msgs), channel.tokens.fetches
    return run(go())


def test_1200_tokens_go_in_two_requests_with_1200_receipts(box, rng):
    """Failure report #8: chunked to the 1000-token cap, one receipt per token."""
    boxes, _ = box
    msgs = _msgs(1200, rng, message_class="transactional")
    receipts, _ = _send(boxes, msgs)
    assert [r.send_id for r in receipts] == [m.send_id for m in msgs]
    assert {r.outcome for r in receipts} == {Outcome.DELIVERED}
    accepted = boxes.accepted("huawei")
    assert len(accepted) == 1200 and len({a.message_id for a in accepted}) == 2
    assert accepted[0].payload["android"]["notification"]["click_action"] == {"type": 3}   # #7
    assert accepted[0].payload["android"]["category"] == "WORK"


def test_2450_recipients_give_2450_results_with_the_dead_ones_invalid(box, rng):
    """Failure report #13: every recipient gets its own result; #19: only dead tokens are invalid."""
    boxes, _ = box
    msgs = _msgs(2450, rng)
    dead = {m.token for m in msgs[::49]}
    for token in dead:
        boxes.unregister("huawei", token, PAST)
    boxes.huawei.partial_shape = "v3"
    receipts, _ = _send(boxes, msgs)
    assert len(receipts) == 2450
    invalid = {m.token for m, r in zip(msgs, receipts, strict=True) if r.outcome is Outcome.INVALID_TOKEN}
    assert invalid == dead and len(dead) == 50
    assert sum(r.outcome is Outcome.DELIVERED for r in receipts) == 2400


def test_expired_access_token_is_refreshed_once(box, rng):
    boxes, server_clock = box
    boxes.huawei.oauth.access_token_ttl = 60
    channel_clock = FixedClock(T0)

    async def go():
        async with _channel(boxes, channel_clock) as channel:
            first = await channel.send(_msgs(1, rng))
            server_clock.advance(timedelta(seconds=61))   # the vendor expires it before our cache does
            second = await channel.send(_msgs(1, rng))
            boxes.inject("huawei", Fault.error(401, "80200003", count=2))
            third = await channel.send(_msgs(1, rng))
            return first, second, third, channel.tokens.fetches
    first, second, third, fetches = run(go())
    assert first[0].outcome is second[0].outcome is Outcome.DELIVERED
    assert (third[0].outcome, third[0].reason) == (Outcome.AUTH_ERROR, "80200003")   # refreshed once, no more
    assert fetches == 3   # first grant, refresh after the real expiry, refresh after the injected one
    assert boxes.stats()["huawei"]["rejected:80200003"] == 1


def test_daily_quota_per_class_answers_the_quota_code(box, rng):
    boxes, server_clock = box
    boxes.huawei.limits.daily_quota = {"marketing": 3}
    first, _ = _send(boxes, _msgs(2, rng))
    second, _ = _send(boxes, _msgs(2, rng))
    service, _ = _send(boxes, _msgs(2, rng, message_class="transactional"))
    server_clock.advance(timedelta(days=1))
    next_day, _ = _send(boxes, _msgs(2, rng))
    assert {r.outcome for r in first} == {Outcome.DELIVERED}
    assert [(r.outcome, r.reason) for r in second] == [(Outcome.QUOTA_EXHAUSTED, QUOTA_CODE)] * 2
    assert {r.outcome for r in service} == {r.outcome for r in next_day} == {Outcome.DELIVERED}


def test_flow_control_is_http_503_rate_limited(box, rng):
    boxes, _ = box
    boxes.huawei.limits.rate_per_second = 1
    receipts, _ = _send(boxes, [*_msgs(1, rng), *_msgs(1, rng, message_class="transactional")])
    assert sorted(r.outcome for r in receipts) == [Outcome.DELIVERED, Outcome.RATE_LIMITED]
    assert [r.retry_after for r in receipts if r.outcome is Outcome.RATE_LIMITED] == [1.0]


def test_wrong_client_secret_is_an_auth_error(box, rng):
    boxes, _ = box
    settings = Settings()
    settings.vendors = boxes.vendor_settings()
    settings.vendors.huawei.client_secret = "wrong"

    async def go():
        async with HuaweiChannel(settings.vendors.huawei, FixedClock(T0)) as channel:
            return await channel.send(_msgs(2, rng))
    receipts = run(go())
    assert {r.outcome for r in receipts} == {Outcome.AUTH_ERROR}
    assert "wrong" not in str(receipts)


@pytest.mark.parametrize(("mutate", "code"), [
    (lambda m: m["android"]["notification"].pop("click_action"), "80100003"),
    (lambda m: m.update(token=["x" * 40] * 1001), "80300010"),
    (lambda m: m.update(token=[]), "80100003"),
    (lambda m: m["android"]["notification"].update(body="b" * 5000), "80300008"),
    (lambda m: m.update(data={"k": "v"}), "80100003"),
    (lambda m: m["android"].update(collapse_key=101), "80100013"),
    (lambda m: m["android"].update(ttl="1296001s"), "80100001"),
    (lambda m: m["android"].update(category="PROMO"), "80100001"),
])
def test_sandbox_enforces_the_message_rules(box, rng, mutate, code):
    boxes, _ = box
    settings = Settings()
    settings.vendors = boxes.vendor_settings()
    config = settings.vendors.huawei
    _, _, body = build_request(_msgs(1, rng), config.app_id)
    payload = json.loads(body)
    mutate(payload["message"])

    async def go():
        async with httpx.AsyncClient(verify=tls_context(str(boxes.ca.ca_file))) as http:
            grant = await http.post(config.auth_url, data={"grant_type": "client_credentials",
                                                           "client_id": config.app_id,
                                                           "client_secret": config.client_secret})
            token = grant.json()["access_token"]
            return await http.post(f"{config.base_url}/v1/{config.app_id}/messages:send", json=payload,
                                   headers={"authorization": f"Bearer {token}"})
    response = run(go())
    assert response.json()["code"] == code


# -- grouping and the OAuth client, over an httpx handler transport -------------------------------

def _mock_channel(handler) -> HuaweiChannel:
    config = Settings().vendors.huawei
    config.app_id, config.client_secret, config.base_url = "10086", "s3cret", "https://push.test"
    config.auth_url = "https://oauth.test/oauth2/v3/token"
    return HuaweiChannel(config, FixedClock(T0), transport=httpx.MockTransport(handler))


def test_identical_content_shares_a_request_and_different_content_does_not(rng):
    sends: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "oauth.test":
            return httpx.Response(200, json={"access_token": "at1", "expires_in": 3600})
        sends.append(json.loads(request.content)["message"]["token"])
        return httpx.Response(200, json={"code": "80000000", "msg": "Success", "requestId": f"r{len(sends)}"})

    a, b = _msgs(3, rng), _msgs(2, rng, title="Other")
    mixed = [a[0], b[0], a[1], b[1], a[2]]

    async def go():
        async with _mock_channel(handler) as channel:
            return await channel.send(mixed), channel.tokens.fetches
    receipts, fetches = run(go())
    assert [r.send_id for r in receipts] == [m.send_id for m in mixed]
    assert sorted(sends, key=len) == [[b[0].token, b[1].token], [a[0].token, a[1].token, a[2].token]]
    assert fetches == 1   # one cached access token for both requests


@pytest.mark.parametrize(("status", "payload", "outcome", "reason"), [
    (401, {"error": 1101, "error_description": "invalid client"}, Outcome.AUTH_ERROR,
     "credential: huawei token endpoint refused the client credentials: 1101: invalid client"),
    (503, {}, Outcome.TRANSIENT, "credential: huawei token endpoint answered 503"),
    (200, {"token_type": "Bearer"}, Outcome.AUTH_ERROR,
     "credential: huawei token endpoint refused the client credentials: unknown_error: "),
])
def test_token_endpoint_failures_are_receipts_without_secrets(status, payload, outcome, reason, rng):
    forms: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        forms.append(request.content)
        return httpx.Response(status, json=payload)

    async def go():
        async with _mock_channel(handler) as channel:
            return await channel.send(_msgs(2, rng))
    receipts = run(go())
    assert [(r.outcome, r.reason) for r in receipts] == [(outcome, reason)] * 2
    assert forms == [b"grant_type=client_credentials&client_id=10086&client_secret=s3cret"]
