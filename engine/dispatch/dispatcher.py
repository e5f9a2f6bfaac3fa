"""The dispatcher: one tick claims due sends, sends them per vendor concurrently, records the receipts."""

from __future__ import annotations

import asyncio
import json
import logging
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

__all__ = ["Dispatcher", "TickReport"]

log = logging.getLogger(__name__)


@dataclass
class TickReport:
    claimed: int = 0
    states: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)


def _messages(claimed: pd.DataFrame) -> list[PushMessage]:
    out = []
    for row in claimed.itertuples(index=False):
        raw = json.loads(row.data or "{}")
        badge = raw.pop("badge", None)   # an int for the vendor, not a data string; 0 is meaningful
        data = {k: str(v) for k, v in raw.items() if v is not None}
        data["send_id"] = row.send_id
        out.append(PushMessage(
            send_id=row.send_id, vendor=row.vendor, token=row.token, title=row.title, body=row.body,
            app_id=row.app_id, message_class=row.message_class, data=data,
            badge=None if badge is None else int(badge),
        ))
    return out


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
        active = sorted(v for v in self.channels if self.paused_until.get(v, now) <= now)
        if not active:
            return TickReport()
        if self.fallback:
            reroute(self.store, sorted(self.channels), self.fallback, now)
        granted = self.limits.allowance(active, self.batch_size)
        active = [v for v in active if granted.get(v, 1) > 0]
        if not active:
            return TickReport()
        if self.keyring is None:
            from engine.security.crypto import load_keyring

            self.keyring = load_keyring()
        claimed = claim_due(self.store, now, self.batch_size, vendors=active, vendor_limits=granted or None,
                            keyring=self.keyring)
        self.limits.refund(granted, claimed["vendor"].value_counts().to_dict() if len(claimed) else {})
        if claimed.empty:
            return TickReport()
        messages = _messages(claimed)
        by_vendor: dict[str, list[PushMessage]] = {}
        for m in messages:
            by_vendor.setdefault(m.vendor, []).append(m)
        results = await asyncio.gather(*(self._send(v, ms) for v, ms in by_vendor.items()))
        receipts = [r for batch in results for r in batch]
        states = record_receipts(self.store, claimed, receipts, self.clock.now(), self.policy, self.rng)
        outcomes = pd.Series([r.outcome.value for r in receipts]).value_counts().to_dict()
        for vendor, batch in zip(by_vendor, results, strict=True):
            refused = [r for r in batch if r.outcome is Outcome.AUTH_ERROR]
            if refused:
                until = now + timedelta(seconds=self.policy.auth_pause_seconds)
                self.paused_until[vendor] = until
                log.error("ALERT: %s refused our credentials (%s); vendor paused until %s, %d sends kept for later",
                          vendor, refused[0].reason, until.isoformat(), len(refused))
        return TickReport(len(claimed), {str(k): int(v) for k, v in states.items()},
                          {str(k): int(v) for k, v in outcomes.items()})

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
