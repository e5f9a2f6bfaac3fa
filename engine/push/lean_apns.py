"""A lean APNs channel on the ``h2`` library: the same requests and receipts as `ApnsChannel`, 5× cheaper.

httpx's HTTP/2 path costs about 1 ms of CPU per request (docs/decisions/005-apns-transport.md), so
APNs, the one vendor that takes one request per notification at volume, gets its own transport:
a few long-lived TLS connections driven by an ``asyncio.Protocol``. It also handles GOAWAY exactly:
frames are fed to ``h2`` one at a time, so answers that arrive in the same read as a GOAWAY are
kept; streams above ``last_stream_id`` were not processed by APNs and are resent at once on a new
connection; a stream at or below it that never got its answer becomes TRANSIENT (the dispatcher
resends it with the same ``apns-id``). Request building, response parsing and the reason table are
`engine.push.apns`'s; the provider token is `ApnsTokenProvider`'s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from engine.clock import Clock
from engine.config import ApnsConfig
from engine.domain import Outcome, PushMessage, Receipt
from engine.errors import ConfigError, PushError
from engine.push.apns import REFRESH_REASONS, build_request, parse_response
from engine.push.auth import ApnsTokenProvider
from engine.push.base import PushChannel, credential_failure, is_certificate_failure, tls_context

__all__ = ["LeanApnsChannel"]

log = logging.getLogger(__name__)
_CONFIG = h2.config.H2Configuration(client_side=True, header_encoding=None, validate_outbound_headers=False,
                                    normalize_outbound_headers=False, validate_inbound_headers=False)


class _Unprocessed(Exception):
    """The server's GOAWAY says this stream was never processed: safe to send again now."""


class _Lost(Exception):
    """The connection ended before this stream's answer arrived (it may or may not have been processed)."""


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection; `request` sends one POST and awaits (status, headers, body)."""

    def __init__(self, authority: bytes) -> None:
        self.authority = authority
        self.h2 = h2.connection.H2Connection(_CONFIG)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.max_streams = 100
        self._pending: dict[int, list] = {}   # stream id → [future, status, headers, body chunks]
        self._buffer = bytearray()
        self._window = asyncio.Event()
        self.gone = asyncio.get_running_loop().create_future()   # set when the socket is closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(1 << 24)
        self.transport.write(self.h2.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(lambda _sid: _Lost())
        if not self.gone.done():
            self.gone.set_result(None)

    def _fail(self, error_for) -> None:
        self.closed = True
        for sid, entry in list(self._pending.items()):
            if error_for(sid) is not None and not entry[0].done():
                entry[0].set_exception(error_for(sid))
                del self._pending[sid]
        self._window.set()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        # One frame at a time: if h2 refuses a frame (e.g. one arriving after GOAWAY), the events of
        # the frames before it are already handled (httpcore loses them: a delivered message looked failed).
        while len(self._buffer) >= 9:
            size = 9 + int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < size:
                break
            frame = bytes(self._buffer[:size])
            del self._buffer[:size]
            try:
                events = self.h2.receive_data(frame)
            except h2.exceptions.ProtocolError:
                self._fail(lambda _sid: _Lost())
                if self.transport is not None:
                    self.transport.close()
                return
            for event in events:
                self._event(event)
        out = self.h2.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)
        if self.closed and not self._pending and self.transport is not None:
            self.transport.close()   # after a GOAWAY, once every processed stream has its answer

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            entry = self._pending.get(event.stream_id)
            if entry is not None:
                entry[2] = {k.decode().lower(): v.decode() for k, v in event.headers}
                entry[1] = int(entry[2].get(":status", "0"))
        elif isinstance(event, h2.events.DataReceived):
            entry = self._pending.get(event.stream_id)
            if entry is not None:
                entry[3].append(event.data)
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            entry = self._pending.pop(event.stream_id, None)
            if entry is not None and not entry[0].done():
                entry[0].set_result((entry[1], entry[2], b"".join(entry[3])))
        elif isinstance(event, h2.events.StreamReset):
            entry = self._pending.pop(event.stream_id, None)
            if entry is not None and not entry[0].done():
                entry[0].set_exception(_Lost())
        elif isinstance(event, h2.events.ConnectionTerminated):
            last = event.last_stream_id or 0
            self._fail(lambda sid: _Unprocessed() if sid > last else None)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            changed = event.changed_settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
            if changed is not None:
                self.max_streams = changed.new_value
        elif isinstance(event, h2.events.WindowUpdated):
            self._window.set()

    async def request(self, path: str, headers: dict[str, str], body: bytes, authorization: str) -> tuple:
        if self.closed or self.transport is None:
            raise _Unprocessed()
        sid = self.h2.get_next_available_stream_id()
        fut = asyncio.get_running_loop().create_future()
        self._pending[sid] = [fut, 0, {}, []]
        block = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", self.authority),
                 (b":path", path.encode()), (b"authorization", authorization.encode()),
                 *((k.encode(), v.encode()) for k, v in headers.items())]
        self.h2.send_headers(sid, block)
        while self.h2.local_flow_control_window(sid) < len(body) and not self.closed:
            self._window.clear()
            self.transport.write(self.h2.data_to_send())
            await self._window.wait()
        if self.closed:
            raise _Unprocessed()
        self.h2.send_data(sid, body, end_stream=True)
        self.transport.write(self.h2.data_to_send())
        return await fut

    def close(self) -> None:
        if self.transport is not None:
            if not self.closed:
                self.h2.close_connection()
                self.transport.write(self.h2.data_to_send())
            self.transport.close()
        self.closed = True


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
        url = urlsplit(config.base_url)
        self._host, self._port = url.hostname or "", url.port or 443
        self._authority = url.netloc.encode()
        self._ssl = tls_context(config.ca_file)
        self._ssl.set_alpn_protocols(["h2"])
        self._clock = clock
        self._timeout = timeout
        self._slots = asyncio.Semaphore(max(1, config.concurrency))
        self._conns: list[_Connection | None] = [None] * max(1, connections)
        self._locks = [asyncio.Lock() for _ in self._conns]
        self._opened: list[_Connection] = []   # every connection not yet known closed, for aclose
        self._next = 0

    async def send(self, messages: Sequence[PushMessage]) -> list[Receipt]:
        return list(await asyncio.gather(*(self._bounded(m) for m in messages)))

    async def aclose(self) -> None:
        for conn in self._opened:
            conn.close()
        pending = [c.gone for c in self._opened if not c.gone.done()]
        if pending:
            await asyncio.wait(pending, timeout=2.0)
        self._opened.clear()

    async def _connection(self) -> _Connection:
        i = self._next = (self._next + 1) % len(self._conns)
        conn = self._conns[i]
        if conn is not None and not conn.closed:
            return conn
        async with self._locks[i]:
            conn = self._conns[i]
            if conn is None or conn.closed:
                loop = asyncio.get_running_loop()
                _, conn = await loop.create_connection(lambda: _Connection(self._authority), self._host,
                                                       self._port, ssl=self._ssl, server_hostname=self._host)
                self._conns[i] = conn
                self._opened = [c for c in self._opened if not c.gone.done()] + [conn]
            return conn

    async def _bounded(self, msg: PushMessage) -> Receipt:
        async with self._slots:
            receipt, token = await self._attempt(msg)
            if token is not None and receipt.reason in REFRESH_REASONS:
                self.tokens.invalidate(expired=True, token=token)
                receipt, _ = await self._attempt(msg)
            return receipt

    async def _attempt(self, msg: PushMessage) -> tuple[Receipt, str | None]:
        try:
            token = self.tokens.token()
        except PushError as exc:
            return credential_failure([msg], exc)[0], None
        now = self._clock.now()
        try:
            path, headers, body = build_request(msg, self.topic, now)
        except (TypeError, ValueError) as exc:
            return Receipt(msg.send_id, Outcome.REJECTED_PAYLOAD, reason=f"build: {type(exc).__name__}"), None
        for _ in range(3):   # only unprocessed streams (above a GOAWAY's last_stream_id) go round again
            try:
                conn = await self._connection()
                status, answer, content = await asyncio.wait_for(
                    conn.request(path, headers, body, f"bearer {token}"), self._timeout)
            except _Unprocessed:
                continue
            except _Lost:
                return Receipt(msg.send_id, Outcome.TRANSIENT, reason="transport: connection lost"), token
            except TimeoutError:
                return Receipt(msg.send_id, Outcome.TRANSIENT, reason="transport: timeout"), token
            except OSError as exc:
                if is_certificate_failure(exc):
                    return Receipt(msg.send_id, Outcome.AUTH_ERROR, reason="tls: server certificate not trusted"), None
                return Receipt(msg.send_id, Outcome.TRANSIENT, reason=f"transport: {type(exc).__name__}"), token
            return parse_response(status, answer, content, msg.send_id, now), token
        return Receipt(msg.send_id, Outcome.TRANSIENT, reason="transport: GOAWAY, not processed"), token
