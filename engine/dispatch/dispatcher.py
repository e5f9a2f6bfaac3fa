"""The dispatcher: claims due sends, sends them per vendor concurrently, records the receipts.

`Dispatcher.tick` does one batch start to finish. `Dispatcher.run` pipelines batches: while batch N
is on the wire, batch N+1 is claimed and batch N-1's receipts are recorded, all DuckDB work on one
thread (the store's one connection is never used from two threads at once, decision 001) while
the event loop keeps sending. The outbox guarantees do not depend on the mode: every claim and
every record is one transaction, and a batch is ``in_flight`` in DuckDB for as long as it is on
the wire, so a kill -9 at any moment leaves at most the batches in flight to be resent.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from engine.clock import Clock
from engine.dispatch.backoff import RetryPolicy
from engine.dispatch.outbox import claim_due, record_receipts, recover_in_flight
from engine.dispatch.ratelimit import VendorLimits
from engine.dispatch.routing import reroute
from engine.domain import Outcome, PushMessage, Receipt
from engine.push.base import PushChannel
from engine.store import Store

__all__ = ["Dispatcher", "RunReport", "TickReport"]

log = logging.getLogger(__name__)


@dataclass
class TickReport:
    claimed: int = 0
    states: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)


@dataclass
class RunReport:
    """What `Dispatcher.run` did: batches, sends claimed, new states and outcomes, wall seconds."""

    batches: int = 0
    claimed: int = 0
    states: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, tick: TickReport) -> None:
        self.batches += 1
        self.claimed += tick.claimed
        for total, part in ((self.states, tick.states), (self.outcomes, tick.outcomes)):
            for k, v in part.items():
                total[k] = total.get(k, 0) + v


@functools.lru_cache(maxsize=1024)
def _data(raw: str | None) -> tuple[int | None, tuple[tuple[str, str], ...]]:
    """(badge, data items) of a send's ``data`` JSON; campaigns repeat the same few, hence the cache."""
    parsed = json.loads(raw or "{}")
    badge = parsed.pop("badge", None)   # an int for the vendor, not a data string; 0 is meaningful
    items = tuple((k, str(v)) for k, v in parsed.items() if v is not None)
    return None if badge is None else int(badge), items


def _messages(claimed: pd.DataFrame) -> list[PushMessage]:
    cols = ("send_id", "vendor", "token", "title", "body", "app_id", "message_class", "data")
    out = []
    for send_id, vendor, token, title, body, app_id, message_class, raw in zip(
            *(claimed[c].tolist() for c in cols), strict=True):
        badge, items = _data(raw)
        data = dict(items)
        data["send_id"] = send_id
        out.append(PushMessage(send_id=send_id, vendor=vendor, token=token, title=title, body=body, app_id=app_id,
                               message_class=message_class, data=data, badge=badge))
    return out


_EMPTY = pd.DataFrame(columns=["send_id", "vendor"])


class Dispatcher:
    """Delivers due sends from the outbox through the vendor channels.

    Args:
        store: the writer's store.
        channels: vendor name → channel; sends for a vendor without a channel stay pending.
        clock: "now" for due times and backoff (the demo's accelerated clock).
        policy: retry bounds.
        batch_size: most sends claimed per tick.
        limits: per-vendor token buckets (`VendorLimits.from_settings`); none by default.
        fallback: ``settings.fallback`` (vendor → vendor), see :mod:`engine.dispatch.routing`.
    """

    def __init__(self, store: Store, channels: dict[str, PushChannel], clock: Clock,
                 policy: RetryPolicy | None = None, batch_size: int = 500, seed: int = 7,
                 limits: VendorLimits | None = None, fallback: dict[str, str] | None = None) -> None:
        self.store = store
        self.limits = limits or VendorLimits({})
        self.fallback = dict(fallback or {})
        self.keyring = None   # decrypts device tokens; None: the default keyring, loaded once
        self.channels = channels
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.paused_until: dict[str, datetime] = {}   # vendor → end of its pause after an auth error
        self.recovered = recover_in_flight(store, clock.now())
        if self.recovered:
            log.warning("recovered %d sends left in flight by a previous run; resending with the same ids",
                        self.recovered)

    @classmethod
    def from_settings(cls, store: Store, channels: dict[str, PushChannel], clock: Clock, settings,
                      keyring=None) -> Dispatcher:
        """The dispatcher every entry point uses (demo, runner, service): retry bounds, batch size,
        per-vendor rate limits and fallback routes all from ``settings``."""
        from engine.dispatch.ratelimit import VendorLimits

        policy = RetryPolicy(max_attempts=settings.max_attempts, max_total_seconds=settings.max_retry_delay_seconds)
        d = cls(store, channels, clock, policy, settings.dispatch_batch_size, seed=settings.seed,
                limits=VendorLimits.from_settings(settings.vendors, sorted(channels)), fallback=settings.fallback)
        d.keyring = keyring
        return d

    async def tick(self) -> TickReport:
        """Claim, send and record one batch of due sends."""
        now = self.clock.now()
        claimed = self._claim(now)
        if claimed.empty:
            return TickReport()
        receipts = await self._send_all(claimed)
        return self._record(claimed, receipts, now)

    async def run(self, *, until_idle: bool = True, timeout_seconds: float | None = None, depth: int = 2,
                  idle_seconds: float = 0.05) -> RunReport:
        """Dispatch with claim, send and record overlapped, until nothing is left open (or the timeout).

        Args:
            until_idle: stop when no send is left open; otherwise wait for new ones for ever.
            timeout_seconds: stop claiming after this many seconds (batches on the wire are finished
                and recorded first).
            depth: batches on the wire at once.
            idle_seconds: longest sleep while nothing is due.
        """
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        report = RunReport()
        running: set[asyncio.Task] = set()
        with ThreadPoolExecutor(1, thread_name_prefix="pushwise-store") as db:
            async def on_store(fn, *args):
                return await loop.run_in_executor(db, fn, *args)

            async def wait_one() -> None:
                nonlocal running
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    report.add(task.result())

            try:
                while timeout_seconds is None or time.perf_counter() - started < timeout_seconds:
                    if len(running) >= max(1, depth):
                        await wait_one()
                        continue
                    now = self.clock.now()
                    claimed = await on_store(self._claim, now)
                    if not claimed.empty:
                        running.add(asyncio.create_task(self._send_and_record(claimed, now, on_store)))
                        continue
                    if running:
                        await wait_one()
                        continue
                    nxt = await on_store(self.next_due)
                    if nxt is None and until_idle:
                        break
                    wait = idle_seconds if nxt is None else (nxt - self.clock.now()).total_seconds()
                    await asyncio.sleep(min(max(wait, 0.001), idle_seconds))
            finally:
                while running:   # what is on the wire is recorded before we return (or re-raise)
                    done, running = await asyncio.wait(running)
                    for task in done:
                        if not task.cancelled() and task.exception() is None:
                            report.add(task.result())
        report.seconds = time.perf_counter() - started
        if timeout_seconds is not None and report.seconds >= timeout_seconds:
            log.warning("dispatch stopped after %.0f s with sends still open", report.seconds)
        return report

    async def _send_and_record(self, claimed: pd.DataFrame, now: datetime, on_store) -> TickReport:
        receipts = await self._send_all(claimed)
        return await on_store(self._record, claimed, receipts, now)

    def _claim(self, now: datetime) -> pd.DataFrame:
        """Claim the next batch (rate limits, pauses and fallback routes applied); may be empty."""
        active = sorted(v for v in self.channels if self.paused_until.get(v, now) <= now)
        if not active:
            return _EMPTY
        if self.fallback:
            reroute(self.store, sorted(self.channels), self.fallback, now)
        granted = self.limits.allowance(active, self.batch_size)
        active = [v for v in active if granted.get(v, 1) > 0]
        if not active:
            return _EMPTY
        if self.keyring is None:
            from engine.security.crypto import load_keyring

            self.keyring = load_keyring()
        claimed = claim_due(self.store, now, self.batch_size, vendors=active, vendor_limits=granted or None,
                            keyring=self.keyring)
        self.limits.refund(granted, claimed["vendor"].value_counts().to_dict() if len(claimed) else {})
        return claimed

    async def _send_all(self, claimed: pd.DataFrame) -> list[Receipt]:
        by_vendor: dict[str, list[PushMessage]] = {}
        for m in _messages(claimed):
            by_vendor.setdefault(m.vendor, []).append(m)
        results = await asyncio.gather(*(self._send(v, ms) for v, ms in by_vendor.items()))
        return [r for batch in results for r in batch]

    def _record(self, claimed: pd.DataFrame, receipts: list[Receipt], now: datetime) -> TickReport:
        """Write the receipts; pause a vendor that refused our credentials."""
        states = record_receipts(self.store, claimed, receipts, self.clock.now(), self.policy, self.rng)
        outcomes: dict[str, int] = {}
        refused: dict[str, list[Receipt]] = {}
        vendor_of = dict(zip(claimed["send_id"].tolist(), claimed["vendor"].tolist(), strict=True))
        for r in receipts:
            outcomes[r.outcome.value] = outcomes.get(r.outcome.value, 0) + 1
            if r.outcome is Outcome.AUTH_ERROR:
                refused.setdefault(vendor_of[r.send_id], []).append(r)
        for vendor, batch in refused.items():
            until = now + timedelta(seconds=self.policy.auth_pause_seconds)
            self.paused_until[vendor] = until
            log.error("ALERT: %s refused our credentials (%s); vendor paused until %s, %d sends kept for later",
                      vendor, batch[0].reason, until.isoformat(), len(batch))
        return TickReport(len(claimed), {str(k): int(v) for k, v in states.items()}, outcomes)

    async def _send(self, vendor: str, messages: list[PushMessage]) -> list[Receipt]:
        try:
            receipts = await self.channels[vendor].send(messages)
        except Exception as exc:  # a channel bug must not lose the batch: every send is retried
            log.exception("%s channel raised; %d sends will be retried", vendor, len(messages))
            return [Receipt(m.send_id, Outcome.TRANSIENT, reason=f"channel error: {type(exc).__name__}")
                    for m in messages]
        if len(receipts) != len(messages):
            got = {r.send_id for r in receipts}
            receipts = list(receipts) + [Receipt(m.send_id, Outcome.TRANSIENT, reason="no receipt from channel")
                                         for m in messages if m.send_id not in got]
        return receipts

    def next_due(self) -> datetime | None:
        """When the earliest non-terminal send can go out (None when nothing is left), pauses included."""
        rows = self.store.execute(
            """SELECT s.vendor, min(greatest(s.next_attempt_at, coalesce(q.resets_at, s.next_attempt_at)))
               FROM sends s LEFT JOIN devices d ON d.device_id = s.device_id
               LEFT JOIN vendor_quota q ON q.vendor = s.vendor AND q.app_id = d.app_id
                    AND q.message_class = s.message_class AND q.exhausted_at IS NOT NULL AND q.resets_at > $now
               WHERE s.state IN ('pending', 'retry') AND s.vendor IN (SELECT unnest($v)) GROUP BY s.vendor""",
            {"v": sorted(self.channels), "now": self.clock.now()},
        ).fetchall()
        times = [max(t, self.paused_until[v]) if v in self.paused_until else t for v, t in rows]
        return min(times) if times else None

    def open_count(self) -> int:
        return int(self.store.scalar("SELECT count(*) FROM sends WHERE state IN ('pending', 'retry', 'in_flight')"))
