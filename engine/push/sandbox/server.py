"""A small asyncio HTTPS server speaking HTTP/2 (``h2``) and HTTP/1.1 (``h11``) to pure handlers.

Vendor logic lives in handler functions ``Request -> Response``; this module only moves bytes.
Protocol choice follows TLS ALPN; a client that negotiates nothing (aioapns) is sniffed for the
HTTP/2 connection preface. A `Response` can also ask for transport-level faults: a delay, a
connection reset, or a GOAWAY after some more streams. It is built on ``asyncio.Protocol`` and
the sans-I/O libraries directly (no ASGI layer) so that it answers several thousand requests per
second on one core and is not the bottleneck of a dispatch benchmark.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import h11
import hpack

from engine.push.base import mask_wire_logs

__all__ = ["ConnectionInfo", "Handler", "Request", "Response", "SandboxServer"]

log = logging.getLogger(__name__)

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Header validation in h2 is pure Python and costs ~10% of a request; the vendor handlers check
# what the vendors check, and h2 still enforces framing and stream states.
_H2_CONFIG = h2.config.H2Configuration(
    client_side=False, header_encoding=None, validate_inbound_headers=False, normalize_inbound_headers=False,
    validate_outbound_headers=False, normalize_outbound_headers=False,
)
_ids = itertools.count(1)
_GOAWAY_GRACE = 2.0
_INDEXED = frozenset({"content-type", "retry-after"})


@dataclass
class ConnectionInfo:
    """One client connection, as handlers see it: an id, the protocol, and handler-owned state."""

    id: int
    http_version: str
    state: dict[str, Any] = field(default_factory=dict)


@dataclass
class Request:
    """One complete request. Header names are lowercase; repeated headers stay repeated."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    connection: ConnectionInfo

    @functools.cached_property
    def _first(self) -> dict[str, str]:
        return dict(reversed(self.headers))

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lowercase), or None."""
        return self._first.get(name)


@dataclass(frozen=True)
class Response:
    """What to answer, and optionally a transport fault to play.

    Attributes:
        status: HTTP status (ignored for ``action="reset"``/``"goaway"``).
        headers: extra response headers.
        body: response body.
        delay: seconds to wait before answering.
        action: ``"reset"`` drops the connection without answering; ``"goaway"`` sends GOAWAY
            now without answering this stream.
        goaway_after: answer normally, then send GOAWAY once this many streams (this one
            included) have been answered on the connection.
    """

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    delay: float = 0.0
    action: str | None = None
    goaway_after: int | None = None

    @classmethod
    def json(cls, status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
        body = json.dumps(payload, separators=(",", ":")).encode()
        return cls(status, (("content-type", "application/json; charset=UTF-8"), *headers), body)


Handler = Callable[[Request], Response]


class SandboxServer:
    """Serves one handler over TLS on a loopback port.

    Args:
        handler: the vendor logic.
        ssl_context: a server context with ALPN set.
        http1: answer HTTP/1.1 requests with the handler; when False they get 505 (APNs).
        goaway_data: debug data sent in GOAWAY frames.
    """

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext, *, http1: bool = True,
                 goaway_data: bytes = b'{"reason":"Shutdown"}') -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.http1 = http1
        self.goaway_data = goaway_data
        self.connections: set[_Connection] = set()
        self.stats = {"connections": 0, "h2_connections": 0, "http1_connections": 0, "resets": 0, "goaways": 0}
        #: ids of the connections a ``reset`` answer dropped: every request accepted on one of them
        #: may have been stored by the vendor without the client reading the answer.
        self.reset_connections: set[int] = set()
        self._server: asyncio.Server | None = None
        mask_wire_logs()   # the sandbox's h2/hpack DEBUG records hold device tokens and bearer tokens too

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen and return the bound port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, ssl=self.ssl_context,
                                                backlog=1024)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.abort()
        if self._server is not None:
            await self._server.wait_closed()


class _Connection(asyncio.Protocol):
    """One TLS connection; becomes HTTP/2 or HTTP/1.1 after ALPN or sniffing."""

    def __init__(self, server: SandboxServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.info = ConnectionInfo(next(_ids), "")
        self.h2: h2.connection.H2Connection | None = None
        self.h11: h11.Connection | None = None
        self._sniff = b""
        self._streams: dict[int, tuple[list[tuple[str, str]], list[bytes]]] = {}
        self._goaway_left: int | None = None
        self._last_answered = 0
        self._closed = False
        self._draining = False
        self._h11_request: tuple[str, str, list[tuple[str, str]]] | None = None
        self._h11_body: list[bytes] = []
        self._h11_busy = False

    # -- connection lifecycle -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(self)
        self.server.stats["connections"] += 1
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        if alpn == "h2":
            self._start_h2()
        elif alpn == "http/1.1":
            self._start_h11()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.server.connections.discard(self)

    def abort(self) -> None:
        self._closed = True
        if self.transport is not None:
            self.transport.abort()

    def _reset(self) -> None:
        self.server.stats["resets"] += 1
        self.server.reset_connections.add(self.info.id)
        self.abort()

    def data_received(self, data: bytes) -> None:
        if self.h2 is not None:
            self._h2_data(data)
        elif self.h11 is not None:
            self._h11_data(data)
        else:
            self._sniff += data
            head = self._sniff[: len(_PREFACE)]
            if len(head) < len(_PREFACE) and _PREFACE.startswith(head):
                return
            buffered, self._sniff = self._sniff, b""
            self._start_h2() if head == _PREFACE else self._start_h11()
            self.data_received(buffered)

    def _write(self, data: bytes) -> None:
        if data and self.transport is not None and not self._closed:
            self.transport.write(data)

    def _dispatch(self, request: Request) -> Response:
        try:
            return self.server.handler(request)
        except Exception:  # a sandbox bug must not kill the connection silently
            log.exception("sandbox handler failed for %s %s", request.method, request.path)
            return Response.json(500, {"reason": "InternalServerError"})

    # -- HTTP/2 ---------------------------------------------------------------------------------

    def _start_h2(self) -> None:
        self.info.http_version = "2"
        self.server.stats["h2_connections"] += 1
        self.h2 = h2.connection.H2Connection(config=_H2_CONFIG)
        self.h2.local_settings = h2.settings.Settings(
            client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000})
        # Response header values (fresh apns-ids) are sent as plain literals: Huffman-coding them in
        # pure Python costs more than the bytes it saves on loopback.
        self.h2.encoder.encode = functools.partial(self.h2.encoder.encode, huffman=False)  # type: ignore[method-assign]
        self.h2.initiate_connection()
        self._write(self.h2.data_to_send())

    def _h2_data(self, data: bytes) -> None:
        assert self.h2 is not None
        if self._draining:
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._write(self.h2.data_to_send())
            self._close_soon()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers]
                self._streams[event.stream_id] = (headers, [])
            elif isinstance(event, h2.events.DataReceived):
                if event.stream_id in self._streams:
                    self._streams[event.stream_id][1].append(event.data)
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self._h2_request(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self._streams.pop(event.stream_id, None)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._close_soon()
            if self._closed or self._draining:
                return
        self._write(self.h2.data_to_send())

    def _h2_request(self, stream_id: int) -> None:
        if stream_id not in self._streams or self._goaway_left == 0:
            return
        raw, chunks = self._streams.pop(stream_id)
        pseudo = {k: v for k, v in raw if k.startswith(":")}
        headers = [(k, v) for k, v in raw if not k.startswith(":")]
        request = Request(pseudo.get(":method", ""), pseudo.get(":path", ""), headers, b"".join(chunks), self.info)
        response = self._dispatch(request)
        if response.action == "reset":
            self._reset()
            return
        if response.action == "goaway":
            self._goaway()
            return
        if response.goaway_after is not None and self._goaway_left is None:
            self._goaway_left = response.goaway_after
        if response.delay > 0:
            asyncio.get_running_loop().call_later(response.delay, self._h2_send_later, stream_id, response)
        else:
            self._h2_send(stream_id, response)
        if self._goaway_left is not None:
            self._goaway_left -= 1
            if self._goaway_left <= 0:
                self._goaway_left = 0
                self._goaway()

    def _h2_send(self, stream_id: int, response: Response) -> None:
        assert self.h2 is not None
        headers: list[tuple[bytes, bytes]] = [(b":status", str(response.status).encode())]
        # Values that differ on every answer (ids) would only churn both HPACK tables: not indexed.
        headers += [(k.encode(), v.encode("latin-1")) if k in _INDEXED else
                    hpack.NeverIndexedHeaderTuple(k.encode(), v.encode("latin-1")) for k, v in response.headers]
        try:
            if response.body:
                headers.append((b"content-length", str(len(response.body)).encode()))
                self.h2.send_headers(stream_id, headers)
                self.h2.send_data(stream_id, response.body, end_stream=True)
            else:
                self.h2.send_headers(stream_id, headers, end_stream=True)
        except h2.exceptions.H2Error:
            return  # the client reset the stream or the connection is closing
        self._last_answered = max(self._last_answered, stream_id)

    def _h2_send_later(self, stream_id: int, response: Response) -> None:
        if self._closed or self.h2 is None:
            return
        self._h2_send(stream_id, response)
        self._write(self.h2.data_to_send())

    def _goaway(self) -> None:
        """GOAWAY(NO_ERROR) naming the last answered stream; later streams are not processed.

        The socket stays open (input discarded) until the client closes it or a grace period ends:
        closing at once would make the kernel answer the client's in-flight frames with a TCP
        reset, which can destroy answers the client has not read yet.
        """
        assert self.h2 is not None
        self.server.stats["goaways"] += 1
        self._draining = True
        self.h2.close_connection(h2.errors.ErrorCodes.NO_ERROR, self.server.goaway_data,
                                 last_stream_id=self._last_answered)
        self._write(self.h2.data_to_send())
        asyncio.get_running_loop().call_later(_GOAWAY_GRACE, self._close_soon)

    def _close_soon(self) -> None:
        if self.transport is not None and not self._closed:
            self._closed = True
            self.transport.close()

    # -- HTTP/1.1 -------------------------------------------------------------------------------

    def _start_h11(self) -> None:
        self.info.http_version = "1.1"
        self.server.stats["http1_connections"] += 1
        self.h11 = h11.Connection(h11.SERVER)

    def _h11_data(self, data: bytes) -> None:
        assert self.h11 is not None
        self.h11.receive_data(data)
        self._h11_drain()

    def _h11_drain(self) -> None:
        assert self.h11 is not None
        while not self._h11_busy and not self._closed:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError:
                self._write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                self._close_soon()
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in event.headers]
                self._h11_request = (event.method.decode(), event.target.decode("latin-1"), headers)
                self._h11_body = []
            elif isinstance(event, h11.Data):
                self._h11_body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                self._h11_complete()
            elif isinstance(event, h11.ConnectionClosed):
                self._close_soon()
                return

    def _h11_complete(self) -> None:
        assert self._h11_request is not None
        method, target, headers = self._h11_request
        if not self.server.http1:
            self._h11_send(Response.json(505, {"reason": "HTTP/2 is required"}), close=True)
            return
        response = self._dispatch(Request(method, target, headers, b"".join(self._h11_body), self.info))
        if response.action == "reset":
            self._reset()
            return
        close = response.action == "goaway" or response.goaway_after is not None
        if response.delay > 0:
            self._h11_busy = True
            asyncio.get_running_loop().call_later(response.delay, self._h11_send, response, close)
        else:
            self._h11_send(response, close)

    def _h11_send(self, response: Response, close: bool = False) -> None:
        assert self.h11 is not None
        if self._closed:
            return
        headers = [*response.headers, ("content-length", str(len(response.body)))]
        if close:
            headers.append(("connection", "close"))
        try:
            phrase = HTTPStatus(response.status).phrase.encode()
        except ValueError:
            phrase = b""
        data = self.h11.send(h11.Response(status_code=response.status, headers=headers, reason=phrase)) or b""
        data += (self.h11.send(h11.Data(data=response.body)) or b"") if response.body else b""
        data += self.h11.send(h11.EndOfMessage()) or b""
        self._write(data)
        if self.h11.our_state is h11.MUST_CLOSE or close:
            self._close_soon()
            return
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
        self._h11_busy = False
        self._h11_drain()
