"""Honor Push: golden builder, every code mapped, fail/expire tokens, chunking, refresh, quota, real TLS."""

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
from engine.push.honor import CODES, QUOTA_CODE, RATE_CODE, HonorChannel, build_request, parse_response
from engine.push.sandbox import Fault, Sandboxes, new_honor_token, start_sandboxes
from tests.push.conftest import T0, run

PAST = datetime(2025, 1, 1, tzinfo=UTC)


def _msgs(n: int, rng: random.Random, **kw) -> list[PushMessage]:
    fields = {"title": "Back in stock", "body": "The teapot you viewed is back", **kw}
    return [PushMessage(send_id=f"s{i:05d}", vendor="honor", token=new_honor_token(rng), **fields) for i in range(n)]


# -- pure builder and parser ---------------------------------------------------------------------

def test_golden_request_single_transactional_message():
    msg = PushMessage(send_id="s1", vendor="honor", token="T" * 40, title="Hi", body="Your order shipped",
                      message_class="transactional", data={"order": "7"}, badge=2, collapse_id="order-7",
                      ttl_seconds=99_999_999)
    path, headers, body = build_request([msg], "104", T0)
    assert path == "/api/v1/104/sendMessage"
    assert headers == {"content-type": "application/json", "timestamp": "1740830400000"}
    assert json.loads(body) == {
        "android": {"ttl": "1296000s", "biTag": "s1",
                    "notification": {"title": "Hi", "body": "Your order shipped", "clickAction": {"type": 3},
                                     "importance": "NORMAL", "tag": "order-7",
                                     "badge": {"setNum": 2, "badgeClass": "Classic"}}},
        "token": ["T" * 40], "data": '{"order":"7"}'}


def test_marketing_is_importance_low_and_batches_list_every_token(rng):
    msgs = _msgs(3, rng)
    message = json.loads(build_request(msgs, "1", T0)[2])
    assert message["android"]["notification"]["importance"] == "LOW"
    assert message["token"] == [m.token for m in msgs]


@pytest.mark.parametrize(("code", "outcome"), sorted(CODES.items()))
def test_every_code_is_mapped(code, outcome, rng):
    body = json.dumps({"code": code, "message": "x", "data": {"requestId": "r1"}}).encode()
    receipts = parse_response(200, {}, body, _msgs(2, rng), T0)
    assert [r.outcome for r in receipts] == [outcome, outcome]


def test_fail_and_expire_tokens_are_exactly_the_invalid_ones(rng):
    batch = _msgs(4, rng)
    body = json.dumps({"code": 200, "message": "success", "data": {
        "sendResult": True, "requestId": "r2", "failTokens": [batch[0].token],
        "expireTokens": [batch[2].token]}}).encode()
    receipts = parse_response(200, {}, body, batch, T0)
    assert [r.outcome for r in receipts] == [Outcome.INVALID_TOKEN, Outcome.DELIVERED, Outcome.INVALID_TOKEN,
                                             Outcome.DELIVERED]
    assert [r.reason for r in receipts] == ["200:failTokens", "200", "200:expireTokens", "200"]


@pytest.mark.parametrize(("status", "body", "outcome"), [
    (200, b'{"code":0,"message":"success"}', Outcome.TRANSIENT),     # only the documented 200 is success
    (200, b'{"code":"200","data":{}}', Outcome.DELIVERED),
    (429, b"", Outcome.RATE_LIMITED),
    (401, b"", Outcome.AUTH_ERROR),
    (502, b"bad gateway", Outcome.TRANSIENT),
])
def test_http_layer(status, body, outcome, rng):
    (receipt,) = parse_response(status, {"retry-after": "Sat, 01 Mar 2025 12:00:09 GMT"}, body, _msgs(1, rng), T0)
    assert receipt.outcome is outcome
    assert receipt.retry_after == (None if outcome is Outcome.DELIVERED else 9.0)


# -- against the sandbox, over real TLS ----------------------------------------------------------

@pytest.fixture
def box(tmp_path: Path) -> Iterator[tuple[Sandboxes, FixedClock]]:
    clock = FixedClock(T0)
    with start_sandboxes(tmp_path / "sb", clock=clock) as boxes:
        yield boxes, clock


def _config(boxes: Sandboxes):
    settings = Settings()
    settings.vendors = boxes.vendor_settings()
    return settings.vendors.honor


def _send(boxes: Sandboxes, msgs: list[PushMessage], clock: FixedClock | None = None):
    async def go():
        async with HonorChannel(_config(boxes), clock or FixedClock(T0)) as channel:
            return await channel.send(msgs)
    return run(go())


def test_1200_tokens_go_in_two_requests_and_dead_tokens_are_listed(box, rng):
    boxes, _ = box
    msgs = _msgs(1200, rng)
    for m in msgs[5:8]:
        boxes.unregister("honor", m.token, PAST)
    receipts = _send(boxes, msgs)
    assert [r.send_id for r in receipts] == [m.send_id for m in msgs]
    assert [i for i, r in enumerate(receipts) if r.outcome is Outcome.INVALID_TOKEN] == [5, 6, 7]
    accepted = boxes.accepted("honor")
    assert len(accepted) == 1197 and len({a.message_id for a in accepted}) == 2
    assert accepted[0].payload["android"]["notification"]["clickAction"] == {"type": 3}
    assert accepted[0].payload["android"]["notification"]["importance"] == "LOW"


def test_2450_recipients_give_2450_results(box, rng):
    boxes, _ = box
    receipts = _send(boxes, _msgs(2450, rng, message_class="transactional"))
    assert len(receipts) == 2450 and {r.outcome for r in receipts} == {Outcome.DELIVERED}


def test_all_tokens_dead_is_80300007(box, rng):
    boxes, _ = box
    msgs = _msgs(2, rng)
    for m in msgs:
        boxes.unregister("honor", m.token, PAST)
    assert {(r.outcome, r.reason) for r in _send(boxes, msgs)} == {(Outcome.INVALID_TOKEN, "80300007")}


def test_expired_access_token_is_refreshed_once(box, rng):
    boxes, server_clock = box
    boxes.honor.oauth.access_token_ttl = 30

    async def go():
        async with HonorChannel(_config(boxes), FixedClock(T0)) as channel:
            first = await channel.send(_msgs(1, rng))
            server_clock.advance(timedelta(seconds=31))
            second = await channel.send(_msgs(1, rng))
            return first, second, channel.tokens.fetches
    first, second, fetches = run(go())
    assert first[0].outcome is second[0].outcome is Outcome.DELIVERED
    assert fetches == 2 and boxes.stats()["honor"]["rejected:80200003"] == 1


def test_quota_and_rate_codes(box, rng):
    boxes, _ = box
    boxes.honor.limits.daily_quota = {"marketing": 1}
    assert {r.outcome for r in _send(boxes, _msgs(1, rng))} == {Outcome.DELIVERED}
    assert {(r.outcome, r.reason) for r in _send(boxes, _msgs(1, rng))} == {
        (Outcome.QUOTA_EXHAUSTED, str(QUOTA_CODE))}
    boxes.honor.limits.rate_per_second = 1
    receipts = _send(boxes, [*_msgs(1, rng, message_class="transactional"), *_msgs(1, rng, badge=1)])
    assert (Outcome.RATE_LIMITED, str(RATE_CODE)) in {(r.outcome, r.reason) for r in receipts}


def test_injected_http_date_retry_after(box, rng):
    boxes, _ = box
    boxes.inject("honor", Fault.error(503, "", retry_after=T0 + timedelta(seconds=20)))
    (receipt,) = _send(boxes, _msgs(1, rng))
    assert (receipt.outcome, receipt.retry_after) == (Outcome.TRANSIENT, 20.0)


@pytest.mark.parametrize(("mutate", "headers", "code"), [
    (lambda m: m["android"]["notification"].pop("clickAction"), {}, 80100003),
    (lambda m: m["android"]["notification"].update(importance="HIGH"), {}, 80100001),
    (lambda m: m.update(token=["x" * 40] * 1001), {}, 80300010),
    (lambda m: m["android"]["notification"].update(body="b" * 5000), {}, 80300008),
    (lambda m: None, {"timestamp": "now"}, 80100001),
])
def test_sandbox_enforces_the_message_rules(box, rng, mutate, headers, code):
    boxes, _ = box
    config = _config(boxes)
    path, base_headers, body = build_request(_msgs(1, rng), config.app_id, T0)
    message = json.loads(body)
    mutate(message)

    async def go():
        async with httpx.AsyncClient(verify=tls_context(str(boxes.ca.ca_file))) as http:
            grant = await http.post(config.auth_url, data={"grant_type": "client_credentials",
                                                           "client_id": config.client_id,
                                                           "client_secret": config.client_secret})
            token = grant.json()["access_token"]
            return await http.post(f"{config.base_url}{path}", json=message,
                                   headers={**base_headers, **headers, "authorization": f"Bearer {token}"})
    assert run(go()).json()["code"] == code
