"""OPPO Push: golden builders and parsers, the code table, partial batches, chunking, auth refresh, quotas."""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from engine.clock import FixedClock
from engine.config import OppoConfig
from engine.domain import Outcome, PushMessage
from engine.push.base import tls_context
from engine.push.oppo import CLASSES, CODES, OppoChannel, auth_form, build_request, parse_response
from engine.push.sandbox import Fault, Sandboxes, new_oppo_token, start_sandboxes
from tests.push.conftest import T0, run


def _msg(rng: random.Random, **kw) -> PushMessage:
    fields = {"send_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "vendor": "oppo",
              "token": new_oppo_token(rng), "title": "Back in stock", "body": "The teapot you viewed is back"}
    return PushMessage(**{**fields, **kw})


@pytest.fixture
def boxes(tmp_path: Path, fixed: FixedClock) -> Iterator[Sandboxes]:
    with start_sandboxes(tmp_path / "sb", clock=fixed) as sb:
        yield sb


def _send(boxes: Sandboxes, clock: FixedClock, msgs: list[PushMessage], config: OppoConfig | None = None):
    async def go():
        async with OppoChannel(config or boxes.vendor_settings().oppo, clock) as channel:
            return await channel.send(msgs), channel.tokens.fetches
    return run(go())


# -- pure ----------------------------------------------------------------------------------------

def test_auth_form_is_sha256_of_key_timestamp_secret():
    form = auth_form("key1", "secret1", T0)
    assert form["timestamp"] == "1740830400000"
    assert form["sign"] == hashlib.sha256(b"key11740830400000secret1").hexdigest()


def test_build_request_golden(rng):
    m = _msg(rng, message_class="transactional", data={"sku": "42"}, ttl_seconds=3600)
    path, headers, body = build_request([m], "tok")
    form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
    assert path == "/server/v1/message/notification/unicast_batch"
    assert headers["content-type"] == "application/x-www-form-urlencoded"
    assert form["auth_token"] == "tok"
    (item,) = json.loads(form["messages"])
    assert item["target_type"] == 2 and item["target_value"] == m.token
    note = item["notification"]
    assert (note["category"], note["notify_level"], note["channel_id"]) == ("ACCOUNT", 2, "pushwise_service")
    assert note["off_line_ttl"] == 3600 and note["app_message_id"] == m.send_id
    assert json.loads(note["action_parameters"]) == {"sku": "42"}


def test_class_table_covers_both_classes():
    assert set(CLASSES) == {"transactional", "marketing"}
    assert CLASSES["marketing"]["category"] == "MARKETING"


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_code_is_mapped_top_level_and_per_item(rng, code):
    batch = [_msg(rng) for _ in range(2)]
    top = parse_response(200, {}, json.dumps({"code": code, "message": ""}).encode(), batch, T0)
    if code == 0:
        assert all(r.outcome is Outcome.TRANSIENT for r in top)   # code 0 without data: never assumed delivered
    else:
        assert [r.outcome for r in top] == [CODES[code]] * 2 and top[0].reason == str(code)
    item = {"registrationId": batch[0].token, "errorCode": code}
    ok = {"registrationId": batch[1].token, "messageId": "m1"}
    per = parse_response(200, {}, json.dumps({"code": 0, "data": [item, ok]}).encode(), batch, T0)
    assert per[0].outcome is CODES[code]
    assert (per[1].outcome, per[1].vendor_message_id) == (Outcome.DELIVERED, "m1")


def test_http_layer_comes_first(rng):
    batch = [_msg(rng)]
    (r,) = parse_response(429, {"Retry-After": "7"}, b"", batch, T0)
    assert (r.outcome, r.retry_after) == (Outcome.RATE_LIMITED, 7.0)
    (r,) = parse_response(502, {}, b"<html>", batch, T0)
    assert r.outcome is Outcome.TRANSIENT


def test_chunks_of_1000_with_one_receipt_per_token(rng, fixed):
    sizes: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/server/v1/auth":
            return httpx.Response(200, json={"code": 0, "data": {"auth_token": "t", "create_time": 1}})
        messages = json.loads(parse_qs(request.content.decode())["messages"][0])
        sizes.append(len(messages))
        return httpx.Response(200, json={"code": 0, "data": [
            {"registrationId": m["target_value"], "messageId": "x"} for m in messages]})

    msgs = [_msg(rng) for _ in range(2450)]
    config = OppoConfig(enabled=True, base_url="https://oppo.test", app_key="k", master_secret="s")

    async def go():
        async with OppoChannel(config, fixed, transport=httpx.MockTransport(handler)) as channel:
            return await channel.send(msgs)

    receipts = run(go())
    assert sorted(sizes) == [450, 1000, 1000]
    assert [r.send_id for r in receipts] == [m.send_id for m in msgs]
    assert {r.outcome for r in receipts} == {Outcome.DELIVERED}


# -- against the sandbox (real TLS + HTTP) --------------------------------------------------------

def test_partial_batch_invalidates_exactly_the_dead_tokens(boxes, fixed, rng):
    msgs = [_msg(rng) for _ in range(3)]
    boxes.unregister("oppo", msgs[1].token, T0 - timedelta(days=1))
    receipts, _ = _send(boxes, fixed, msgs)
    assert [r.outcome for r in receipts] == [Outcome.DELIVERED, Outcome.INVALID_TOKEN, Outcome.DELIVERED]
    assert receipts[1].reason == "10000"
    assert sorted(a.token for a in boxes.accepted("oppo")) == sorted([msgs[0].token, msgs[2].token])


def test_auth_token_expiry_is_refreshed_once(boxes, fixed, rng):
    boxes.oppo.token_ttl = 60
    config = boxes.vendor_settings().oppo

    async def go():
        async with OppoChannel(config, fixed) as channel:
            first = await channel.send([_msg(rng)])
            fixed.advance(timedelta(minutes=5))       # the vendor forgot the token before our cache did
            second = await channel.send([_msg(rng)])
            return first, second, channel.tokens.fetches

    first, second, fetches = run(go())
    assert first[0].outcome is second[0].outcome is Outcome.DELIVERED
    assert fetches == 2
    assert boxes.stats()["oppo"]["rejected:11"] == 1


def test_code_11_twice_is_an_auth_error_after_one_retry(boxes, fixed, rng):
    boxes.inject("oppo", Fault.error(200, "11", count=2))
    (receipts, fetches) = _send(boxes, fixed, [_msg(rng)])
    assert (receipts[0].outcome, receipts[0].reason, fetches) == (Outcome.AUTH_ERROR, "11", 2)


def test_wrong_secret_is_an_auth_error(boxes, fixed, rng):
    config = boxes.vendor_settings().oppo
    config.master_secret = "wrong"
    receipts, _ = _send(boxes, fixed, [_msg(rng)], config)
    assert receipts[0].outcome is Outcome.AUTH_ERROR and "code 15" in str(receipts[0].reason)


def test_daily_quota_per_class(boxes, fixed, rng):
    boxes.oppo.daily_quota = {"marketing": 2, "transactional": None}
    receipts, _ = _send(boxes, fixed, [_msg(rng) for _ in range(3)])
    assert sorted(r.outcome.value for r in receipts) == ["delivered", "delivered", "quota_exhausted"]
    service, _ = _send(boxes, fixed, [_msg(rng, message_class="transactional") for _ in range(3)])
    assert {r.outcome for r in service} == {Outcome.DELIVERED}
    fixed.advance(timedelta(days=1))
    again, _ = _send(boxes, fixed, [_msg(rng)])
    assert again[0].outcome is Outcome.DELIVERED


@pytest.mark.parametrize(("fault", "outcome"), [
    (Fault.error(200, "33"), Outcome.QUOTA_EXHAUSTED),
    (Fault.error(200, "-2"), Outcome.RATE_LIMITED),
    (Fault.error(503, "busy", retry_after=5), Outcome.TRANSIENT),
    (Fault.reset(), Outcome.TRANSIENT),
])
def test_injected_faults(boxes, fixed, rng, fault, outcome):
    boxes.inject("oppo", fault)
    receipts, _ = _send(boxes, fixed, [_msg(rng) for _ in range(2)])
    assert [r.outcome for r in receipts] == [outcome, outcome]


def test_sandbox_enforces_fields(boxes, fixed, rng):
    receipts, _ = _send(boxes, fixed, [_msg(rng, title="x" * 51)])
    assert (receipts[0].outcome, receipts[0].reason) == (Outcome.REJECTED_PAYLOAD, "41")


def test_sandbox_rejects_stale_timestamps(boxes, fixed):
    config = boxes.vendor_settings().oppo
    form = auth_form(config.app_key, config.master_secret, T0 - timedelta(minutes=11))
    with httpx.Client(base_url=config.base_url, verify=tls_context(config.ca_file)) as client:
        answer = client.post("/server/v1/auth", data=form).json()
    assert answer["code"] == 16


def test_sandbox_rate_limit_answers_55(boxes, fixed, rng):
    boxes.oppo.rate_limit = 1
    first, _ = _send(boxes, fixed, [_msg(rng)])
    second, _ = _send(boxes, fixed, [_msg(rng)])
    assert (first[0].outcome, second[0].outcome, second[0].reason) == (Outcome.DELIVERED, Outcome.RATE_LIMITED, "55")
