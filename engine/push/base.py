"""The vendor-channel contract: one Receipt per message, vendor answers and transport failures as values.

Every channel follows the same three steps (build the client from its config section, build each
request with a *pure* function, send and classify through *one* table). `HttpChannel` holds the
parts both HTTP vendors share: bounded concurrency, a single refresh-and-retry when the vendor says
the credential expired, and the mapping of ``httpx`` exceptions into outcomes. Retries with backoff
are the dispatcher's job; a channel never sleeps.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import ssl
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from engine.clock import Clock
from engine.domain import Outcome, PushMessage, Receipt
from engine.errors import AuthError, PushError

__all__ = [
    "TRANSPORT_OUTCOMES",
    "HttpChannel",
    "is_certificate_failure",
    "json_object",
    "PushChannel",
    "parse_retry_after",
    "tls_context",
    "transport_receipt",
]

log = logging.getLogger(__name__)

#: How each ``httpx`` exception becomes an outcome. Keyed by exact class; a test fails when httpx
#: grows an exception that is missing here. Configuration problems (a URL we cannot use) pause the
#: adapter like refused credentials do; everything on the wire is transient.
TRANSPORT_OUTCOMES: dict[type[Exception], Outcome] = {
    httpx.HTTPError: Outcome.TRANSIENT,
    httpx.RequestError: Outcome.TRANSIENT,
    httpx.TransportError: Outcome.TRANSIENT,
    httpx.TimeoutException: Outcome.TRANSIENT,
    httpx.ConnectTimeout: Outcome.TRANSIENT,
    httpx.ReadTimeout: Outcome.TRANSIENT,
    httpx.WriteTimeout: Outcome.TRANSIENT,
    httpx.PoolTimeout: Outcome.TRANSIENT,
    httpx.NetworkError: Outcome.TRANSIENT,
    httpx.ConnectError: Outcome.TRANSIENT,
    httpx.ReadError: Outcome.TRANSIENT,
    httpx.WriteError: Outcome.TRANSIENT,
    httpx.CloseError: Outcome.TRANSIENT,
    httpx.ProtocolError: Outcome.TRANSIENT,
    httpx.LocalProtocolError: Outcome.TRANSIENT,
    httpx.RemoteProtocolError: Outcome.TRANSIENT,   # includes GOAWAY for streams httpcore cannot resend
    httpx.ProxyError: Outcome.TRANSIENT,
    httpx.DecodingError: Outcome.TRANSIENT,
    httpx.TooManyRedirects: Outcome.TRANSIENT,
    httpx.HTTPStatusError: Outcome.TRANSIENT,
    httpx.UnsupportedProtocol: Outcome.AUTH_ERROR,  # base_url is not http(s): configuration
    httpx.InvalidURL: Outcome.AUTH_ERROR,
}


def transport_receipt(send_id: str, exc: Exception) -> Receipt:
    """Turn an exception raised while talking to a vendor into a Receipt.

    A server certificate that does not verify is an ``AUTH_ERROR`` (the vendor's identity was
    refused: a configuration or security problem that retrying cannot fix); other failures follow
    `TRANSPORT_OUTCOMES` by the nearest class in the exception's MRO.

    Args:
        send_id: the message the failure belongs to.
        exc: an ``httpx.HTTPError`` or ``httpx.InvalidURL``.

    Returns:
        A Receipt whose reason names the failure, e.g. ``"transport: ReadTimeout"``.
    """
    if is_certificate_failure(exc):
        return Receipt(send_id=send_id, outcome=Outcome.AUTH_ERROR, reason="tls: server certificate not trusted")
    nearest = (TRANSPORT_OUTCOMES[k] for k in type(exc).__mro__ if k in TRANSPORT_OUTCOMES)
    outcome = next(nearest, Outcome.TRANSIENT)
    return Receipt(send_id=send_id, outcome=outcome, reason=f"transport: {type(exc).__name__}")


def is_certificate_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a failed verification of the server's certificate."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return isinstance(exc, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in str(exc)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Parse a ``Retry-After`` header (RFC 9110: delay-seconds or an HTTP-date).

    Args:
        value: the raw header value, or None when absent.
        now: the current time (aware), to turn an HTTP-date into a delay.

    Returns:
        Seconds to wait (never negative), or None when absent or unparseable.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def tls_context(ca_file: str) -> ssl.SSLContext:
    """A verifying client TLS context: the system store, plus ``ca_file`` when given.

    Certificate and host-name verification are always on; there is deliberately no switch to
    turn them off.
    """
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx


class PushChannel(abc.ABC):
    """A vendor channel: sends messages, answers with exactly one Receipt per message, in order."""

    vendor: str

    @abc.abstractmethod
    async def send(self, messages: Sequence[PushMessage]) -> list[Receipt]:
        """Send ``messages``; vendor rejections and transport failures come back as Receipts."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections."""

    async def __aenter__(self) -> PushChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class HttpChannel(PushChannel):
    """Template for one-request-per-message HTTP vendors (APNs, FCM).

    Subclasses provide the credential (`_credential`, `_invalidate`), the pure request builder
    (`_request`) and the pure response parser (`_parse`), and say which receipts mean "credential
    expired" (`_needs_refresh`). This class sends, bounds concurrency and retries exactly once
    after a refresh.
    """

    def __init__(self, client: httpx.AsyncClient, clock: Clock, concurrency: int) -> None:
        self._client = client
        self._clock = clock
        self._slots = asyncio.Semaphore(max(1, concurrency))

    async def send(self, messages: Sequence[PushMessage]) -> list[Receipt]:
        return list(await asyncio.gather(*(self._bounded(m) for m in messages)))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _bounded(self, msg: PushMessage) -> Receipt:
        async with self._slots:
            receipt, credential = await self._attempt(msg)
            if credential is not None and self._needs_refresh(receipt):
                log.info("%s credential expired (send %s); refreshing once", self.vendor, msg.send_id)
                self._invalidate(credential)
                receipt, _ = await self._attempt(msg)
            return receipt

    async def _attempt(self, msg: PushMessage) -> tuple[Receipt, str | None]:
        try:
            credential = await self._credential()
        except AuthError as exc:
            return Receipt(send_id=msg.send_id, outcome=Outcome.AUTH_ERROR, reason=f"credential: {exc}"), None
        except PushError as exc:
            return Receipt(send_id=msg.send_id, outcome=Outcome.TRANSIENT, reason=f"credential: {exc}"), None
        now = self._clock.now()
        try:
            path, headers, body = self._request(msg, now)
        except (TypeError, ValueError) as exc:  # a message we cannot encode is our bug: never retried
            return Receipt(send_id=msg.send_id, outcome=Outcome.REJECTED_PAYLOAD,
                           reason=f"build: {type(exc).__name__}"), None
        try:
            response = await self._client.post(
                path, content=body, headers={**headers, "authorization": self._authorization(credential)}
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return transport_receipt(msg.send_id, exc), credential
        return self._parse(response.status_code, response.headers, response.content, msg.send_id, now), credential

    @abc.abstractmethod
    async def _credential(self) -> str:
        """The current bearer credential; raises AuthError (refused) or PushError (unreachable)."""

    @abc.abstractmethod
    def _authorization(self, credential: str) -> str:
        """The ``authorization`` header value for ``credential``."""

    @abc.abstractmethod
    def _invalidate(self, credential: str) -> None:
        """Forget ``credential`` because the vendor said it expired."""

    @abc.abstractmethod
    def _request(self, msg: PushMessage, now: datetime) -> tuple[str, dict[str, str], bytes]:
        """(path, headers, body) for ``msg``; pure."""

    @abc.abstractmethod
    def _parse(
        self, status: int, headers: Mapping[str, str], body: bytes, send_id: str, now: datetime
    ) -> Receipt:
        """The Receipt for one vendor answer; pure."""

    @abc.abstractmethod
    def _needs_refresh(self, receipt: Receipt) -> bool:
        """Whether ``receipt`` says the credential expired (refresh and retry once)."""


def json_object(body: bytes) -> dict[str, Any]:
    """Decode a JSON object body leniently: anything else (empty, HTML, array) becomes ``{}``."""
    try:
        value = json.loads(body) if body else {}
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}
