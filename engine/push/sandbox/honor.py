"""A loopback Honor Push API and OAuth2 token endpoint, shaped after the open-source clients [weak].

``POST /auth/token`` takes ``grant_type=client_credentials``; ``POST /api/v1/{appId}/sendMessage``
checks the bearer token (HTTP 401 + 80200001/80200003), the ``timestamp`` header, the camelCase
message (1..1000 tokens, string ``data``, ``importance`` LOW|NORMAL, ``clickAction``, ttl,
4096-byte content), the daily quota per (app, class) and the request rate (HTTP 200 + business code),
and answers ``{"code": 200, "message": "success", "data": {"sendResult", "requestId",
"failTokens", "expireTokens"}}`` with the dead tokens listed.

Vendor docs:
    https://developer.honor.com/cn/docs/11002/reference/downlink-message
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from engine.clock import Clock
from engine.push.honor import MAX_BODY_BYTES, MAX_TOKENS, QUOTA_CODE, RATE_CODE
from engine.push.sandbox.common import Accepted, ClientCredentialsIssuer, Limits, VendorSandbox, key_of
from engine.push.sandbox.server import Request, Response

__all__ = ["TOKEN_PATH", "HonorSandbox", "new_honor_token"]

TOKEN_PATH = "/auth/token"
_SEND = re.compile(r"/api/v1/([^/]+)/sendMessage")
_TOKEN = re.compile(r"[A-Za-z0-9_:.\-+/=]{32,512}")
_TTL = re.compile(r"\d{1,10}(\.\d{1,9})?s")


def new_honor_token(rng: Any) -> str:
    """An Honor push token shaped like real ones (about 100 url-safe characters, seeded)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "BAEAAAAAB." + "".join(rng.choice(alphabet) for _ in range(96))


def _answer(status: int, code: int, message: str, data: dict[str, Any] | None = None) -> Response:
    return Response.json(status, {"code": code, "message": message, "data": data or {}})


class HonorSandbox(VendorSandbox):
    """The Honor Push + OAuth handler.

    Args:
        clock: sandbox time (token expiry, quota days, acceptance times).
        access_token_ttl: ``expires_in`` of issued tokens, seconds.

    Attributes:
        oauth: the token endpoint's state.
        apps: ``{app_id: client_id}``: which client's tokens may push to which app.
        limits: ``daily_quota`` per class, ``rate_per_second`` (`RATE_CODE` beyond it).
        known_tokens: when not None, tokens outside it are listed in ``expireTokens``.
    """

    vendor = "honor"

    def idempotency_key(self, item: Accepted) -> str:
        """Honor has no idempotency key; the notification tag replaces on the device."""
        android = item.payload.get("android") or {}
        return key_of(tag=(android.get("notification") or {}).get("tag"), biTag=android.get("biTag"))

    def __init__(self, clock: Clock | None = None, *, access_token_ttl: int = 3600) -> None:
        super().__init__(clock)
        self.oauth = ClientCredentialsIssuer(self.clock, access_token_ttl=access_token_ttl, prefix="hn")
        self.apps: dict[str, str] = {}
        self.limits = Limits(self.clock)
        self.known_tokens: set[str] | None = None

    def register_app(self, app_id: str, client_id: str, client_secret: str) -> None:
        """Accept ``client_id``/``client_secret`` at the token endpoint, for pushes to ``app_id``."""
        self.oauth.register_client(client_id, client_secret)
        with self._lock:
            self.apps[app_id] = client_id

    def _target(self, request: Request) -> str | None:
        if request.path == TOKEN_PATH:
            return "token"
        return "send" if _SEND.fullmatch(request.path) else None

    def _error(self, status: int, reason: str, target: str) -> Response:
        if target == "token":
            return Response.json(status, {"error": reason or "server_error", "error_description": "injected"})
        if reason.isdigit():
            code = int(reason)
        else:
            code = 81000001 if status >= 500 else RATE_CODE if status == 429 else 80100001
        return _answer(status, code, "injected")

    def _route(self, request: Request) -> Response:
        if request.method != "POST":
            return _answer(405, 80100001, "POST only")
        if request.path == TOKEN_PATH:
            status, payload = self.oauth.grant(request.body)
            self.count("token_grants" if status == 200 else f"grant_rejected:{payload['error']}")
            return Response.json(status, payload)
        match = _SEND.fullmatch(request.path)
        if match is None:
            return _answer(404, 80100001, "Not Found")
        return self._send(request, match.group(1))

    def _reject(self, status: int, code: int, message: str) -> Response:
        self.count(f"rejected:{code}")
        return _answer(status, code, message)

    def _send(self, request: Request, app_id: str) -> Response:
        with self._lock:
            client_id = self.apps.get(app_id, "")
        problem = self.oauth.check(request.header("authorization"), client_id)
        if problem == "expired":
            return self._reject(401, 80200003, "access token expired")
        if problem is not None:
            return self._reject(401, 80200001, "authentication error")
        if not (request.header("timestamp") or "").isdigit():
            return self._reject(400, 80100001, "timestamp header is required")
        if not self.limits.take_rate():
            return self._reject(200, RATE_CODE, "request too frequent")
        try:
            message = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            return self._reject(400, 80100003, "illegal message structure")
        problem_code = _check(message, _content_size(message))
        if problem_code is not None:
            return self._reject(400, *problem_code)
        tokens: list[str] = message["token"]
        importance = message.get("android", {}).get("notification", {}).get("importance", "NORMAL")
        message_class = "marketing" if importance == "LOW" else "transactional"
        if not self.limits.take_quota(app_id, message_class, len(tokens)):
            return self._reject(200, QUOTA_CODE, f"daily {message_class} quota exceeded")
        fail = [t for t in tokens if not _TOKEN.fullmatch(t)]
        expire = [t for t in tokens if t not in fail and (
            self.unregistered_at(t) is not None or (self.known_tokens is not None and t not in self.known_tokens))]
        if len(fail) + len(expire) == len(tokens):
            return self._reject(200, 80300007, "all the tokens are invalid")
        if fail or expire:
            self.count("partial")
        dead = set(fail) | set(expire)
        request_id = secrets.token_hex(12)
        headers = {k: v for k, v in request.headers if k != "authorization"}
        content = {k: v for k, v in message.items() if k != "token"}
        for token in tokens:
            if token not in dead:
                self.record(Accepted("honor", token, request_id, headers, content, self.clock.now(),
                                     request.connection.id))
        return _answer(200, 200, "success", {"sendResult": True, "requestId": request_id,
                                             "failTokens": fail, "expireTokens": expire})


def _content_size(message: object) -> int:
    """Bytes of the message without its token list: the size limit is on the content, not the audience."""
    if not isinstance(message, dict):
        return 0
    content = {k: v for k, v in message.items() if k != "token"}
    return len(json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode())


def _check(message: object, size: int) -> tuple[int, str] | None:
    """(code, message) of the first problem in an Honor send body, or None."""
    if not isinstance(message, dict):
        return 80100003, "illegal message structure"
    tokens = message.get("token")
    if not isinstance(tokens, list) or not 1 <= len(tokens) <= MAX_TOKENS or not all(
            isinstance(t, str) for t in tokens):
        return 80300010, "the number of tokens must be 1..1000"
    if "data" in message and not isinstance(message["data"], str):
        return 80100003, "data must be a string"
    android = message.get("android", {})
    if not isinstance(android, dict):
        return 80100003, "android must be an object"
    ttl = android.get("ttl", "86400s")
    if not isinstance(ttl, str) or not _TTL.fullmatch(ttl) or float(ttl[:-1]) > 1_296_000:
        return 80100001, "illegal ttl"
    notification = android.get("notification")
    if notification is not None:
        if not isinstance(notification, dict) or not isinstance(notification.get("title", ""), str) \
                or not isinstance(notification.get("body", ""), str):
            return 80100003, "illegal notification"
        if notification.get("importance", "NORMAL") not in ("LOW", "NORMAL"):
            return 80100001, "importance must be LOW or NORMAL"
        click = notification.get("clickAction")
        if not isinstance(click, dict) or click.get("type") not in (1, 2, 3):
            return 80100003, "clickAction is mandatory for notification messages"
    if size > MAX_BODY_BYTES:
        return 80300008, "the message body size exceeds 4096 bytes"
    return None
