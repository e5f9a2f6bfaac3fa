"""VENDORS.md §13 failure reports, each replayed through the outbox against the loopback sandboxes
(real TLS, real HTTP/2 or HTTP/1.1, real DuckDB). Test names start with the report's number; #18
(Web Push aes128gcm) lives in tests/push/test_webpush.py, where http_ece and the sandbox check bodies."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

import engine.push.sandbox as sandbox_pkg
from engine.clock import FixedClock
from engine.config import Settings
from engine.dispatch import Dispatcher, RetryPolicy
from engine.dispatch.outbox import claim_due, record_receipts
from engine.domain import Outcome, PushMessage
from engine.push.lean_apns import LeanApnsChannel
from engine.push.registry import CHANNELS, build_channels, channel_class
from engine.push.sandbox import Fault, start_sandboxes
from engine.push.sandbox.server import Request

T0 = datetime(2025, 3, 1, 12, tzinfo=UTC)
POLICY = RetryPolicy(max_attempts=5, base_seconds=1, cap_seconds=30, max_total_seconds=600)


class World:
    """A store with users, devices and sends, sandboxes and a dispatcher sharing one fixed clock."""

    def __init__(self, store, tmp_path, policy: RetryPolicy = POLICY) -> None:
        self.store, self.clock, self.rng = store, FixedClock(T0), random.Random(13)
        self.boxes = start_sandboxes(tmp_path / "sandbox", clock=self.clock)
        self.settings = Settings(vendors=self.boxes.vendor_settings())
        self.policy = policy
        self.n = 0

    def add(self, vendor: str, count: int = 1, *, data: dict | None = None, registered_at: datetime | None = None,
            token: str | None = None) -> list[tuple[str, str]]:
        """``count`` users, each with one device on ``vendor`` and one pending send; returns (send_id, token)."""
        rows = []
        for _ in range(count):
            self.n += 1
            tok = token or self.mint(vendor)
            rows.append((f"u{self.n}", f"d{self.n}", tok, str(uuid.UUID(int=self.rng.getrandbits(128), version=4))))
        f = pd.DataFrame(rows, columns=["u", "d", "tok", "sid"]).assign(
            vendor=vendor, data=json.dumps(data or {}), t0=T0, reg=registered_at or T0 - timedelta(days=30))
        con = self.store.con
        con.register("pw_new", f)
        con.execute("INSERT INTO users SELECT u, 'UK', 'Europe/London', 't', NULL, NULL FROM pw_new")
        con.execute("INSERT INTO consents SELECT u, 'push', 'marketing', true, t0, false FROM pw_new")
        con.execute("INSERT INTO devices (device_id, user_id, vendor, app_id, token, active, registered_at) "
                    "SELECT d, u, vendor, 'app', tok, true, reg FROM pw_new")
        con.execute(
            """INSERT INTO sends (send_id, decision_id, campaign_id, user_id, device_id, vendor, message_class,
                                  title, body, data, due_at, state, next_attempt_at, updated_at)
               SELECT sid, 'dec' || d, 'c', u, d, vendor, 'marketing', 'Hello', 'World', data, t0, 'pending', t0, t0
               FROM pw_new""")
        con.unregister("pw_new")
        return [(r[3], r[2]) for r in rows]

    def mint(self, vendor: str) -> str:
        """A fresh, valid token for ``vendor``'s sandbox (a subscription JSON for Web Push)."""
        if vendor == "webpush":
            return self.boxes.webpush.new_token(self.rng)
        return getattr(sandbox_pkg, f"new_{vendor}_token")(self.rng)  # type: ignore[no-any-return]

    def count_push_requests(self, vendor: str) -> list[int]:
        """Wrap ``vendor``'s server so that push requests (not token grants) are counted; returns the counter."""
        server, handler, seen = self.boxes.server(vendor), self.boxes.vendor(vendor), [0]
        inner = server.handler

        def counting(request: Request):
            if handler._target(request) == "send":
                seen[0] += 1
            return inner(request)

        server.handler = counting
        return seen

    async def _drain(self, batch_size: int, max_ticks: int, lean_apns: bool) -> Dispatcher:
        channels = build_channels(self.settings, self.clock)
        if lean_apns:
            await channels["apns"].aclose()
            channels["apns"] = LeanApnsChannel(self.settings.vendors.apns, self.clock)
        try:
            dispatcher = Dispatcher(self.store, channels, self.clock, self.policy, batch_size)
            for _ in range(max_ticks):
                report = await dispatcher.tick()
                if report.claimed == 0:
                    nxt = dispatcher.next_due()
                    if nxt is None:
                        break
                    self.clock.advance(max(nxt - self.clock.now(), timedelta(0)) + timedelta(milliseconds=1))
            return dispatcher
        finally:
            for ch in channels.values():
                await ch.aclose()

    def drain(self, batch_size: int = 500, max_ticks: int = 200, *, lean_apns: bool = False) -> Dispatcher:
        return asyncio.run(self._drain(batch_size, max_ticks, lean_apns))

    def states(self) -> dict[str, tuple]:
        rows = self.store.execute("SELECT send_id, state, attempts, last_error FROM sends").fetchall()
        return {r[0]: r[1:] for r in rows}

    def accepted_ids(self, vendor: str) -> Counter:
        if vendor == "apns":
            return Counter(a.message_id for a in self.boxes.accepted("apns"))
        return Counter(a.payload["data"]["send_id"] for a in self.boxes.accepted("fcm"))


@pytest.fixture
def world(store, tmp_path):
    w = World(store, tmp_path)
    yield w
    w.boxes.close()


def test_5_invalid_tokens_are_reported_and_never_sent_to_again(world):
    """gorush #109: 410 Unregistered (with timestamp) and FCM 404 UNREGISTERED deactivate the device."""
    (a_sid, a_tok), = world.add("apns")
    (f_sid, f_tok), = world.add("fcm")
    world.boxes.unregister("apns", a_tok, T0 - timedelta(days=1))
    world.boxes.unregister("fcm", f_tok, T0 - timedelta(days=1))
    world.drain()
    assert world.states()[a_sid][0] == "invalid_token" and world.states()[f_sid][0] == "invalid_token"
    assert world.store.execute("SELECT count(*) FROM devices WHERE active").fetchone() == (0,)
    world.store.execute("UPDATE sends SET state = 'pending', next_attempt_at = ? ", [T0])  # a later campaign
    requests = world.boxes.stats()["apns"]["requests"]
    world.drain()
    assert world.boxes.stats()["apns"]["requests"] == requests        # nothing sent to a dead token
    assert set(s for s, *_ in world.states().values()) == {"cancelled"}


@pytest.mark.slow
def test_8_13_every_recipient_of_a_large_campaign_gets_exactly_one_result(world):
    """gorush #808 / PyFCM #66 #142: 1,200 APNs + 1,250 FCM recipients → 2,450 results, one each."""
    sends = world.add("apns", 1200) + world.add("fcm", 1250)
    dead = {tok for _, tok in sends[::97]}
    for tok in dead:
        world.boxes.unregister("apns" if len(tok) == 64 else "fcm", tok, T0 - timedelta(days=1))
    world.drain(batch_size=1000)
    states = world.states()
    assert len(states) == 2450
    want = {sid: ("invalid_token" if tok in dead else "delivered") for sid, tok in sends}
    assert {sid: s[0] for sid, s in states.items()} == want
    assert world.store.scalar("SELECT count(*) FROM send_attempts") == 2450
    assert sum(world.accepted_ids("apns").values()) + sum(world.accepted_ids("fcm").values()) == 2450 - len(dead)


def test_9_a_zero_badge_reaches_apns(world):
    """gorush #147: badge 0 clears the badge and must not be dropped."""
    world.add("apns", data={"badge": 0})
    world.drain()
    payload = world.boxes.accepted("apns")[0].payload
    assert payload["aps"]["badge"] == 0 and "badge" not in {k for k in payload if k != "aps"}


def test_12_an_aged_access_token_is_refreshed_once_and_the_send_retried_once(world):
    """PyFCM #334: the cached OAuth token ages out; one refresh, one retry, delivered."""
    world.boxes.fcm.access_token_ttl = 2
    world.add("fcm")
    world.drain()
    world.clock.advance(timedelta(seconds=5))      # the sandbox now says ACCESS_TOKEN_EXPIRED
    (sid, _), = world.add("fcm")
    dispatcher_clock_before = world.clock.now()
    world.drain()
    stats = world.boxes.stats()["fcm"]
    assert world.states()[sid][:2] == ("delivered", 1)
    assert stats.get("rejected:ACCESS_TOKEN_EXPIRED", 0) <= 1 and stats["token_grants"] == 2
    assert world.clock.now() == dispatcher_clock_before   # no backoff was needed


def test_14_retry_after_as_http_date_then_always_1_ends_in_retries_exhausted(world):
    """PyFCM source: Retry-After parsed in both forms, attempts and total delay capped, terminal state."""
    (sid, _), = world.add("fcm")
    world.boxes.inject("fcm", Fault.error(503, "UNAVAILABLE", retry_after=T0 + timedelta(seconds=40)))
    world.boxes.inject("fcm", Fault.error(503, "UNAVAILABLE", retry_after=1, count=100))
    world.drain()
    state, attempts, last_error = world.states()[sid]
    assert (state, attempts) == ("failed", POLICY.max_attempts)
    assert last_error.startswith("retries exhausted: transient")
    first, second = world.store.execute(
        "SELECT attempted_at FROM send_attempts WHERE send_id = ? ORDER BY attempt LIMIT 2", [sid]).fetchall()
    assert second[0] - first[0] >= timedelta(seconds=40)       # the HTTP-date was honoured
    assert world.boxes.stats()["fcm"]["requests"] == POLICY.max_attempts + 1   # + the OAuth grant


def test_15_goaway_shutdown_mid_batch_resends_only_unprocessed_streams(world):
    """aioapns #63: GOAWAY(NO_ERROR, Shutdown, last_stream_id=k); new connection, no duplicate for ≤ k.

    Through the lean h2 channel: httpx/httpcore 1.0.9 sometimes drops answers read together with the
    GOAWAY and resends delivered messages (docs/decisions/005-apns-transport.md).
    """
    sends = world.add("apns", 40)
    world.boxes.inject("apns", Fault.goaway(after=10))
    world.drain(lean_apns=True)
    assert {s[0] for s in world.states().values()} == {"delivered"}
    accepted = world.accepted_ids("apns")
    assert set(accepted) == {sid for sid, _ in sends}
    assert max(accepted.values()) == 1                      # nothing accepted twice
    assert world.boxes.stats()["apns"]["goaways"] == 1 and world.boxes.stats()["apns"]["connections"] >= 2


def test_17_a_410_older_than_the_registration_keeps_the_device_and_errors_need_no_apns_id(world):
    """aioapns #46 / #19: the 410 timestamp is honoured; an error without apns-id is matched by stream."""
    (old_sid, old_tok), = world.add("apns", registered_at=T0 - timedelta(hours=1))
    world.boxes.unregister("apns", old_tok, T0 - timedelta(days=2))    # invalid before it re-registered
    (new_sid, new_tok), = world.add("apns", registered_at=T0 - timedelta(days=30))
    world.boxes.unregister("apns", new_tok, T0 - timedelta(days=2))    # invalid after it registered
    world.drain()
    states = world.states()
    assert states[old_sid][0] == states[new_sid][0] == "invalid_token"
    active = dict(world.store.execute("SELECT s.send_id, d.active FROM sends s JOIN devices d USING (device_id) "
                                      "WHERE s.send_id IN (?, ?)", [old_sid, new_sid]).fetchall())
    assert active == {old_sid: True, new_sid: False}

    live = world.add("apns", 4)
    world.boxes.inject("apns", Fault.error(500, "InternalServerError"))   # injected errors carry no apns-id
    world.drain()
    # exactly one stream got the 500 (whichever it was): that send alone was tried twice, and every
    # live send was accepted once, so the id-less answer was matched to its own stream
    errored = world.store.execute("SELECT send_id FROM send_attempts WHERE reason = 'InternalServerError'").fetchall()
    assert len(errored) == 1
    states = world.states()
    assert {sid: states[sid][:2] for sid, _ in live} == {
        sid: ("delivered", 2 if sid == errored[0][0] else 1) for sid, _ in live}
    assert max(world.accepted_ids("apns").values()) == 1
    assert set(world.accepted_ids("apns")) == {sid for sid, _ in live}


def test_7_19_a_huawei_partial_success_deactivates_exactly_the_listed_device(world):
    """gorush #663 / #615 / #698 and a production server's source (#19): a request to three tokens is
    answered 80100000 with one illegal token (v1 ``illegal_tokens`` and v3 ``illegalTokens`` shapes);
    exactly that device is deactivated, the other two are delivered, and the notification the
    sandbox kept carries ``android.notification.click_action``.

    The dispatcher puts each send's id in its data, so it never shares a Huawei request between
    sends (decision 011); a campaign whose sends share their content is what gets here, so the
    messages are built from the claimed rows without it and the receipts go through the outbox.
    """
    for shape in ("v1", "v3"):
        world.boxes.huawei.partial_shape = shape
        sends = world.add("huawei", 3)
        world.boxes.unregister("huawei", sends[1][1], T0 - timedelta(days=1))
        requests = world.count_push_requests("huawei")
        claimed = claim_due(world.store, world.clock.now(), 10, vendors=["huawei"])
        messages = [PushMessage(send_id=r.send_id, vendor="huawei", token=r.token, title=r.title, body=r.body,
                                app_id=r.app_id, message_class=r.message_class) for r in claimed.itertuples()]
        channels = build_channels(world.settings, world.clock)

        async def go(msgs=messages, chans=channels):
            try:
                return await chans["huawei"].send(msgs)
            finally:
                for ch in chans.values():
                    await ch.aclose()

        receipts = asyncio.run(go())
        record_receipts(world.store, claimed, receipts, world.clock.now(), POLICY, np.random.default_rng(1))
        assert requests == [1], shape                                     # one request for the three
        states = world.states()
        assert [states[sid][0] for sid, _ in sends] == ["delivered", "invalid_token", "delivered"], shape
        dead = world.store.execute("SELECT s.send_id FROM sends s JOIN devices d USING (device_id) "
                                   "WHERE NOT d.active AND s.send_id IN (SELECT unnest(?))",
                                   [[sid for sid, _ in sends]]).fetchall()
        assert dead == [(sends[1][0],)], shape
        kept = [a for a in world.boxes.accepted("huawei") if a.token in {sends[0][1], sends[2][1]}]
        assert len(kept) == 2 and all(a.payload["android"]["notification"]["click_action"] == {"type": 3}
                                      for a in kept)
    assert world.boxes.stats()["huawei"]["partial"] == 2


def _cap(vendor: str) -> int:
    """Tokens one push request carries for ``vendor`` (1 for the one-message-per-request vendors)."""
    return int(getattr(channel_class(vendor), "cap", 1))


@pytest.mark.slow
@pytest.mark.parametrize("vendor", sorted(CHANNELS))
def test_8_13_a_1200_token_campaign_is_chunked_to_the_cap_with_one_result_per_token(world, vendor):
    """gorush #808 / PyFCM #66 #142: one content to 1,200 tokens of each vendor, every 97th token dead;
    requests are chunked to the vendor's cap (FCM, APNs, Web Push one per request; Huawei, Honor,
    Xiaomi, OPPO, Meizu 1000; vivo 1000 per ``pushToList``, each after a ``saveListPayload``) and
    the answer has exactly one result per token, the dead ones invalid."""
    tokens = [world.mint(vendor) for _ in range(1200)]
    dead = set(tokens[::97])
    for tok in dead:
        world.boxes.unregister(vendor, tok, T0 - timedelta(days=1))
    messages = [PushMessage(send_id=str(uuid.UUID(int=world.rng.getrandbits(128), version=4)), vendor=vendor,
                            token=tok, title="Hello", body="World", message_class="transactional")
                for tok in tokens]
    requests = world.count_push_requests(vendor)
    channels = build_channels(world.settings, world.clock)

    async def go():
        try:
            return await channels[vendor].send(messages)
        finally:
            for ch in channels.values():
                await ch.aclose()

    receipts = asyncio.run(go())
    chunks = -(-1200 // _cap(vendor))
    assert requests == [2 * chunks if vendor == "vivo" else chunks]
    assert [r.send_id for r in receipts] == [m.send_id for m in messages]
    assert [r.outcome for r in receipts] == [Outcome.INVALID_TOKEN if t in dead else Outcome.DELIVERED
                                             for t in tokens]
    assert sorted(a.token for a in world.boxes.accepted(vendor)) == sorted(set(tokens) - dead)


def test_8_19_oppo_batches_sends_of_different_content_and_one_dead_token_costs_one_device(world):
    """OPPO's ``unicast_batch`` carries a notification per token, so the dispatcher's sends, each
    with its own id in its data, still go 1,000 to a request; one dead token among them deactivates
    exactly its device (the others are delivered with their own ``app_message_id``)."""
    sends = world.add("oppo", 1200)
    dead_sid, dead_tok = sends[500]
    world.boxes.unregister("oppo", dead_tok, T0 - timedelta(days=1))
    requests = world.count_push_requests("oppo")
    world.drain(batch_size=1500)
    assert requests == [2]
    states = world.states()
    assert {sid: s[0] for sid, s in states.items()} == {
        sid: ("invalid_token" if sid == dead_sid else "delivered") for sid, _ in sends}
    assert world.store.execute("SELECT s.send_id FROM sends s JOIN devices d USING (device_id) "
                               "WHERE NOT d.active").fetchall() == [(dead_sid,)]
    accepted = world.boxes.accepted("oppo")
    assert sorted(a.payload["notification"]["app_message_id"] for a in accepted) == sorted(
        sid for sid, _ in sends if sid != dead_sid)
