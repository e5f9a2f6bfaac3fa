"""Our channels against the loopback sandboxes over real TLS (verified) and HTTP/2: VENDORS.md §13 scenarios."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import httpx
import pytest
import trustme

from engine.clock import FixedClock, SystemClock
from engine.domain import Outcome
from engine.push import ApnsChannel, FcmChannel, build_channels
from engine.push.sandbox import Fault
from engine.push.sandbox.ca import client_context
from tests.push.conftest import T0, make_message, run, settings_for

pytestmark = pytest.mark.network


async def _send(settings, clock, vendor, messages):
    channels = build_channels(settings, clock)
    try:
        return await channels[vendor].send(messages)
    finally:
        for channel in channels.values():
            await channel.aclose()


def test_both_vendors_deliver_over_verified_tls_and_http2(sandboxes, rng):
    settings = settings_for(sandboxes)
    apns_msgs = [make_message("apns", rng, badge=0) for _ in range(10)]
    fcm_msgs = [make_message("fcm", rng, data={"item": "7"}) for _ in range(10)]
    assert {r.outcome for r in run(_send(settings, SystemClock(), "apns", apns_msgs))} == {Outcome.DELIVERED}
    assert {r.outcome for r in run(_send(settings, SystemClock(), "fcm", fcm_msgs))} == {Outcome.DELIVERED}
    accepted = sandboxes.accepted("apns")
    assert sorted(a.message_id for a in accepted) == sorted(m.send_id for m in apns_msgs)   # apns-id = send_id
    assert all(a.payload["aps"]["badge"] == 0 for a in accepted)        # gorush #147
    assert {a.payload["data"]["item"] for a in sandboxes.accepted("fcm")} == {"7"}
    stats = sandboxes.stats()
    assert stats["apns"]["h2_connections"] >= 1 and stats["apns"]["http1_connections"] == 0
    assert stats["fcm"]["h2_connections"] >= 1 and stats["fcm"]["token_grants"] == 1


def test_invalid_tokens_are_reported_with_the_410_timestamp(skewed, rng):
    boxes, _ = skewed
    clock = FixedClock(T0)
    apns_dead, fcm_dead = make_message("apns", rng), make_message("fcm", rng)
    gone = T0 - timedelta(days=3)
    boxes.unregister("apns", apns_dead.token, gone)
    boxes.unregister("fcm", fcm_dead.token, gone)
    settings = settings_for(boxes)
    apns = run(_send(settings, clock, "apns", [make_message("apns", rng), apns_dead]))
    fcm = run(_send(settings, clock, "fcm", [fcm_dead, make_message("fcm", rng)]))
    assert [r.outcome for r in apns] == [Outcome.DELIVERED, Outcome.INVALID_TOKEN]
    assert (apns[1].status_code, apns[1].reason, apns[1].token_invalid_since) == (410, "Unregistered", gone)
    assert [r.outcome for r in fcm] == [Outcome.INVALID_TOKEN, Outcome.DELIVERED]
    assert (fcm[0].status_code, fcm[0].reason) == (404, "UNREGISTERED")


@pytest.mark.parametrize("vendor", ["apns", "fcm"])
def test_retry_after_as_seconds_and_http_date(skewed, rng, vendor):
    boxes, _ = skewed
    unavailable = "ServiceUnavailable" if vendor == "apns" else "UNAVAILABLE"
    busy = "TooManyRequests" if vendor == "apns" else "QUOTA_EXCEEDED"
    boxes.inject(vendor, Fault.error(503, unavailable, retry_after=30))
    boxes.inject(vendor, Fault.error(503, unavailable, retry_after=T0 + timedelta(seconds=90)))
    boxes.inject(vendor, Fault.error(429, busy, retry_after=T0 + timedelta(minutes=2)))
    settings = settings_for(boxes)
    settings.vendors.apns.concurrency = settings.vendors.fcm.concurrency = 1   # faults play in send order
    receipts = run(_send(settings, FixedClock(T0), vendor, [make_message(vendor, rng) for _ in range(4)]))
    assert [(r.outcome, r.retry_after) for r in receipts] == [
        (Outcome.TRANSIENT, 30.0), (Outcome.TRANSIENT, 90.0), (Outcome.RATE_LIMITED, 120.0),
        (Outcome.DELIVERED, None)]


def test_fcm_access_token_expired_refreshes_once_and_retries_once(skewed, rng):
    boxes, server_clock = skewed
    boxes.fcm.access_token_ttl = 2
    clock = FixedClock(T0)

    async def go():
        async with FcmChannel(settings_for(boxes).vendors.fcm, clock) as channel:
            first = await channel.send([make_message("fcm", rng)])
            server_clock.advance(timedelta(seconds=10))      # the vendor's clock: the token is now stale there
            second = await channel.send([make_message("fcm", rng)])
            return first + second, channel.tokens.fetches

    receipts, fetches = run(go())
    assert [r.outcome for r in receipts] == [Outcome.DELIVERED, Outcome.DELIVERED]
    stats = boxes.stats()["fcm"]
    assert fetches == 2 and stats["token_grants"] == 2
    assert stats["rejected:ACCESS_TOKEN_EXPIRED"] == 1 and stats["accepted"] == 2


def test_fcm_refresh_is_bounded_when_the_vendor_keeps_refusing(skewed, rng):
    boxes, _ = skewed
    boxes.inject("fcm", Fault.error(401, "ACCESS_TOKEN_EXPIRED", count=2))
    (receipt,) = run(_send(settings_for(boxes), FixedClock(T0), "fcm", [make_message("fcm", rng)]))
    assert (receipt.outcome, receipt.reason) == (Outcome.AUTH_ERROR, "ACCESS_TOKEN_EXPIRED")
    assert boxes.stats()["fcm"]["token_grants"] == 2 and boxes.stats()["fcm"]["requests"] == 4


def test_apns_expired_provider_token_is_reminted_once(skewed, rng):
    boxes, server_clock = skewed          # APNs' clock runs 20 minutes ahead of ours
    clock = FixedClock(T0)

    async def go():
        async with ApnsChannel(settings_for(boxes).vendors.apns, clock) as channel:
            first = await channel.send([make_message("apns", rng)])
            clock.advance(timedelta(minutes=45))          # our token is 45 min old: still ours to use...
            server_clock.advance(timedelta(minutes=45))   # ...but 65 min old for APNs
            second = await channel.send([make_message("apns", rng)])
            return first + second, channel.tokens.mints

    receipts, mints = run(go())
    assert [r.outcome for r in receipts] == [Outcome.DELIVERED, Outcome.DELIVERED]
    assert mints == 2
    stats = boxes.stats()["apns"]
    assert stats["rejected:ExpiredProviderToken"] == 1 and stats["provider_token_changes"] == 1
    assert "rejected:TooManyProviderTokenUpdates" not in stats


def test_goaway_mid_batch_loses_nothing(sandboxes, rng):
    """aioapns #63 / VENDORS.md §13.15: GOAWAY(Shutdown) after 5 streams in a batch of 40.

    The sandbox processes exactly the streams up to ``last_stream_id``. httpcore resends some of
    the later ones on a new connection by itself; every other message comes back TRANSIENT, so
    nothing is lost. A resend can duplicate a message only if its receipt was TRANSIENT although
    the vendor had processed it: httpcore (1.0.9) raises for a stream waiting on its read lock when
    the GOAWAY arrives even if that stream's answer came in the same read.
    """
    settings = settings_for(sandboxes)
    messages = [make_message("apns", rng) for _ in range(40)]
    sandboxes.inject("apns", Fault.goaway(after=5))
    first = run(_send(settings, SystemClock(), "apns", messages))
    assert [r.send_id for r in first] == [m.send_id for m in messages]
    assert {r.outcome for r in first} <= {Outcome.DELIVERED, Outcome.TRANSIENT}
    assert all(r.reason.startswith("transport: ") for r in first if r.outcome is Outcome.TRANSIENT)
    accepted = sandboxes.accepted("apns")
    assert sandboxes.stats()["apns"]["goaways"] == 1
    assert sum(a.connection == accepted[0].connection for a in accepted) == 5   # nothing after last_stream_id

    transient = {m.send_id for m, r in zip(messages, first, strict=True) if r.outcome is Outcome.TRANSIENT}
    again = [m for m in messages if m.send_id in transient]
    assert {r.outcome for r in run(_send(settings, SystemClock(), "apns", again))} <= {Outcome.DELIVERED}
    counts = Counter(a.message_id for a in sandboxes.accepted("apns"))
    assert set(counts) == {m.send_id for m in messages}                      # nothing lost
    assert {i for i, n in counts.items() if n > 1} <= transient               # a DELIVERED one is never resent


def test_connection_reset_and_timeout_are_transient(sandboxes, rng):
    config = settings_for(sandboxes).vendors.apns

    async def go():
        async with ApnsChannel(config, SystemClock(), timeout=0.3) as channel:
            sandboxes.inject("apns", Fault.reset())
            reset = await channel.send([make_message("apns", rng)])
            sandboxes.inject("apns", Fault.slow(1.0))
            slow = await channel.send([make_message("apns", rng)])
            after = await channel.send([make_message("apns", rng)])
            return reset + slow + after

    reset, slow, after = run(go())
    assert reset.outcome is Outcome.TRANSIENT and reset.reason.startswith("transport: ")
    assert (slow.outcome, slow.reason) == (Outcome.TRANSIENT, "transport: ReadTimeout")
    assert after.outcome is Outcome.DELIVERED


def test_error_without_apns_id_and_payload_too_large(sandboxes, rng):
    sandboxes.inject("apns", Fault.error(500, "InternalServerError"))
    settings = settings_for(sandboxes)
    settings.vendors.apns.concurrency = 1
    messages = [make_message("apns", rng), make_message("apns", rng, body="x" * 5000)]
    failed, too_big = run(_send(settings, SystemClock(), "apns", messages))
    assert (failed.outcome, failed.reason, failed.vendor_message_id) == (Outcome.TRANSIENT, "InternalServerError", None)
    assert (too_big.outcome, too_big.status_code, too_big.reason) == (Outcome.REJECTED_PAYLOAD, 413, "PayloadTooLarge")
    fcm = run(_send(settings, SystemClock(), "fcm", [make_message("fcm", rng, body="x" * 5000)]))
    assert (fcm[0].outcome, fcm[0].status_code) == (Outcome.REJECTED_PAYLOAD, 400)


@pytest.mark.parametrize("trust", ["system store only", "another CA"])
def test_tls_is_verified(sandboxes, rng, tmp_path, trust):
    settings = settings_for(sandboxes)
    ca_file = ""
    if trust == "another CA":
        ca_file = str(tmp_path / "other-ca.pem")
        trustme.CA().cert_pem.write_to_path(ca_file)
    settings.vendors.apns.ca_file = settings.vendors.fcm.ca_file = ca_file
    for vendor in ("apns", "fcm"):
        (receipt,) = run(_send(settings, SystemClock(), vendor, [make_message(vendor, rng)]))
        assert receipt.outcome is Outcome.AUTH_ERROR
        assert receipt.reason.endswith("tls: server certificate not trusted")
    assert sandboxes.accepted("apns") == [] and sandboxes.accepted("fcm") == []


def test_apns_sandbox_refuses_http1(sandboxes):
    async def go():
        ctx = client_context(sandboxes.ca, alpn=("http/1.1",))
        async with httpx.AsyncClient(verify=ctx, http2=False) as client:
            return await client.post(f"{sandboxes.apns_url}/3/device/{'a' * 64}", content=b'{"aps":{}}')

    response = run(go())
    assert (response.http_version, response.status_code) == ("HTTP/1.1", 505)


def test_many_concurrent_sends_share_the_pooled_http2_connections(sandboxes, rng):
    # the registry's APNs channel is the lean h2 transport: two long-lived connections, round robin
    messages = [make_message("apns", rng) for _ in range(300)]
    receipts = run(_send(settings_for(sandboxes), SystemClock(), "apns", messages))
    assert {r.outcome for r in receipts} == {Outcome.DELIVERED}
    assert sandboxes.stats()["apns"]["connections"] == 2


def test_gather_keeps_other_vendors_independent(sandboxes, rng):
    async def go():
        channels = build_channels(settings_for(sandboxes), SystemClock())
        try:
            return await asyncio.gather(channels["apns"].send([make_message("apns", rng)]),
                                        channels["fcm"].send([make_message("fcm", rng)]))
        finally:
            for channel in channels.values():
                await channel.aclose()

    (apns,), (fcm,) = run(go())
    assert apns.outcome is fcm.outcome is Outcome.DELIVERED
