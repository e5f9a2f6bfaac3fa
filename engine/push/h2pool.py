"""A lean HTTP/2 client for one origin on ``h2``: a few TLS connections, requests driven by callbacks.

The APNs and FCM channels send one request per notification; httpx's HTTP/2 path costs ~1 ms of CPU
per request and a coroutine-per-request client on ``h2`` still ~175 µs (docs/decisions/005). This
pool takes a whole batch at once and keeps ``concurrency`` streams in flight from the protocol
callbacks themselves: an answer that completes a stream submits the next request in the same
callback, and every connection writes once per event-loop read, not once per request. There is no
task, future or timer per request.

Header compression: the headers every request repeats (method, scheme, authority, authorization,
topic...) are added to the HPACK dynamic table once and then sent as one-byte indexed references;
the per-request headers (path, ids) go as literals "without indexing", without Huffman coding
(pure-Python Huffman costs more than the bytes it saves on a LAN). `authorization` is indexed on
purpose: no attacker-controlled header shares the compression context, and re-sending a 300-byte
JWT literal per request was half the cost of a request.

GOAWAY is handled exactly: bytes are fed to ``h2`` up to and including a GOAWAY frame in one call,
then one frame at a time, so answers read together with a GOAWAY are kept; streams above its
``last_stream_id`` were not processed and are sent again on another connection (at most
``tries`` times); a stream at or below it whose answer never comes ends as `Lost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
from hpack.table import HeaderTable

from engine.domain import Outcome, PushMessage, Receipt
from engine.push.base import is_certificate_failure

__all__ = ["Answer", "H2Pool", "Lost", "Request", "Unprocessed", "exchange_receipts", "transport_failure"]

log = logging.getLogger(__name__)

_CONFIG = h2.config.H2Configuration(client_side=True, header_encoding=None, validate_outbound_headers=False,
                                    normalize_outbound_headers=False, validate_inbound_headers=False,
                                    normalize_inbound_headers=False)
_GOAWAY = 0x7
#: (path, per-request headers as (name, value) bytes pairs, body)
Request = tuple[bytes, Sequence[tuple[bytes, bytes]], bytes]
#: (status, response headers as (lowercase name, value) bytes pairs, body)
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


class Unprocessed(Exception):
    """The server never processed the request (above a GOAWAY's last stream, or no connection)."""


class Lost(Exception):
    """The connection ended before the answer arrived; the server may or may not have processed it."""


def _literal(n: int) -> bytes:
    """An HPACK string length (7-bit prefix, no Huffman flag)."""
    return bytes([n]) if n < 127 else bytes(hpack.hpack.encode_integer(n, 7))


def _name_prefix(name: bytes) -> bytes:
    """The start of a "literal without indexing" field for ``name``: static-table index or literal name."""
    static = HeaderTable.STATIC_TABLE_MAPPING.get(name)
    if static is not None:
        index = static[0]
        return bytes([index]) if index < 15 else bytes(hpack.hpack.encode_integer(index, 4))
    return b"\x00" + _literal(len(name)) + name


class _Encoder(hpack.Encoder):
    """HPACK encoder that sends headers ``1 .. constant`` of a block as cached indexed references.

    Header 0 (``:path``) and those after the constant ones are per-request literals. The cached
    bytes stay valid while the dynamic table does not change; only this encoder's slow path
    inserts into it, and it clears the cache when it does. `tests/push/test_h2pool.py` decodes
    every block with ``hpack``'s own decoder while the table fills, evicts and resizes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.constant = 0
        self._cache: dict[tuple, bytes] = {}
        self._names: dict[bytes, bytes] = {}

    def encode(self, headers, huffman: bool = True) -> bytes:  # type: ignore[override]
        stop = 1 + self.constant
        const = tuple(headers[1:stop])
        resize = b""
        if self.header_table.resized:   # a table size update must open the block
            resize = super().encode([], huffman=False)
            self._cache.clear()
        block = self._cache.get(const)
        if block is None:
            block = self._slow(const)
        parts = [resize, self._literal(*headers[0]), block]
        parts += [self._literal(name, value) for name, value in headers[stop:]]
        return b"".join(parts)

    def _literal(self, name: bytes, value: bytes) -> bytes:
        prefix = self._names.get(name)
        if prefix is None:
            prefix = self._names[name] = _name_prefix(name)
        return prefix + _literal(len(value)) + value

    def _slow(self, const: tuple) -> bytes:
        self._cache.clear()
        first = super().encode(list(const), huffman=False)   # inserts into the dynamic table
        indexed = self._indexed(const)
        if indexed is not None:
            self._cache[const] = indexed
        return first

    def _indexed(self, const: tuple) -> bytes | None:
        """``const`` as indexed references into the table as it is now, or None if one is not in it.

        Computed by lookup, never by encoding again: a second encode may evict and insert entries
        (a full table keeps its entry count while its contents change), and every change the peer
        does not see in a block it receives desynchronises its table from ours.
        """
        parts = []
        for name, value in const:
            hit = self.header_table.search(name, value)
            if hit is None or hit[2] is None:   # not indexed (too large for the table, or name only)
                return None
            ref = hpack.hpack.encode_integer(hit[0], 7)
            ref[0] |= 0x80
            parts.append(bytes(ref))
        return b"".join(parts)


class _H2(h2.connection.H2Connection):
    """``h2`` with the open-stream count kept by the pool: h2 recounts every stream on each request."""

    def __init__(self) -> None:
        super().__init__(_CONFIG)
        self.encoder = _Encoder()
        self._calls = 0

    @property
    def open_outbound_streams(self) -> int:  # type: ignore[override]
        self._calls += 1
        if self._calls & 127 == 0:   # h2 forgets closed streams while counting: let it, now and then
            return super().open_outbound_streams
        return 0   # the pool never opens more than the server's MAX_CONCURRENT_STREAMS


class _Stream:
    """One request in flight or waiting: the batch it belongs to and its index there."""

    __slots__ = ("batch", "index", "request", "tries", "started", "status", "headers", "chunks")

    def __init__(self, batch: _Batch, index: int, request: Request) -> None:
        self.batch, self.index, self.request = batch, index, request
        self.tries = 0
        self.started = 0.0
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []


class _Batch:
    """The answers of one `H2Pool.exchange` call, filled in as they arrive."""

    __slots__ = ("constant", "results", "left", "done")

    def __init__(self, constant: list[tuple[bytes, bytes]], n: int, done: asyncio.Future) -> None:
        self.constant, self.results, self.left, self.done = constant, [None] * n, n, done

    def finish(self, index: int, result: Answer | BaseException) -> None:
        self.results[index] = result
        self.left -= 1
        if self.left == 0 and not self.done.done():
            self.done.set_result(None)


class _Connection(asyncio.Protocol):
    def __init__(self, pool: H2Pool) -> None:
        self.pool = pool
        self.h2 = _H2()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.max_streams = 100
        self.streams: dict[int, _Stream] = {}
        self._buffer = b""
        self.gone = asyncio.get_running_loop().create_future()

    # -- asyncio callbacks ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(1 << 24)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail_all(Lost)
        if not self.gone.done():
            self.gone.set_result(None)
        self.pool._fill()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        end, goaway = 0, -1
        n = len(buffer)
        while end + 9 <= n:   # complete frames only; note where a GOAWAY ends
            size = 9 + int.from_bytes(buffer[end:end + 3], "big")
            if end + size > n:
                break
            end += size
            if buffer[end - size + 3] == _GOAWAY and goaway < 0:
                goaway = end
        self._buffer = buffer[end:]
        if goaway < 0:
            self._feed(buffer[:end])
        elif self._feed(buffer[:goaway]):
            start = goaway
            while start < end:   # after a GOAWAY, frame by frame: h2 refuses some, keep what came before
                size = 9 + int.from_bytes(buffer[start:start + 3], "big")
                if not self._feed(buffer[start:start + size]):
                    break
                start += size
        self.pool._fill()
        self.pool._flush()
        if self.closed and not self.streams and self.transport is not None:
            self.transport.close()   # after a GOAWAY, once every processed stream has its answer

    # -- h2 ---------------------------------------------------------------------------------------

    def _feed(self, frames: bytes) -> bool:
        if not frames:
            return True
        try:
            events = self.h2.receive_data(frames)
        except h2.exceptions.ProtocolError:
            self.closed = True
            self._fail_all(Lost)
            if self.transport is not None:
                self.transport.close()
            return False
        for event in events:
            self._event(event)
        return True

    def _event(self, event: h2.events.Event) -> None:
        t = type(event)
        if t is h2.events.ResponseReceived:
            s = self.streams.get(event.stream_id)
            if s is not None:
                s.headers = event.headers
        elif t is h2.events.DataReceived:
            s = self.streams.get(event.stream_id)
            if s is not None:
                s.chunks.append(event.data)
            if event.flow_controlled_length:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif t is h2.events.StreamEnded:
            s = self.streams.pop(event.stream_id, None)
            if s is not None:
                status = 0
                for name, value in s.headers:
                    if name == b":status":
                        status = int(value)
                        break
                self.pool._finish(s, (status, s.headers, b"".join(s.chunks)))
        elif t is h2.events.StreamReset:
            s = self.streams.pop(event.stream_id, None)
            if s is not None:
                self.pool._finish(s, Lost())
        elif t is h2.events.ConnectionTerminated:
            self.closed = True
            last = event.last_stream_id or 0
            for sid in [sid for sid in self.streams if sid > last]:
                self.pool._retry(self.streams.pop(sid))
        elif t is h2.events.RemoteSettingsChanged:
            changed = event.changed_settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
            if changed is not None:
                self.max_streams = changed.new_value

    def _fail_all(self, error: type[Exception]) -> None:
        streams, self.streams = self.streams, {}
        for s in streams.values():
            self.pool._finish(s, error())

    # -- used by the pool -------------------------------------------------------------------------

    def can_take(self, body_size: int) -> bool:
        return (not self.closed and self.transport is not None and len(self.streams) < self.max_streams
                and self.h2.outbound_flow_control_window >= body_size)

    def submit(self, s: _Stream) -> None:
        path, headers, body = s.request
        try:
            sid = self.h2.get_next_available_stream_id()
        except h2.exceptions.NoAvailableStreamIDError:
            self.closed = True
            self.pool._retry(s)
            return
        self.h2.encoder.constant = len(s.batch.constant)
        self.h2.send_headers(sid, [(b":path", path), *s.batch.constant, *headers])
        self.h2.send_data(sid, body, end_stream=True)
        s.started = self.pool.loop.time()
        self.streams[sid] = s

    def flush(self) -> None:
        out = self.h2.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def expire(self, deadline: float) -> None:
        for sid in [sid for sid, s in self.streams.items() if s.started < deadline]:
            s = self.streams.pop(sid)
            with contextlib.suppress(h2.exceptions.H2Error):
                self.h2.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            self.pool._finish(s, TimeoutError())

    def close(self) -> None:
        if self.transport is not None:
            if not self.closed:
                try:
                    self.h2.close_connection()
                    self.flush()
                except h2.exceptions.H2Error:
                    pass
            self.transport.close()
        self.closed = True


class H2Pool:
    """HTTP/2 connections to one ``https://`` origin that exchange whole batches of POST requests.

    Args:
        base_url: ``https://host:port``.
        ssl_context: the client TLS context (ALPN ``h2`` is set here).
        connections: TLS connections to spread streams over.
        concurrency: most streams in flight over all connections.
        timeout: seconds to wait for one answer before it ends as ``TimeoutError``.
        tries: times a request refused unprocessed (GOAWAY) is sent before it ends as `Unprocessed`.
    """

    def __init__(self, base_url: str, ssl_context: ssl.SSLContext, *, connections: int = 2,
                 concurrency: int = 200, timeout: float = 10.0, tries: int = 3) -> None:
        url = urlsplit(base_url)
        self._host, self._port = url.hostname or "", url.port or 443
        self.authority = url.netloc.encode()
        self._ssl = ssl_context
        self._ssl.set_alpn_protocols(["h2"])
        self.concurrency = max(1, concurrency)
        self.timeout = timeout
        self.tries = tries
        self._conns: list[_Connection | None] = [None] * max(1, connections)
        self._connecting: set[int] = set()
        self._tasks: set[asyncio.Task] = set()
        self._opened: list[_Connection] = []
        self._queue: deque[_Stream] = deque()
        self._in_flight = 0
        self._next = 0
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    async def exchange(self, constant: list[tuple[bytes, bytes]], requests: Sequence[Request]
                       ) -> list[Answer | BaseException]:
        """POST every request; one answer (or the exception that ended it) per request, in order.

        Args:
            constant: headers every request of the batch carries (``authorization``,
                ``apns-topic``...), sent HPACK-indexed after ``:path``, ``:method``, ``:scheme``
                and ``:authority``.
            requests: ``(path, per-request headers, body)``.

        Returns:
            `Answer` tuples, or `Lost`, `Unprocessed`, ``TimeoutError`` or the ``OSError`` of a
            failed connection attempt.
        """
        if not requests:
            return []
        done = self.loop.create_future()
        constant = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", self.authority), *constant]
        batch = _Batch(constant, len(requests), done)
        self._queue.extend(_Stream(batch, i, r) for i, r in enumerate(requests))
        self._fill()
        self._flush()
        try:
            await done
        except asyncio.CancelledError:   # what was not sent yet is not sent later
            self._queue = deque(s for s in self._queue if s.batch is not batch)
            raise
        return batch.results  # type: ignore[return-value]

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for task in list(self._tasks):   # a connection still being opened would be left open
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        for conn in self._opened:
            conn.close()
        pending = [c.gone for c in self._opened if not c.gone.done()]
        if pending:
            await asyncio.wait(pending, timeout=2.0)
        self._opened.clear()

    # -- internals, called from the connections' callbacks ----------------------------------------

    def _finish(self, s: _Stream, result: Answer | BaseException) -> None:
        self._in_flight -= 1
        s.batch.finish(s.index, result)

    def _retry(self, s: _Stream) -> None:
        self._in_flight -= 1
        s.tries += 1
        if s.tries >= self.tries:
            s.batch.finish(s.index, Unprocessed())
        else:
            self._queue.appendleft(s)

    def _fill(self) -> None:
        queue = self._queue
        if not queue:
            return
        conns = self._conns
        n = len(conns)
        while queue and self._in_flight < self.concurrency:
            s = queue[0]
            size = len(s.request[2])
            for _ in range(n):
                self._next = (self._next + 1) % n
                conn = conns[self._next]
                if conn is not None and conn.can_take(size):
                    break
            else:
                self._connect_missing()
                return
            queue.popleft()
            self._in_flight += 1
            conn.submit(s)
        if self._sweeper is None and self._in_flight:
            self._sweeper = self.loop.call_later(self.timeout / 4, self._sweep)

    def _flush(self) -> None:
        for conn in self._conns:
            if conn is not None:
                conn.flush()

    def _sweep(self) -> None:
        self._sweeper = None
        deadline = self.loop.time() - self.timeout
        for conn in self._conns:
            if conn is not None:
                conn.expire(deadline)
        self._fill()
        self._flush()
        if self._in_flight and self._sweeper is None:
            self._sweeper = self.loop.call_later(self.timeout / 4, self._sweep)

    def _connect_missing(self) -> None:
        for i, conn in enumerate(self._conns):
            if (conn is None or conn.closed) and i not in self._connecting:
                self._connecting.add(i)
                task = self.loop.create_task(self._connect(i))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _connect(self, i: int) -> None:
        try:
            _, conn = await self.loop.create_connection(lambda: _Connection(self), self._host, self._port,
                                                        ssl=self._ssl, server_hostname=self._host)
        except OSError as exc:
            self._connecting.discard(i)
            if not self._connecting and not any(c is not None and not c.closed for c in self._conns):
                self._fail_queue(exc)   # nowhere to send: every waiting request ends with this error
            return
        self._connecting.discard(i)
        self._conns[i] = conn
        self._opened = [c for c in self._opened if not c.gone.done()] + [conn]
        self._fill()
        self._flush()

    def _fail_queue(self, exc: OSError) -> None:
        queue, self._queue = self._queue, deque()
        for s in queue:
            s.batch.finish(s.index, exc)


def transport_failure(send_id: str, error: BaseException) -> Receipt:
    """The receipt for a request that got no answer: TRANSIENT (resent with the same id), or
    AUTH_ERROR when the server's TLS certificate is not trusted (resending cannot help)."""
    if isinstance(error, Unprocessed):
        return Receipt(send_id, Outcome.TRANSIENT, reason="transport: GOAWAY, not processed")
    if isinstance(error, Lost):
        return Receipt(send_id, Outcome.TRANSIENT, reason="transport: connection lost")
    if isinstance(error, TimeoutError):
        return Receipt(send_id, Outcome.TRANSIENT, reason="transport: timeout")
    if isinstance(error, OSError) and is_certificate_failure(error):
        return Receipt(send_id, Outcome.AUTH_ERROR, reason="tls: server certificate not trusted")
    return Receipt(send_id, Outcome.TRANSIENT, reason=f"transport: {type(error).__name__}")


async def exchange_receipts(
    pool: H2Pool,
    messages: Sequence[PushMessage],
    authorization: str,
    build: Callable[[PushMessage], tuple[str, Mapping[str, str], bytes]],
    parse: Callable[[int, Mapping[str, str], bytes, str], Receipt],
) -> list[Receipt]:
    """One receipt per message, in order: built with ``build`` (pure), exchanged, parsed with ``parse``.

    A message ``build`` cannot encode is REJECTED_PAYLOAD (our bug: never retried); a request that
    got no answer becomes `transport_failure`'s receipt.
    """
    receipts: list[Receipt | None] = [None] * len(messages)
    requests: list[Request] = []
    sent: list[int] = []
    for i, msg in enumerate(messages):
        try:
            path, headers, body = build(msg)
        except (TypeError, ValueError) as exc:
            receipts[i] = Receipt(msg.send_id, Outcome.REJECTED_PAYLOAD, reason=f"build: {type(exc).__name__}")
            continue
        requests.append((path.encode(), [(k.encode(), v.encode()) for k, v in headers.items()], body))
        sent.append(i)
    answers = await pool.exchange([(b"authorization", authorization.encode())], requests)
    for i, answer in zip(sent, answers, strict=True):
        send_id = messages[i].send_id
        if isinstance(answer, BaseException):
            receipts[i] = transport_failure(send_id, answer)
        else:
            status, raw, content = answer
            receipts[i] = parse(status, {k.decode("latin-1"): v.decode("latin-1") for k, v in raw}, content, send_id)
    return receipts  # type: ignore[return-value]
