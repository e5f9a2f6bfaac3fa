"""The channel contract, run over every vendor in the registry against the started sandboxes.

A vendor added to ``engine.push.registry.CHANNELS`` shows up here automatically; it passes when its
sandbox is started by ``start_sandboxes`` (so ``vendor_settings()`` enables it) and a seeded token
helper exists (``engine.push.sandbox.new_<vendor>_token``, or the sandbox handler's ``new_token`` or
``new_subscription``).
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import engine.push.sandbox as sandbox_pkg
from engine.clock import SystemClock
from engine.config import Settings
from engine.domain import Outcome, PushMessage, Receipt
from engine.push.registry import CHANNELS, channel_class
from engine.push.sandbox import Fault, Sandboxes, start_sandboxes
from tests.push.conftest import run

VENDORS = sorted(CHANNELS)


@pytest.fixture(scope="module")
def boxes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandboxes]:
    with start_sandboxes(Path(tmp_path_factory.mktemp("contract"))) as started:
        yield started


def _token_maker(boxes: Sandboxes, vendor: str) -> Callable[[random.Random], str]:
    handler = boxes.vendor(vendor)   # Web Push: a subscription the push service knows, on its own URL
    maker = (getattr(sandbox_pkg, f"new_{vendor}_token", None) or getattr(handler, "new_token", None)
             or getattr(handler, "new_subscription", None))
    assert maker is not None, f"no seeded token helper for {vendor}: add engine.push.sandbox.new_{vendor}_token"
    return maker  # type: ignore[no-any-return]


def _message(vendor: str, token: str, rng: random.Random) -> PushMessage:
    return PushMessage(send_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)), vendor=vendor, token=token,
                       title="Back in stock", body="The teapot you viewed is back", message_class="transactional")


def _send(boxes: Sandboxes, vendor: str, messages: list[PushMessage], **options: float) -> list[Receipt]:
    settings = Settings()
    settings.vendors = boxes.vendor_settings()

    async def go() -> list[Receipt]:
        async with channel_class(vendor)(getattr(settings.vendors, vendor), SystemClock(), **options) as channel:
            return await channel.send(messages)
    return run(go())


#: The reason each vendor gives its 429 (the others' sandboxes answer a bare 429 in their own shape).
THROTTLE_REASON = {"apns": "TooManyRequests", "fcm": "QUOTA_EXCEEDED"}


@pytest.mark.parametrize("vendor", VENDORS)
def test_channel_contract(vendor: str, boxes: Sandboxes, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    rng = random.Random(f"contract-{vendor}")
    new_token = _token_maker(boxes, vendor)
    assert getattr(boxes.vendor_settings(), vendor).enabled, f"start_sandboxes does not enable {vendor}"
    used: list[str] = []

    def message() -> PushMessage:
        used.append(new_token(rng))
        return _message(vendor, used[-1], rng)

    # 1. a message to a live token is delivered and the sandbox kept it
    live = message()
    (receipt,) = _send(boxes, vendor, [live])
    assert receipt.send_id == live.send_id and receipt.outcome is Outcome.DELIVERED, receipt
    assert live.token in {a.token for a in boxes.accepted(vendor)}

    # 2. an unregistered token is INVALID_TOKEN
    dead = message()
    boxes.unregister(vendor, dead.token, datetime.now(UTC) - timedelta(days=1))
    (receipt,) = _send(boxes, vendor, [dead])
    assert receipt.outcome is Outcome.INVALID_TOKEN, receipt

    # 3. an injected 5xx is retryable and carries the vendor's Retry-After
    boxes.inject(vendor, Fault.error(503, "", retry_after=7))
    (receipt,) = _send(boxes, vendor, [message()])
    assert receipt.outcome in (Outcome.TRANSIENT, Outcome.RATE_LIMITED), receipt
    assert receipt.retry_after == 7.0

    # 3b. a dropped connection is transient too
    boxes.inject(vendor, Fault.reset())
    (receipt,) = _send(boxes, vendor, [message()])
    assert receipt.outcome is Outcome.TRANSIENT, receipt

    # 3c. a 429 whose Retry-After is an HTTP-date is rate limited, and the date becomes seconds
    boxes.inject(vendor, Fault.error(429, THROTTLE_REASON.get(vendor, ""),
                                     retry_after=datetime.now(UTC) + timedelta(seconds=120)))
    (receipt,) = _send(boxes, vendor, [message()])
    assert receipt.outcome in (Outcome.RATE_LIMITED, Outcome.TRANSIENT), receipt   # Xiaomi: 10001 system error
    assert receipt.retry_after is not None and 110 <= receipt.retry_after <= 121, receipt

    # 3d. an answer slower than the channel's timeout is transient (the send is tried again later)
    boxes.inject(vendor, Fault.slow(1.5))
    (receipt,) = _send(boxes, vendor, [message()], timeout=0.3)
    assert receipt.outcome is Outcome.TRANSIENT and (receipt.reason or "").startswith("transport:"), receipt

    # 4. a mixed batch: exactly one receipt per message, in order; only the dead token is invalid
    batch = [message() for _ in range(5)]
    boxes.unregister(vendor, batch[2].token, datetime.now(UTC) - timedelta(days=1))
    receipts = _send(boxes, vendor, batch)
    assert [r.send_id for r in receipts] == [m.send_id for m in batch]
    assert [r.outcome is Outcome.INVALID_TOKEN for r in receipts] == [False, False, True, False, False]
    assert {r.outcome for i, r in enumerate(receipts) if i != 2} == {Outcome.DELIVERED}

    # 5. no raw token in any receipt reason or log record
    reasons = [r.reason or "" for r in receipts]
    logged = [record.getMessage() for record in caplog.records]   # every logger, every level
    for token in used:
        assert not any(token in text for text in (*reasons, *logged)), f"{vendor} leaked a device token"


def _expected_key(vendor: str, send_id: str) -> str:
    """The idempotency/collapse fields each vendor's sandbox must record for a send without collapse id
    (docs/decisions/011-repeats-and-idempotency.md), computed here independently of the adapters."""
    import hashlib

    apns_id = str(uuid.UUID(send_id))
    vivo_notify = int(hashlib.sha256(send_id.encode()).hexdigest(), 16) % (2**31 - 1) + 1
    xiaomi_notify = int.from_bytes(hashlib.sha256(send_id.encode()).digest()[:4], "big") % 2**31
    return {
        "apns": f"apns-id={apns_id};apns-collapse-id={apns_id}",
        "fcm": f"tag={send_id};apns-collapse-id={apns_id}",
        "huawei": f"tag={send_id};bi-tag={send_id}",
        "honor": f"tag={send_id};biTag={send_id}",
        "xiaomi": f"notify-id={xiaomi_notify};jobkey={send_id.replace('-', '')[:20]}",
        "oppo": f"app-message-id={send_id}",
        "vivo": f"requestId={send_id};notifyId={vivo_notify}",
        "meizu": f"notifyKey={hashlib.sha256(send_id.encode()).hexdigest()[:8]}",
        "webpush": f"topic={uuid.UUID(send_id).hex}",
    }[vendor]


#: Vendors that drop a repeat of the same key themselves (the sandbox answers it without a second copy).
DEDUPLICATING = {"oppo", "vivo"}


@pytest.mark.parametrize("vendor", VENDORS)
def test_repeat_after_a_lost_answer_carries_the_same_key(vendor: str, boxes: Sandboxes) -> None:
    """The vendor accepts a send, the connection dies before the answer: the resend carries the same
    vendor key (derived from the send id), and the sandbox knows the first copy went out on a reset connection."""
    rng = random.Random(f"repeat-{vendor}")
    token = _token_maker(boxes, vendor)(rng)
    msg = _message(vendor, token, rng)
    boxes.inject(vendor, Fault.reset(after_accept=True))
    (first,) = _send(boxes, vendor, [msg])
    assert first.outcome is Outcome.TRANSIENT and (first.reason or "").startswith("transport:"), first
    copies = [a for a in boxes.accepted(vendor) if a.token == token]
    assert len(copies) == 1 and copies[0].connection in boxes.server(vendor).reset_connections

    (again,) = _send(boxes, vendor, [msg])
    assert again.outcome is Outcome.DELIVERED, again
    copies = [a for a in boxes.accepted(vendor) if a.token == token]
    assert len(copies) == (1 if vendor in DEDUPLICATING else 2)
    assert {a.key for a in copies} == {_expected_key(vendor, msg.send_id)}

    other = _message(vendor, token, rng)   # another send to the same device: another key
    (receipt,) = _send(boxes, vendor, [other])
    assert receipt.outcome is Outcome.DELIVERED, receipt
    assert [a.key for a in boxes.accepted(vendor) if a.token == token][-1] == _expected_key(vendor, other.send_id)


@pytest.mark.parametrize("vendor", VENDORS)
def test_every_channel_masks_the_wire_loggers_by_itself(vendor: str, boxes: Sandboxes) -> None:
    """h2/hpack/httpx DEBUG records hold the APNs :path (a device token) and bearer tokens: whichever
    channel is built first (APNs alone, say) must install the mask, not rely on another channel."""
    from engine.push.base import _MASK, _WIRE_LOGGERS

    for name in _WIRE_LOGGERS:
        logging.getLogger(name).removeFilter(_MASK)
    settings = Settings()
    settings.vendors = boxes.vendor_settings()

    async def build() -> None:
        async with channel_class(vendor)(getattr(settings.vendors, vendor), SystemClock()):
            pass

    run(build())
    assert [name for name in _WIRE_LOGGERS if _MASK not in logging.getLogger(name).filters] == []
