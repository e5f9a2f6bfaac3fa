"""A lean APNs channel on the ``h2`` library: the same requests and receipts as `ApnsChannel`, ~10× cheaper.

httpx's HTTP/2 path costs about 1 ms of CPU per request (docs/decisions/005-apns-transport.md), so
APNs, the one vendor that takes one request per notification at volume, goes through
`engine.push.h2pool.H2Pool`: a few long-lived TLS connections, a whole batch exchanged from the
protocol callbacks, the provider token HPACK-indexed. GOAWAY is handled exactly (see the pool):
streams above ``last_stream_id`` were not processed by APNs and are resent at once on a new
connection; a stream at or below it that never got its answer becomes TRANSIENT (the dispatcher
resends it with the same ``apns-id``). Request building, response parsing and the reason table are
`engine.push.apns`'s; the provider token is `ApnsTokenProvider`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from engine.clock import Clock
from engine.config import ApnsConfig
from engine.domain import PushMessage, Receipt
from engine.errors import ConfigError, PushError
from engine.push.apns import REFRESH_REASONS, build_request, parse_response
from engine.push.auth import ApnsTokenProvider
from engine.push.base import PushChannel, credential_failure, mask_wire_logs, tls_context
from engine.push.h2pool import H2Pool, exchange_receipts

__all__ = ["LeanApnsChannel"]

log = logging.getLogger(__name__)


class LeanApnsChannel(PushChannel):
    """Sends to APNs over ``connections`` HTTP/2 connections with at most ``config.concurrency`` in flight.

    Args:
        config: the ``[vendors.apns]`` section.
        clock: the injected clock (JWT ``iat``, ``apns-expiration``).
        transport: unused (the httpx seam of the other channels); accepted for the registry's signature.
        connections: TLS connections to spread streams over.
        timeout: seconds to wait for one answer before calling it TRANSIENT.
    """

    vendor = "apns"

    def __init__(self, config: ApnsConfig, clock: Clock, transport: object | None = None, *,
                 connections: int = 2, timeout: float = 10.0) -> None:
        try:
            key_pem = Path(config.key_file).read_bytes()
        except OSError as exc:
            raise ConfigError(f"vendors.apns.key_file cannot be read: {exc.strerror}") from None
        self.tokens = ApnsTokenProvider(config.team_id, config.key_id, key_pem, clock)
        self.topic = config.topic
        self._clock = clock
        self._pool = H2Pool(config.base_url, tls_context(config.ca_file), connections=connections,
                            concurrency=config.concurrency, timeout=timeout)
        mask_wire_logs()   # h2/hpack DEBUG records hold the :path (device token) and the bearer JWT

    async def send(self, messages: Sequence[PushMessage]) -> list[Receipt]:
        receipts, token = await self._attempt(messages)
        again = [i for i, r in enumerate(receipts) if token is not None and r.reason in REFRESH_REASONS]
        if again:   # the provider token expired: mint a new one and retry those sends exactly once
            self.tokens.invalidate(expired=True, token=token)
            retried, _ = await self._attempt([messages[i] for i in again])
            for i, receipt in zip(again, retried, strict=True):
                receipts[i] = receipt
        return receipts

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def _attempt(self, messages: Sequence[PushMessage]) -> tuple[list[Receipt], str | None]:
        """One exchange; returns the receipts and the provider token used (None: no token could be had)."""
        try:
            token = self.tokens.token()
        except PushError as exc:
            return credential_failure(list(messages), exc), None
        now = self._clock.now()
        receipts = await exchange_receipts(
            self._pool, messages, f"bearer {token}", lambda m: build_request(m, self.topic, now),
            lambda status, headers, body, send_id: parse_response(status, headers, body, send_id, now))
        return receipts, token
