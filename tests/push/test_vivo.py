"""vivo Push: signed auth, single vs list paths, invalidUsers (#20), chunking, refresh, quotas, sandbox rules."""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from engine.clock import FixedClock
from engine.config import VivoConfig
from engine.domain import Outcome, PushMessage
from engine.push.base import tls_context
from engine.push.sandbox import Fault, Sandboxes, new_vivo_token, start_sandboxes
from engine.push.vivo import (
    CLASSES,
    CODES,
    VivoChannel,
    auth_body,
    build_list_request,
    build_single_request,
    invalid_users,
    parse_response,
    window_opens_in,
)
from tests.push.conftest import T0, run


def _msg(rng: random.Random, **kw) -> PushMessage:
    fields = {"send_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "vendor": "vivo",
              "token": new_vivo_token(rng), "title": "Back in stock", "body": "The teapot you viewed is back"}
    return PushMessage(**{**fields, **kw})


@pytest.fixture
def boxes(tmp_path: Path, fixed: FixedClock) -> Iterator[Sandboxes]:
    with start_sandboxes(tmp_path / "sb", clock=fixed) as sb:
        yield sb


def _send(boxes: Sandboxes, clock: FixedClock, msgs: list[PushMessage], config: VivoConfig | None = None):
    async def go():
        async with VivoChannel(config or boxes.vendor_settings().vivo, clock) as channel:
            return await channel.send(msgs), channel.tokens.fetches
    return run(go())


# -- pure ----------------------------------------------------------------------------------------

def test_auth_body_is_md5_of_id_key_timestamp_secret():
    config = VivoConfig(app_id="10004", app_key="key", app_secret="sec")
    body = auth_body(config, T0)
    assert body == {"appId": "10004", "appKey": "key", "timestamp": 1740830400000,
                    "sign": hashlib.md5(b"10004key1740830400000sec").hexdigest()}


def test_single_and_list_builders_golden(rng):
    m = _msg(rng, message_class="transactional", data={"sku": "42"})
    path, headers, body = build_single_request(m)
    sent = json.loads(body)
    assert path == "/message/send" and headers["content-type"].startswith("application/json")
    assert (sent["regId"], sent["classification"], sent["category"]) == (m.token, 1, "ACCOUNT")
    assert sent["requestId"] == m.send_id and sent["clientCustomMap"] == {"sku": "42"}
    assert sent["timeToLive"] == 86_400 and sent["notifyType"] == 4
    batch = [_msg(rng) for _ in range(3)]
    path, _, body = build_list_request(batch, "task-1")
    assert path == "/message/pushToList"
    assert json.loads(body)["regIds"] == [b.token for b in batch]
    with pytest.raises(ValueError, match="2..1000"):
        build_list_request(batch[:1], "task-1")
    assert CLASSES["marketing"] == {"classification": 0, "category": "MARKETING"}


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_code_is_mapped(rng, code):
    batch = [_msg(rng) for _ in range(2)]
    receipts = parse_response(200, {}, json.dumps({"result": code, "desc": "x", "taskId": "t"}).encode(), batch, T0)
    assert [r.outcome for r in receipts] == [CODES[code]] * 2


def test_invalid_users_keep_23_digit_ids_exact_as_strings_and_numbers(rng):
    a, b = "16151234567890123456789", "98765432109876543210987"
    raw = b'{"result":0,"taskId":"t","invalidUsers":[{"status":1,"userid":"A"},{"status":2,"userid":B}]}'
    body = raw.replace(b"A", a.encode()).replace(b"B", b.encode())   # b as a bare 23-digit JSON number
    assert invalid_users(json.loads(body)) == {a, b}
    batch = [_msg(rng, token=a), _msg(rng), _msg(rng, token=b)]
    receipts = parse_response(200, {}, body, batch, T0)
    assert [r.outcome for r in receipts] == [Outcome.INVALID_TOKEN, Outcome.DELIVERED, Outcome.INVALID_TOKEN]


def test_partial_list_marks_exactly_the_listed_tokens(rng):
    batch = [_msg(rng) for _ in range(3)]
    body = json.dumps({"result": 0, "taskId": "t9", "invalidUsers": [
        {"status": 2, "userid": int(batch[2].token)}]}).encode()
    receipts = parse_response(200, {}, body, batch, T0)
    assert [r.outcome for r in receipts] == [Outcome.DELIVERED, Outcome.DELIVERED, Outcome.INVALID_TOKEN]
    assert receipts[0].vendor_message_id == "t9"


def test_chunks_lists_and_single_token_path(rng, fixed):
    calls: list[tuple[str, int]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path == "/message/auth":
            return httpx.Response(200, json={"result": 0, "authToken": "a"})
        assert request.headers["authToken"] == "a" and "authorization" not in request.headers
        calls.append((request.url.path, len(body.get("regIds", [1]))))
        return httpx.Response(200, json={"result": 0, "taskId": "t"})

    msgs = [_msg(rng) for _ in range(2001)]
    config = VivoConfig(enabled=True, base_url="https://vivo.test", app_id="1", app_key="k", app_secret="s")

    async def go():
        async with VivoChannel(config, fixed, transport=httpx.MockTransport(handler)) as channel:
            return await channel.send(msgs)

    receipts = run(go())
    assert len(receipts) == 2001 and {r.outcome for r in receipts} == {Outcome.DELIVERED}
    assert sorted(c for c in calls if c[0] == "/message/pushToList") == [("/message/pushToList", 1000)] * 2
    assert calls.count(("/message/send", 1)) == 1 and calls.count(("/message/saveListPayload", 1)) == 2


# -- against the sandbox ---------------------------------------------------------------------------

@pytest.mark.parametrize("as_number", [False, True])
def test_list_with_dead_tokens(boxes, fixed, rng, as_number):
    boxes.vivo.userid_as_number = as_number
    msgs = [_msg(rng) for _ in range(4)]
    boxes.unregister("vivo", msgs[0].token, T0 - timedelta(hours=1))
    boxes.unregister("vivo", msgs[3].token, T0 - timedelta(hours=1))
    receipts, _ = _send(boxes, fixed, msgs)
    assert [r.outcome for r in receipts] == [Outcome.INVALID_TOKEN, Outcome.DELIVERED, Outcome.DELIVERED,
                                             Outcome.INVALID_TOKEN]


def test_single_dead_token_is_10302(boxes, fixed, rng):
    m = _msg(rng)
    boxes.unregister("vivo", m.token, T0 - timedelta(hours=1))
    (r,), _ = _send(boxes, fixed, [m])
    assert (r.outcome, r.reason) == (Outcome.INVALID_TOKEN, "10302")


def test_expired_auth_token_is_refreshed_once(boxes, fixed, rng):
    boxes.vivo.token_ttl = 60
    config = boxes.vendor_settings().vivo

    async def go():
        async with VivoChannel(config, fixed) as channel:
            first = await channel.send([_msg(rng), _msg(rng)])
            fixed.advance(timedelta(minutes=2))
            second = await channel.send([_msg(rng), _msg(rng)])
            return first + second, channel.tokens.fetches

    receipts, fetches = run(go())
    assert {r.outcome for r in receipts} == {Outcome.DELIVERED} and fetches == 2


def test_10000_twice_is_auth_error(boxes, fixed, rng):
    boxes.inject("vivo", Fault.error(200, "10000", count=2))
    (r,), fetches = _send(boxes, fixed, [_msg(rng)])
    assert (r.outcome, fetches) == (Outcome.AUTH_ERROR, 2)


@pytest.mark.parametrize(("klass", "code"), [("marketing", "10070"), ("transactional", "10073")])
def test_daily_quota_per_classification(boxes, fixed, rng, klass, code):
    boxes.vivo.daily_quota = {0: 1, 1: 1}
    first, _ = _send(boxes, fixed, [_msg(rng, message_class=klass)])
    second, _ = _send(boxes, fixed, [_msg(rng, message_class=klass)])
    assert first[0].outcome is Outcome.DELIVERED
    assert (second[0].outcome, second[0].reason) == (Outcome.QUOTA_EXHAUSTED, code)


def test_request_id_replay_is_not_sent_twice(boxes, fixed, rng):
    m = _msg(rng)
    _send(boxes, fixed, [m])
    (r,), _ = _send(boxes, fixed, [m])
    assert r.outcome is Outcome.DELIVERED
    assert len(boxes.accepted("vivo")) == 1


@pytest.mark.parametrize(("change", "code"), [
    ({"title": "1234567"}, 10085), ({"category": "GAMES"}, 10096), ({"category": "MARKETING",
                                                                    "classification": 1}, 10097),
    ({"timeToLive": 30}, 10050), ({"title": "x" * 41}, 10050),
])
def test_sandbox_field_rules(boxes, change, code, rng):
    config = boxes.vendor_settings().vivo
    with httpx.Client(base_url=config.base_url, verify=tls_context(config.ca_file)) as client:
        token = client.post("/message/auth", json=auth_body(config, T0)).json()["authToken"]
        _, _, body = build_single_request(_msg(rng))
        answer = client.post("/message/send", json={**json.loads(body), **change}, headers={"authToken": token})
    assert answer.json()["result"] == code


def test_sandbox_rate_limit_answers_10252(boxes, fixed, rng):
    boxes.vivo.rate_limit = 1
    first, _ = _send(boxes, fixed, [_msg(rng)])
    second, _ = _send(boxes, fixed, [_msg(rng)])
    assert (first[0].outcome, second[0].outcome, second[0].reason) == (Outcome.DELIVERED, Outcome.RATE_LIMITED,
                                                                       "10252")


def test_operational_messages_only_inside_the_china_time_window(boxes, fixed, rng):
    fixed.advance(timedelta(hours=4))   # 16:00 UTC = 00:00 China time
    (marketing,), _ = _send(boxes, fixed, [_msg(rng)])
    (service,), _ = _send(boxes, fixed, [_msg(rng, message_class="transactional")])
    assert (marketing.outcome, marketing.reason) == (Outcome.RATE_LIMITED, "10071")
    assert marketing.retry_after == 7 * 3600.0           # until the window opens at 07:00 China time
    assert marketing.not_before == fixed.now() + timedelta(hours=7)   # a deferral: the attempt is not counted
    assert service.outcome is Outcome.DELIVERED
    assert service.not_before is None


@pytest.mark.parametrize(("utc", "seconds"), [
    ("2025-03-01T15:00:00+00:00", 8 * 3600.0),    # 23:00 China: opens in 8 h
    ("2025-03-01T22:59:30+00:00", 30.0),          # 06:59:30 China
    ("2025-03-01T23:00:00+00:00", 24 * 3600.0),   # 07:00 China: next opening is tomorrow
])
def test_window_opens_in(utc, seconds):
    from datetime import datetime

    assert window_opens_in(datetime.fromisoformat(utc)) == seconds
