"""What every vendor sandbox shares: injectable faults, the accepted-message log, counters.

A vendor sandbox is a handler object (``Request -> Response``) holding vendor state; this base
class plays injected faults in front of the vendor's own routing. State is touched from the
sandbox's event-loop thread and from the test or CLI thread, so it sits behind one lock.
"""

from __future__ import annotations

import secrets
import threading
from collections import Counter, deque
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs

from engine.clock import Clock, SystemClock
from engine.push.sandbox.server import Request, Response

__all__ = ["Accepted", "ClientCredentialsIssuer", "Fault", "Limits", "VendorSandbox", "key_of"]


def key_of(**fields: object) -> str:
    """``name=value`` pairs of the present (non-empty) fields joined by ``;``, for `Accepted.key`."""
    return ";".join(f"{name.replace('_', '-')}={value}" for name, value in fields.items()
                    if value not in (None, ""))


@dataclass(frozen=True)
class Fault:
    """A misbehaviour to play on the next ``count`` matching requests.

    Build one with the class methods: `Fault.error`, `Fault.slow`, `Fault.reset`, `Fault.goaway`.
    ``target`` picks which requests it applies to: ``"send"`` (push requests) or ``"token"``
    (the FCM OAuth endpoint).
    """

    kind: str
    after_accept: bool = False
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
    def reset(cls, *, after_accept: bool = False, count: int = 1, target: str = "send") -> Fault:
        """Drop the connection without answering: before processing the request, or (``after_accept``)
        after the vendor accepted and stored it, so that the client cannot know it went out."""
        return cls("reset", after_accept=after_accept, count=count, target=target)

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
        key: what the vendor deduplicates or collapses a repeat on, as ``name=value`` pairs joined
            by ``;`` (e.g. ``apns-id=…;apns-collapse-id=…``; `VendorSandbox.idempotency_key`).
    """

    vendor: str
    token: str
    message_id: str
    headers: dict[str, str]
    payload: dict[str, Any]
    at: datetime
    connection: int
    key: str = ""


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
        self.count(f"fault_{fault.kind}{'_after_accept' if fault.after_accept else ''}")
        if fault.kind == "error":
            response = self._error(fault.status, fault.reason, target or "send")
            if fault.retry_after is not None:
                response = replace(response, headers=(*response.headers, ("retry-after", fault.retry_after)))
            return response
        if fault.kind == "slow":
            return replace(self._route(request), delay=fault.delay)
        if fault.kind == "reset":
            if fault.after_accept:
                self._route(request)   # accepted and stored; the answer is lost with the connection
            return Response(action="reset")
        if fault.after <= 0:
            return Response(action="goaway")
        return replace(self._route(request), goaway_after=fault.after)

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    def record(self, item: Accepted) -> None:
        if not item.key:
            item = replace(item, key=self.idempotency_key(item))
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

    def idempotency_key(self, item: Accepted) -> str:
        """The fields of ``item`` the vendor deduplicates or collapses a repeat on (see `Accepted.key`)."""
        return ""

    def _target(self, request: Request) -> str | None:
        """``"send"``/``"token"`` for requests faults may apply to, None otherwise."""
        raise NotImplementedError

    def _route(self, request: Request) -> Response:
        """The vendor's normal answer."""
        raise NotImplementedError

    def _error(self, status: int, reason: str, target: str) -> Response:
        """The vendor's error answer for an injected ``status``/``reason``."""
        raise NotImplementedError


class Limits:
    """Daily quotas per (app, message class) and a per-second request rate, on the sandbox clock.

    Attributes:
        daily_quota: ``{message_class: messages per vendor day}``; a class not listed is unlimited.
        rate_per_second: requests allowed per wall-second of the sandbox clock; 0 = unlimited.
        day_offset: the vendor's day boundary (China time, UTC+8, for the Chinese vendors).
    """

    def __init__(self, clock: Clock, *, day_offset: timedelta = timedelta(hours=8)) -> None:
        self._clock = clock
        self.daily_quota: dict[str, int] = {}
        self.rate_per_second = 0
        self.day_offset = day_offset
        self._used: Counter[tuple[str, str, str]] = Counter()
        self._window: tuple[int, int] = (0, 0)
        self._lock = threading.Lock()

    def take_quota(self, app: str, message_class: str, n: int) -> bool:
        """Count ``n`` messages against (app, class) today; False (and nothing counted) when over quota."""
        limit = self.daily_quota.get(message_class)
        day = (self._clock.now() + self.day_offset).date().isoformat()
        with self._lock:
            key = (day, app, message_class)
            if limit is not None and self._used[key] + n > limit:
                return False
            self._used[key] += n
            return True

    def take_rate(self) -> bool:
        """Count one request in the current second; False when the rate is exceeded."""
        if self.rate_per_second <= 0:
            return True
        second = int(self._clock.now().timestamp())
        with self._lock:
            start, used = self._window
            used = used + 1 if start == second else 1
            self._window = (second, used)
            return used <= self.rate_per_second


class ClientCredentialsIssuer:
    """An OAuth2 client-credentials token endpoint's state (Huawei, Honor): clients and issued tokens.

    Attributes:
        access_token_ttl: ``expires_in`` of issued tokens, seconds (short to test refresh).
    """

    def __init__(self, clock: Clock, *, access_token_ttl: int = 3600, prefix: str = "sandbox") -> None:
        self._clock = clock
        self.access_token_ttl = access_token_ttl
        self._prefix = prefix
        self._clients: dict[str, str] = {}
        self._issued: dict[str, tuple[str, datetime]] = {}
        self._lock = threading.Lock()

    def register_client(self, client_id: str, client_secret: str) -> None:
        with self._lock:
            self._clients[client_id] = client_secret

    def grant(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """Answer a token request: ``(200, {access_token, expires_in, token_type})`` or an OAuth error."""
        form = parse_qs(body.decode("utf-8", "replace"))
        grant_type = form.get("grant_type", [""])[0]
        client_id, secret = form.get("client_id", [""])[0], form.get("client_secret", [""])[0]
        if grant_type != "client_credentials":
            return 400, {"error": "unsupported_grant_type", "error_description": f"grant_type {grant_type!r}"}
        with self._lock:
            known = self._clients.get(client_id)
        if known is None or not secrets.compare_digest(known.encode(), secret.encode()):
            return 401, {"error": "invalid_client", "error_description": "client authentication failed"}
        token = f"{self._prefix}.{secrets.token_urlsafe(32)}"
        with self._lock:
            self._issued[token] = (client_id, self._clock.now() + timedelta(seconds=self.access_token_ttl))
        return 200, {"access_token": token, "expires_in": self.access_token_ttl, "token_type": "Bearer"}

    def check(self, authorization: str | None, client_id: str) -> str | None:
        """None when ``authorization`` is a live bearer token of ``client_id``; else ``"missing"``,
        ``"unknown"``, ``"other_app"`` or ``"expired"``."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "missing"
        with self._lock:
            entry = self._issued.get(token.strip())
        if entry is None:
            return "unknown"
        if entry[0] != client_id:
            return "other_app"
        return "expired" if self._clock.now() >= entry[1] else None
