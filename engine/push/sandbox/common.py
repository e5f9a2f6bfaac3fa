"""What every vendor sandbox shares: injectable faults, the accepted-message log, counters.

A vendor sandbox is a handler object (``Request -> Response``) holding vendor state; this base
class plays injected faults in front of the vendor's own routing. State is touched from the
sandbox's event-loop thread and from the test or CLI thread, so it sits behind one lock.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from engine.clock import Clock, SystemClock
from engine.push.sandbox.server import Request, Response

__all__ = ["Accepted", "Fault", "VendorSandbox"]


@dataclass(frozen=True)
class Fault:
    """A misbehaviour to play on the next ``count`` matching requests.

    Build one with the class methods: `Fault.error`, `Fault.slow`, `Fault.reset`, `Fault.goaway`.
    ``target`` picks which requests it applies to: ``"send"`` (push requests) or ``"token"``
    (the FCM OAuth endpoint).
    """

    kind: str
    status: int = 0
    reason: str = ""
    retry_after: str | None = None
    delay: float = 0.0
    after: int = 0
    count: int = 1
    target: str = "send"

    @classmethod
    def error(cls, status: int, reason: str, *, retry_after: float | datetime | str | None = None,
              count: int = 1, target: str = "send") -> Fault:
        """Answer ``status`` with the vendor's error body for ``reason`` (and a Retry-After header).

        ``retry_after`` may be seconds, a datetime (sent as an HTTP-date) or a raw header value.
        """
        if isinstance(retry_after, datetime):
            retry_after = format_datetime(retry_after, usegmt=True)
        elif isinstance(retry_after, int | float):
            retry_after = str(int(retry_after))
        return cls("error", status=status, reason=reason, retry_after=retry_after, count=count, target=target)

    @classmethod
    def slow(cls, delay: float, *, count: int = 1, target: str = "send") -> Fault:
        """Process normally but answer after ``delay`` seconds."""
        return cls("slow", delay=delay, count=count, target=target)

    @classmethod
    def reset(cls, *, count: int = 1, target: str = "send") -> Fault:
        """Drop the connection without processing or answering."""
        return cls("reset", count=count, target=target)

    @classmethod
    def goaway(cls, after: int = 0, *, target: str = "send") -> Fault:
        """Answer ``after`` more requests on this connection, then GOAWAY ``{"reason":"Shutdown"}``."""
        return cls("goaway", after=after, target=target)


@dataclass(frozen=True)
class Accepted:
    """One notification the sandbox accepted, for inspection.

    Attributes:
        vendor: ``"apns"`` or ``"fcm"``.
        token: device token.
        message_id: APNs ``apns-id`` / FCM message name.
        headers: request headers, ``authorization`` removed.
        payload: the parsed JSON body (APNs payload, or FCM ``message``).
        at: sandbox clock time of acceptance.
        connection: id of the connection it came over.
    """

    vendor: str
    token: str
    message_id: str
    headers: dict[str, str]
    payload: dict[str, Any]
    at: datetime
    connection: int


class VendorSandbox:
    """Base of the vendor handlers: faults first, then `_route`.

    Args:
        clock: the sandbox's notion of now (token ages, expiry, timestamps); the system clock
            by default.

    Attributes:
        keep: how many accepted notifications `accepted` remembers (the newest); the
            ``accepted`` counter in `stats` counts all of them. Bounded so that a long benchmark
            does not grow without limit.
    """

    vendor = ""
    keep = 100_000

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._faults: deque[list[Any]] = deque()
        self._accepted: deque[Accepted] = deque(maxlen=self.keep)
        self._unregistered: dict[str, datetime] = {}
        self._stats: Counter[str] = Counter()

    # -- control API (any thread) ---------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        """Queue ``fault``; faults play in the order injected."""
        with self._lock:
            self._faults.append([fault, fault.count])

    def clear_faults(self) -> None:
        """Drop every fault not yet played."""
        with self._lock:
            self._faults.clear()

    def unregister(self, token: str, at: datetime) -> None:
        """``token`` stops being valid at ``at`` (the app was uninstalled then; a naive time is UTC).

        From that moment on (sandbox clock) sends to it answer "unregistered"; APNs reports ``at``
        as the 410 ``timestamp``.
        """
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        with self._lock:
            self._unregistered[token] = at

    def accepted(self) -> list[Accepted]:
        """The accepted notifications still remembered, oldest first."""
        with self._lock:
            return list(self._accepted)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    # -- handler (event-loop thread) ------------------------------------------------------------

    def __call__(self, request: Request) -> Response:
        self.count("requests")
        target = self._target(request)
        fault = self._take_fault(target) if target else None
        if fault is None:
            return self._route(request)
        self.count(f"fault_{fault.kind}")
        if fault.kind == "error":
            response = self._error(fault.status, fault.reason, target or "send")
            if fault.retry_after is not None:
                response = replace(response, headers=(*response.headers, ("retry-after", fault.retry_after)))
            return response
        if fault.kind == "slow":
            return replace(self._route(request), delay=fault.delay)
        if fault.kind == "reset":
            return Response(action="reset")
        if fault.after <= 0:
            return Response(action="goaway")
        return replace(self._route(request), goaway_after=fault.after)

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    def record(self, item: Accepted) -> None:
        with self._lock:
            self._accepted.append(item)
            self._stats["accepted"] += 1

    def unregistered_at(self, token: str) -> datetime | None:
        """When ``token`` became invalid, if it already has (sandbox clock)."""
        with self._lock:
            at = self._unregistered.get(token)
        return at if at is not None and at <= self.clock.now() else None

    def _take_fault(self, target: str) -> Fault | None:
        with self._lock:
            for entry in self._faults:
                fault, left = entry
                if fault.target == target:
                    entry[1] = left - 1
                    if entry[1] <= 0:
                        self._faults.remove(entry)
                    return fault  # type: ignore[no-any-return]
        return None

    # -- vendor hooks ---------------------------------------------------------------------------

    def _target(self, request: Request) -> str | None:
        """``"send"``/``"token"`` for requests faults may apply to, None otherwise."""
        raise NotImplementedError

    def _route(self, request: Request) -> Response:
        """The vendor's normal answer."""
        raise NotImplementedError

    def _error(self, status: int, reason: str, target: str) -> Response:
        """The vendor's error answer for an injected ``status``/``reason``."""
        raise NotImplementedError
