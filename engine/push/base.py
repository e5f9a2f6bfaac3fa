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
import dataclasses
import hashlib
import json
import logging
import re
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
    "oem_status_outcome",
    "credential_failure",
    "TokenMask",
    "http_throttle_wins",
    "TRANSPORT_OUTCOMES",
    "BatchChannel",
    "HttpChannel",
    "is_certificate_failure",
    "json_object",
    "mask_wire_logs",
    "PushChannel",
    "content_key",
    "repeat_key",
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


#: Third-party loggers that print request lines or headers: the APNs path and Web Push endpoints hold
#: device tokens, and headers hold bearer tokens (httpx logs the URL at INFO, hpack headers at DEBUG).
#: A logger's filter does not see its children's records, so every emitting child is listed.
_WIRE_LOGGERS = ("httpx", "httpcore", "httpcore.http11", "httpcore.http2", "httpcore.connection",
                 "hpack", "hpack.hpack", "hpack.table", "h2", "h2.connection")
_TOKENISH = re.compile(r"[A-Za-z0-9_\-+=%]{32,}")


class TokenMask(logging.Filter):
    """Replaces every token-like run (32+ characters) in a record with a short fingerprint."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            return True
        masked = _TOKENISH.sub(lambda m: f"<masked:{hashlib.sha256(m.group().encode()).hexdigest()[:10]}>", text)
        if masked != text:
            record.msg, record.args = masked, ()
        return True


_MASK = TokenMask()


def mask_wire_logs() -> None:
    """Make the HTTP libraries' own log records token-free (idempotent; costs nothing when not logging)."""
    for name in _WIRE_LOGGERS:
        logger = logging.getLogger(name)
        if _MASK not in logger.filters:
            logger.addFilter(_MASK)


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
        mask_wire_logs()

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
        except PushError as exc:
            return credential_failure([msg], exc)[0], None
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


def content_key(msg: PushMessage) -> tuple[Any, ...]:
    """Everything about ``msg`` except its token and send id: messages with equal keys can share a request."""
    return (msg.app_id, msg.message_class, msg.title, msg.body, tuple(sorted(msg.data.items())),
            msg.badge, msg.collapse_id, msg.ttl_seconds)


def repeat_key(batch: Sequence[PushMessage]) -> str | None:
    """The key a vendor dedups or collapses a repeated message on, derived from the send id.

    A send that was in flight when the dispatcher died or its connection was lost is sent again;
    each adapter puts this key in its vendor's idempotency or collapse field (apns-collapse-id,
    notification tag, notify_id, app_message_id, Topic...) so that the repeat is dropped by the
    vendor or replaces the first copy on the device (docs/decisions/011-repeats-and-idempotency.md).

    Returns:
        The campaign's ``collapse_id`` when set; else the send id of a one-message request; None
        for a multi-message request without a collapse id (no single per-send key fits it).
    """
    first = batch[0]
    if first.collapse_id:
        return first.collapse_id
    return first.send_id if len(batch) == 1 else None


class BatchChannel(PushChannel):
    """Template for multi-token HTTP vendors (Huawei, Honor, Xiaomi).

    Messages with identical content (`content_key`) share one request of at most `cap` tokens; the
    vendor's per-token answer comes back as one Receipt per message, in the input order. As in
    `HttpChannel`, an expired credential is refreshed and the request retried exactly once.

    The batch vendors are spoken to over HTTP/1.1: with three ~130 KB bodies in flight on one HTTP/2
    connection to the loopback sandbox, two streams stalled until ReadTimeout (1 run in 8 at load 9
    on 2 cores; which side's flow control is at fault is not established). A batch needs few
    requests, so a small HTTP/1.1 pool costs nothing measurable.
    """

    cap: int = 1000

    def __init__(self, client: httpx.AsyncClient, clock: Clock, concurrency: int) -> None:
        self._client = client
        self._clock = clock
        self._slots = asyncio.Semaphore(max(1, concurrency))
        mask_wire_logs()

    async def send(self, messages: Sequence[PushMessage]) -> list[Receipt]:
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, msg in enumerate(messages):
            groups.setdefault(self.batch_key(msg), []).append(i)
        chunks = [idx[s:s + self.cap] for idx in groups.values() for s in range(0, len(idx), self.cap)]
        answers = await asyncio.gather(*(self._bounded([messages[i] for i in c]) for c in chunks))
        out: list[Receipt | None] = [None] * len(messages)
        for chunk, receipts in zip(chunks, answers, strict=True):
            for i, receipt in zip(chunk, receipts, strict=True):
                out[i] = receipt
        assert all(r is not None for r in out)
        return [r for r in out if r is not None]

    async def aclose(self) -> None:
        await self._client.aclose()

    def batch_key(self, msg: PushMessage) -> tuple[Any, ...]:
        """Messages with equal keys may share a request: by default those with equal `content_key`
        (the vendor sends one content to a token list). A vendor whose batch request carries a
        message per token (OPPO ``unicast_batch``) overrides this to batch different contents."""
        return content_key(msg)

    async def _bounded(self, batch: list[PushMessage]) -> list[Receipt]:
        async with self._slots:
            receipts, credential = await self._attempt(batch)
            if credential is not None and self._needs_refresh(receipts):
                log.info("%s credential expired (batch of %d); refreshing once", self.vendor, len(batch))
                self._invalidate(credential)
                receipts, _ = await self._attempt(batch)
            return receipts

    async def _attempt(self, batch: list[PushMessage]) -> tuple[list[Receipt], str | None]:
        def every(outcome: Outcome, reason: str) -> list[Receipt]:
            return [Receipt(send_id=m.send_id, outcome=outcome, reason=reason) for m in batch]

        try:
            credential = await self._credential()
        except PushError as exc:
            return credential_failure(batch, exc), None
        now = self._clock.now()
        try:
            path, headers, body = self._request(batch, now)
        except (TypeError, ValueError) as exc:  # a message we cannot encode is our bug: never retried
            return every(Outcome.REJECTED_PAYLOAD, f"build: {type(exc).__name__}"), None
        try:
            response = await self._client.post(
                path, content=body, headers={**headers, "authorization": self._authorization(credential)}
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return [transport_receipt(m.send_id, exc) for m in batch], credential
        return self._parse(response.status_code, response.headers, response.content, batch, now), credential

    @abc.abstractmethod
    async def _credential(self) -> str:
        """The current credential; raises AuthError (refused) or PushError (unreachable)."""

    @abc.abstractmethod
    def _authorization(self, credential: str) -> str:
        """The ``authorization`` header value for ``credential``."""

    @abc.abstractmethod
    def _invalidate(self, credential: str) -> None:
        """Forget ``credential`` because the vendor said it expired."""

    @abc.abstractmethod
    def _request(self, batch: Sequence[PushMessage], now: datetime) -> tuple[str, dict[str, str], bytes]:
        """(path, headers, body) for messages sharing one content; pure."""

    @abc.abstractmethod
    def _parse(self, status: int, headers: Mapping[str, str], body: bytes, batch: Sequence[PushMessage],
               now: datetime) -> list[Receipt]:
        """One Receipt per message of ``batch`` for one vendor answer; pure."""

    @abc.abstractmethod
    def _needs_refresh(self, receipts: Sequence[Receipt]) -> bool:
        """Whether the answer says the credential expired (refresh and retry once)."""


def credential_failure(messages: Sequence[PushMessage], exc: PushError) -> list[Receipt]:
    """Receipts for messages that could not be sent because no credential could be had: refused
    credentials (``AuthError``) pause the vendor; an unreachable token endpoint is transient."""
    outcome = Outcome.AUTH_ERROR if isinstance(exc, AuthError) else Outcome.TRANSIENT
    return [Receipt(send_id=m.send_id, outcome=outcome, reason=f"credential: {exc}") for m in messages]


def oem_status_outcome(status: int) -> Outcome:
    """The outcome an OEM batch vendor's HTTP status implies when the body has no code we know.

    An HTTP 200 without a known business code is an unknown answer (retried with backoff); 429 and
    503 are flow control; 401/403 refused credentials; other 4xx our request; the rest transient.
    """
    if status == 200:
        return Outcome.TRANSIENT
    if status in (429, 503):
        return Outcome.RATE_LIMITED
    if status in (401, 403):
        return Outcome.AUTH_ERROR
    if 400 <= status < 500:
        return Outcome.REJECTED_PAYLOAD
    return Outcome.TRANSIENT


def http_throttle_wins(parse):
    """Decorate a vendor's ``parse_response(status, headers, body, batch, now)``: an HTTP 429 or 503 is a
    throttle whatever business code rides along in the body (vendors put generic parameter codes
    there), so such receipts become RATE_LIMITED unless the body already said rate limit, quota or
    a transient fault. Found by the soak benchmark (Honor); applied to every business-code vendor."""
    import functools

    keep = (Outcome.RATE_LIMITED, Outcome.QUOTA_EXHAUSTED, Outcome.TRANSIENT)

    @functools.wraps(parse)
    def wrapper(status, *args, **kwargs):
        receipts = parse(status, *args, **kwargs)
        if status not in (429, 503):
            return receipts
        return [r if r.outcome in keep else dataclasses.replace(r, outcome=Outcome.RATE_LIMITED)
                for r in receipts]

    return wrapper
