"""Meizu Push: the documented signature, string codes, the per-token value map, chunking, sandbox rules."""

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
from engine.config import MeizuConfig
from engine.domain import Outcome, PushMessage
from engine.push.meizu import CODES, MeizuChannel, build_request, parse_response, sign
from engine.push.sandbox import Fault, Sandboxes, new_meizu_token, start_sandboxes
from tests.push.conftest import T0, run


def _msg(rng: random.Random, **kw) -> PushMessage:
    fields = {"send_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "vendor": "meizu",
              "token": new_meizu_token(rng), "title": "Back in stock", "body": "The teapot you viewed is back"}
    return PushMessage(**{**fields, **kw})


@pytest.fixture
def boxes(tmp_path: Path, fixed: FixedClock) -> Iterator[Sandboxes]:
    with start_sandboxes(tmp_path / "sb", clock=fixed) as sb:
        yield sb


def _send(boxes: Sandboxes, clock: FixedClock, msgs: list[PushMessage], config: MeizuConfig | None = None):
    async def go():
        async with MeizuChannel(config or boxes.vendor_settings().meizu, clock) as channel:
            return await channel.send(msgs)
    return run(go())


def test_sign_follows_the_documented_example():
    # README: params k1..k3 sorted, "k1=v1k2=v2k3=v3" + secret, lowercase MD5; raw (un-encoded) values
    assert sign({"k2": "v2", "k1": "v1", "k3": "v3", "sign": "ignored"}, "secret") == hashlib.md5(
        b"k1=v1k2=v2k3=v3secret").hexdigest()
    assert sign({"a": "x y&z"}, "s") == hashlib.md5(b"a=x y&zs").hexdigest()


def test_build_request_golden(rng):
    batch = [_msg(rng, message_class="transactional", collapse_id="promo-7", ttl_seconds=7200) for _ in range(2)]
    path, headers, body = build_request(batch, "100", "sec")
    form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
    assert path == "/garcia/api/server/push/varnished/pushByPushId"
    assert form["pushIds"] == f"{batch[0].token},{batch[1].token}" and form["appId"] == "100"
    assert form["sign"] == sign(form, "sec")
    message = json.loads(form["messageJson"])
    assert message["noticeBarInfo"] == {"noticeBarType": 0, "title": "Back in stock",
                                        "content": "The teapot you viewed is back"}
    assert message["pushTimeInfo"] == {"offLine": 1, "validTime": 2}
    assert message["noticeMsgType"] == 1 and len(message["advanceInfo"]["notifyKey"]) == 8
    assert headers["content-type"].startswith("application/x-www-form-urlencoded")


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_code_is_mapped_top_level_and_per_token(rng, code):
    batch = [_msg(rng) for _ in range(2)]
    if code != "200":
        top = parse_response(200, {}, json.dumps({"code": code, "message": "", "value": {}}).encode(), batch, T0)
        assert [r.outcome for r in top] == [CODES[code]] * 2
    value = {code: [batch[0].token]}
    per = parse_response(200, {}, json.dumps({"code": "200", "value": value, "msgId": "M1"}).encode(), batch, T0)
    assert per[0].outcome is CODES[code]
    assert (per[1].outcome, per[1].vendor_message_id) == (Outcome.DELIVERED, "M1")


def test_chunks_of_1000(rng, fixed):
    sizes: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sizes.append(len(parse_qs(request.content.decode())["pushIds"][0].split(",")))
        return httpx.Response(200, json={"code": "200", "value": {}, "msgId": "m"})

    msgs = [_msg(rng) for _ in range(2450)]
    config = MeizuConfig(enabled=True, base_url="https://meizu.test", app_id="1", app_secret="s")

    async def go():
        async with MeizuChannel(config, fixed, transport=httpx.MockTransport(handler)) as channel:
            return await channel.send(msgs)

    receipts = run(go())
    assert sorted(sizes) == [450, 1000, 1000] and len(receipts) == 2450
    assert [r.send_id for r in receipts] == [m.send_id for m in msgs]


def test_partial_batch_against_the_sandbox(boxes, fixed, rng):
    msgs = [_msg(rng) for _ in range(3)] + [_msg(rng, token="bad!")]
    boxes.unregister("meizu", msgs[1].token, T0 - timedelta(days=2))
    receipts = _send(boxes, fixed, msgs)
    assert [(r.outcome, r.reason) for r in receipts] == [
        (Outcome.DELIVERED, None), (Outcome.INVALID_TOKEN, "110002"), (Outcome.DELIVERED, None),
        (Outcome.INVALID_TOKEN, "110003")]
    assert len(boxes.accepted("meizu")) == 2


def test_wrong_secret_fails_the_signature(boxes, fixed, rng):
    config = boxes.vendor_settings().meizu
    config.app_secret = "wrong"
    (r,) = _send(boxes, fixed, [_msg(rng)], config)
    assert (r.outcome, r.reason) == (Outcome.AUTH_ERROR, "1006")


def test_daily_quota_answers_520(boxes, fixed, rng):
    boxes.meizu.daily_quota = {"public": 1, "private": None}
    receipts = _send(boxes, fixed, [_msg(rng) for _ in range(2)])
    assert [r.reason for r in receipts] == [None, "520"]
    assert receipts[1].outcome is Outcome.QUOTA_EXHAUSTED
    assert {r.outcome for r in _send(boxes, fixed, [_msg(rng, message_class="transactional")])} == {
        Outcome.DELIVERED}


@pytest.mark.parametrize(("fault", "outcome"), [
    (Fault.error(200, "110010"), Outcome.RATE_LIMITED), (Fault.error(200, "1001"), Outcome.TRANSIENT),
    (Fault.error(500, "boom"), Outcome.TRANSIENT), (Fault.reset(), Outcome.TRANSIENT),
])
def test_injected_faults(boxes, fixed, rng, fault, outcome):
    boxes.inject("meizu", fault)
    assert {r.outcome for r in _send(boxes, fixed, [_msg(rng), _msg(rng)])} == {outcome}


def test_sandbox_rate_limit_and_field_rules(boxes, fixed, rng):
    (r,) = _send(boxes, fixed, [_msg(rng, title="t" * 33)])
    assert (r.outcome, r.reason) == (Outcome.REJECTED_PAYLOAD, "1005")
    boxes.meizu.rate_limit = 1
    first, second = _send(boxes, fixed, [_msg(rng)]), _send(boxes, fixed, [_msg(rng)])
    assert (first[0].outcome, second[0].outcome, second[0].reason) == (Outcome.DELIVERED, Outcome.RATE_LIMITED,
                                                                       "110010")
