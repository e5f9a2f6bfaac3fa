"""A loopback OPPO Push (OPUSH) server: signed auth, auth_token expiry, field limits, daily quotas.

``POST /server/v1/auth`` checks app_key, the 13-digit timestamp (±10 min) and the SHA-256 sign and
issues an ``auth_token`` (lifetime configurable). ``POST /server/v1/message/notification/unicast_batch``
answers HTTP 200 with a business ``code`` and per-message ``data[i].errorCode`` (10000 dead regId,
33 daily quota of the message's class). Injected faults with HTTP status 200 answer that business
code (``Fault.error(200, "33")``).

Vendor docs: https://open.oppomobile.com/new/developmentDoc/info?id=11238
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from engine.clock import Clock
from engine.push.sandbox.common import Accepted, VendorSandbox, key_of
from engine.push.sandbox.server import Request, Response

__all__ = ["SERVICE_CATEGORIES", "OppoSandbox", "new_oppo_token"]

SERVICE_CATEGORIES = frozenset({"IM", "ACCOUNT", "DEVICE_REMINDER", "ORDER", "TODO", "SUBSCRIPTION"})
MARKETING_CATEGORIES = frozenset({"NEWS", "CONTENT", "MARKETING", "SOCIAL"})
_AUTH = "/server/v1/auth"
_BATCH = "/server/v1/message/notification/unicast_batch"
_CHINA = timedelta(hours=8)


def new_oppo_token(rng: random.Random) -> str:
    """An OPPO regId shaped like real domestic ones: ``CN_`` + 32 lowercase hex."""
    return f"CN_{rng.getrandbits(128):032x}"


def _answer(code: int, message: str = "", data: Any = None) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        body["data"] = data
    return Response.json(200, body)


class OppoSandbox(VendorSandbox):
    """The OPUSH handler.

    Args:
        app_key, master_secret: the credentials it accepts.
        clock: sandbox time (timestamp window, token expiry, quota day in China time).
        token_ttl: auth_token lifetime, seconds (24 h like OPPO; short to test refresh).
        daily_quota: messages per (app, class) per China-time day; None = unlimited.
        rate_limit: requests per sandbox-clock second before code 55; None = unlimited.

    Attributes:
        known_tokens: when not None, regIds outside it answer errorCode 10000.
    """

    vendor = "oppo"

    def idempotency_key(self, item: Accepted) -> str:
        """OPPO delivers one message per app_message_id and target (this sandbox too)."""
        return key_of(app_message_id=(item.payload.get("notification") or {}).get("app_message_id"))

    def __init__(self, app_key: str, master_secret: str, clock: Clock | None = None, *, token_ttl: int = 86_400,
                 daily_quota: dict[str, int | None] | None = None, rate_limit: int | None = None) -> None:
        super().__init__(clock)
        self.app_key, self.master_secret = app_key, master_secret
        self.token_ttl = token_ttl
        self.daily_quota = daily_quota if daily_quota is not None else {"marketing": 100_000, "transactional": None}
        self.rate_limit = rate_limit
        self.known_tokens: set[str] | None = None
        self._tokens: dict[str, datetime] = {}
        self._used: dict[tuple[str, str, str], int] = {}
        self._seen: dict[tuple[str, str], str] = {}
        self._second: tuple[int, int] = (0, 0)

    def _target(self, request: Request) -> str | None:
        return {"/server/v1/auth": "token", _BATCH: "send"}.get(request.path)

    def _error(self, status: int, reason: str, target: str) -> Response:
        if status == 200:
            return _answer(int(reason or -1), "injected")
        return Response.json(status, {"code": -1, "message": reason or "injected"})

    def _route(self, request: Request) -> Response:
        if request.method != "POST":
            return Response.json(405, {"code": 40, "message": "POST only"})
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
        if request.path == _AUTH:
            return self._auth(form)
        if request.path == _BATCH:
            return self._batch(form, request)
        return Response.json(404, {"code": 40, "message": f"no such API {request.path}"})

    def _reject(self, code: int, message: str) -> Response:
        self.count(f"rejected:{code}")
        return _answer(code, message)

    def _auth(self, form: dict[str, str]) -> Response:
        if form.get("app_key") != self.app_key:
            return self._reject(14, "Invalid AppKey")
        stamp = form.get("timestamp", "")
        now = self.clock.now()
        if not (stamp.isdigit() and len(stamp) == 13) or abs(int(stamp) / 1000 - now.timestamp()) > 600:
            return self._reject(16, "Invalid Timestamp")
        expected = hashlib.sha256(f"{self.app_key}{stamp}{self.master_secret}".encode()).hexdigest()
        if form.get("sign") != expected:
            return self._reject(15, "Invalid Signature")
        token = secrets.token_hex(20)
        with self._lock:
            self._tokens[token] = now + timedelta(seconds=self.token_ttl)
        self.count("token_grants")
        return _answer(0, "", {"auth_token": token, "create_time": int(now.timestamp() * 1000)})

    def _rate_limited(self) -> bool:
        if self.rate_limit is None:
            return False
        second = int(self.clock.now().timestamp())
        with self._lock:
            count = self._second[1] + 1 if self._second[0] == second else 1
            self._second = (second, count)
        return count > self.rate_limit

    def _batch(self, form: dict[str, str], request: Request) -> Response:
        with self._lock:
            expires = self._tokens.get(form.get("auth_token", ""))
        if expires is None or self.clock.now() >= expires:
            return self._reject(11, "Invalid AuthToken")
        if self._rate_limited():
            return self._reject(55, "Access Frequency Limit")
        try:
            messages = json.loads(form.get("messages", ""))
        except ValueError:
            return self._reject(41, "Invalid Argument: messages is not JSON")
        if not isinstance(messages, list) or not 1 <= len(messages) <= 1000:
            return self._reject(41, "Invalid Argument: messages must hold 1..1000 items")
        for m in messages:
            problem = _check(m)
            if problem is not None:
                return self._reject(*problem)
        return _answer(0, "", [self._one(m, request) for m in messages])

    def _one(self, m: dict[str, Any], request: Request) -> dict[str, Any]:
        token, note = m["target_value"], m["notification"]
        item: dict[str, Any] = {"registrationId": token}
        gone = self.unregistered_at(token) is not None
        if gone or (self.known_tokens is not None and token not in self.known_tokens):
            self.count("rejected:10000")
            return {**item, "errorCode": 10000, "errorMessage": "Invalid RegistrationId"}
        dedup = (str(note.get("app_message_id", "")), token)
        with self._lock:
            earlier = self._seen.get(dedup) if dedup[0] else None
        if earlier is not None:   # app_message_id: delivered once per target, answered again
            return {**item, "messageId": earlier}
        klass = "transactional" if note["category"] in SERVICE_CATEGORIES else "marketing"
        day = (self.clock.now() + _CHINA).date().isoformat()
        limit = self.daily_quota.get(klass)
        with self._lock:
            used = self._used.get((self.app_key, klass, day), 0)
            if limit is not None and used >= limit:
                over = True
            else:
                over = False
                self._used[(self.app_key, klass, day)] = used + 1
        if over:
            self.count("rejected:33")
            return {**item, "errorCode": 33, "errorMessage": "The number of messages exceeds the daily limit"}
        message_id = f"0{secrets.token_hex(11)}"
        with self._lock:
            if dedup[0]:
                self._seen[dedup] = message_id
        headers = {k: v for k, v in request.headers if k != "authorization"}
        self.record(Accepted("oppo", token, message_id, headers, m, self.clock.now(), request.connection.id))
        return {**item, "messageId": message_id}


def _check(m: Any) -> tuple[int, str] | None:
    """(code, message) for the first problem of one unicast message, or None."""
    if not isinstance(m, dict) or m.get("target_type") != 2 or not isinstance(m.get("target_value"), str):
        return 41, "Invalid Argument: target_type must be 2 with a regId target_value"
    note = m.get("notification")
    if not isinstance(note, dict):
        return 40, "Missing Argument: notification"
    for name, limit in (("title", 50), ("content", 50)):
        value = note.get(name)
        if not isinstance(value, str) or not 1 <= len(value) <= limit:
            return 41, f"Invalid Argument: {name} must be 1..{limit} characters"
    if not isinstance(note.get("sub_title", ""), str) or len(note.get("sub_title", "")) > 10:
        return 41, "Invalid Argument: sub_title must be at most 10 characters"
    if not isinstance(note.get("channel_id"), str) or not note["channel_id"]:
        return 40, "Missing Argument: channel_id (required for Android 8+)"
    category, level = note.get("category"), note.get("notify_level")
    if category not in SERVICE_CATEGORIES | MARKETING_CATEGORIES or level not in (1, 2, 16):
        return 67, "category or notify_level error"
    ttl = note.get("off_line_ttl", 0)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 <= ttl <= 864_000:
        return 41, "Invalid Argument: off_line_ttl must be 0..864000 seconds"
    params = note.get("action_parameters", "")
    if not isinstance(params, str) or len(params) > 4000:
        return 41, "Invalid Argument: action_parameters must be a JSON string of at most 4000 characters"
    return None
