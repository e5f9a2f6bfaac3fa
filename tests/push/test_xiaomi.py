"""Xiaomi MiPush: golden form builder, every code mapped, bad_regids, chunking, quota, rate, real TLS."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import httpx
import pytest

from engine.clock import FixedClock
from engine.config import Settings
from engine.domain import Outcome, PushMessage
from engine.push.base import tls_context
from engine.push.sandbox import Sandboxes, new_xiaomi_token, start_sandboxes
from engine.push.xiaomi import CODES, XiaomiChannel, build_request, parse_response
from tests.push.conftest import T0, run

PAST = datetime(2025, 1, 1, tzinfo=UTC)


def _msgs(n: int, rng: random.Random, **kw) -> list[PushMessage]:
    fields = {"title": "Back in stock", "body": "The teapot you viewed is back", **kw}
    return [PushMessage(send_id=f"s{i:05d}", vendor="xiaomi", token=new_xiaomi_token(rng), **fields) for i in range(n)]


# -- pure builder and parser ---------------------------------------------------------------------

def test_golden_form_for_one_marketing_message():
    msg = PushMessage(send_id="0f8c2a1e-7d4b-4c3a-9e1f-2b3c4d5e6f70", vendor="xiaomi", token="R" * 44, title="Hi",
                      body="Teapots", data={"item": "42"}, collapse_id="promo", ttl_seconds=3600)
    path, headers, body = build_request([msg], "com.pushwise.demo")
    assert (path, headers) == ("/v3/message/regid",
                               {"content-type": "application/x-www-form-urlencoded;charset=UTF-8"})
    assert {k: v[0] for k, v in parse_qs(body.decode()).items()} == {
        "registration_id": "R" * 44, "restricted_package_name": "com.pushwise.demo", "pass_through": "0",
        "title": "Hi", "description": "Teapots", "notify_type": "-1", "time_to_live": "3600000",
        "extra.channel_id": "public", "extra.notify_effect": "1", "payload": '{"item":"42"}',
        "notify_id": "1022300598", "extra.jobkey": "0f8c2a1e7d4b4c3a9e1f"}


def test_transactional_goes_to_the_private_channel_and_batches_join_regids(rng):
    msgs = _msgs(3, rng, message_class="transactional")
    form = parse_qs(build_request(msgs, "p")[2].decode())
    assert form["extra.channel_id"] == ["private"]
    assert form["registration_id"] == [",".join(m.token for m in msgs)]
    assert "extra.jobkey" not in form


@pytest.mark.parametrize(("title", "body", "message"), [
    ("t" * 50, "b", "title must be 1..49 characters"),
    ("   ", "b", "title must be 1..49 characters"),
    ("t", "b" * 128, "description must be under 128 characters"),
])
def test_builder_refuses_what_xiaomi_would_reject(title, body, message, rng):
    msg = PushMessage(send_id="s", vendor="xiaomi", token="R" * 44, title=title, body=body)
    with pytest.raises(ValueError, match=message):
        build_request([msg], "p")


@pytest.mark.parametrize(("code", "outcome"), sorted(CODES.items()))
def test_every_code_is_mapped(code, outcome, rng):
    body = json.dumps({"result": "ok" if code == 0 else "error", "code": code, "data": {"id": "m1"}}).encode()
    receipts = parse_response(200, {}, body, _msgs(2, rng), T0)
    assert [(r.outcome, r.reason) for r in receipts] == [(outcome, str(code))] * 2


def test_bad_regids_are_exactly_the_invalid_ones(rng):
    batch = _msgs(3, rng)
    body = json.dumps({"result": "ok", "code": 0, "data": {"id": "m1", "bad_regids": batch[2].token}}).encode()
    receipts = parse_response(200, {}, body, batch, T0)
    assert [r.outcome for r in receipts] == [Outcome.DELIVERED, Outcome.DELIVERED, Outcome.INVALID_TOKEN]
    assert receipts[0].vendor_message_id == "m1"


def test_builder_errors_become_rejected_payload_receipts_without_a_request(rng):
    async def go():
        config = Settings().vendors.xiaomi
        config.base_url, config.app_secret, config.package_name = "https://127.0.0.1:9", "s", "p"
        async with XiaomiChannel(config, FixedClock(T0)) as channel:
            return await channel.send(_msgs(2, rng, title="t" * 60))
    assert {(r.outcome, r.reason) for r in run(go())} == {(Outcome.REJECTED_PAYLOAD, "build: ValueError")}


# -- against the sandbox, over real TLS ----------------------------------------------------------

@pytest.fixture
def box(tmp_path: Path) -> Iterator[tuple[Sandboxes, FixedClock]]:
    clock = FixedClock(T0)
    with start_sandboxes(tmp_path / "sb", clock=clock) as boxes:
        yield boxes, clock


def _config(boxes: Sandboxes):
    settings = Settings()
    settings.vendors = boxes.vendor_settings()
    return settings.vendors.xiaomi


def _send(boxes: Sandboxes, msgs: list[PushMessage], config=None):
    async def go():
        async with XiaomiChannel(config or _config(boxes), FixedClock(T0)) as channel:
            return await channel.send(msgs)
    return run(go())


def test_1200_regids_in_two_requests_with_bad_ones_listed(box, rng):
    boxes, _ = box
    msgs = _msgs(1200, rng)
    dead = [msgs[0], msgs[999], msgs[1000]]
    for m in dead:
        boxes.unregister("xiaomi", m.token, PAST)
    receipts = _send(boxes, msgs)
    assert [r.send_id for r in receipts] == [m.send_id for m in msgs]
    assert [i for i, r in enumerate(receipts) if r.outcome is Outcome.INVALID_TOKEN] == [0, 999, 1000]
    accepted = boxes.accepted("xiaomi")
    assert len(accepted) == 1197 and len({a.message_id for a in accepted}) == 2
    assert accepted[0].payload["extra.notify_effect"] == "1" and accepted[0].payload["extra.channel_id"] == "public"


def test_2450_recipients_give_2450_results(box, rng):
    boxes, _ = box
    receipts = _send(boxes, _msgs(2450, rng, message_class="transactional"))
    assert len(receipts) == 2450 and {r.outcome for r in receipts} == {Outcome.DELIVERED}


def test_every_regid_dead_is_20301(box, rng):
    boxes, _ = box
    boxes.xiaomi.known_tokens = set()
    assert {(r.outcome, r.reason) for r in _send(boxes, _msgs(3, rng))} == {(Outcome.INVALID_TOKEN, "20301")}


def test_daily_quota_200001_per_class_until_the_china_day_ends(box, rng):
    boxes, server_clock = box
    boxes.xiaomi.limits.daily_quota = {"marketing": 2}
    assert {r.outcome for r in _send(boxes, _msgs(2, rng))} == {Outcome.DELIVERED}
    assert {(r.outcome, r.reason) for r in _send(boxes, _msgs(1, rng))} == {(Outcome.QUOTA_EXHAUSTED, "200001")}
    assert {r.outcome for r in _send(boxes, _msgs(1, rng, message_class="transactional"))} == {Outcome.DELIVERED}
    server_clock.advance(timedelta(hours=4))    # 16:00 UTC = 00:00 China time: a new vendor day
    assert {r.outcome for r in _send(boxes, _msgs(1, rng))} == {Outcome.DELIVERED}


def test_rate_limit_is_business_code_10023(box, rng):
    boxes, _ = box
    boxes.xiaomi.limits.rate_per_second = 1
    receipts = _send(boxes, [*_msgs(1, rng), *_msgs(1, rng, badge=3)])
    assert sorted((r.outcome, r.reason) for r in receipts) == [(Outcome.DELIVERED, "0"),
                                                                (Outcome.RATE_LIMITED, "10023")]


def test_wrong_app_secret_is_auth_error_21301(box, rng):
    boxes, _ = box
    config = _config(boxes)
    config.app_secret = "not-the-secret"
    assert {(r.outcome, r.reason) for r in _send(boxes, _msgs(2, rng), config)} == {(Outcome.AUTH_ERROR, "21301")}


@pytest.mark.parametrize(("change", "code"), [
    ({"extra.channel_id": None}, 10016),
    ({"extra.channel_id": "promo"}, 10017),
    ({"restricted_package_name": "com.other.app"}, 22022),
    ({"time_to_live": str(15 * 86_400_000)}, 10017),
    ({"notify_type": "loud"}, 10017),
    ({"payload": "p" * 5000}, 10018),
    ({"registration_id": ",".join(["R" * 44] * 1001)}, 10017),
])
def test_sandbox_enforces_the_form_rules(box, rng, change, code):
    boxes, _ = box
    config = _config(boxes)
    path, headers, body = build_request(_msgs(1, rng), config.package_name)
    form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
    form.update(change)
    form = {k: v for k, v in form.items() if v is not None}

    async def go():
        async with httpx.AsyncClient(verify=tls_context(str(boxes.ca.ca_file))) as http:
            return await http.post(f"{config.base_url}{path}", content=urlencode(form),
                                   headers={**headers, "authorization": f"key={config.app_secret}"})
    response = run(go())
    assert (response.status_code, response.json()["code"]) == (200, code)
