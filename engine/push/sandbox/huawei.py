"""A loopback Huawei Push Kit API and OAuth2 token endpoint that enforce the documented protocol.

``POST /oauth2/v3/token`` takes ``grant_type=client_credentials`` with the App ID and secret and
issues bearer tokens with a configurable lifetime. ``POST /v1/{appId}/messages:send`` checks the
token (401 + 80200001/80200003), the message (exactly one target, 1..1000 tokens, string ``data``,
``android.category``, ``click_action``, ttl, collapse_key, 4096-byte content), the daily quota per
(app, class) and the request rate (HTTP 503 flow control), and answers per-token results the way
Huawei does: 80000000, 80100000 with ``msg`` a JSON string listing illegal tokens (v1 or v3
shape), or 80300007 when every token is dead.

Vendor docs:
    https://developer.huawei.com/consumer/en/doc/HMSCore-References/https-send-api-0000001050986197
    https://developer.huawei.com/consumer/en/doc/HMSCore-References/error-code-0000001050045759
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from engine.clock import Clock
from engine.push.huawei import CATEGORIES, MAX_BODY_BYTES, MAX_TOKENS, QUOTA_CODE
from engine.push.sandbox.common import Accepted, ClientCredentialsIssuer, Limits, VendorSandbox, key_of
from engine.push.sandbox.server import Request, Response

__all__ = ["TOKEN_PATH", "HuaweiSandbox", "new_huawei_token"]

TOKEN_PATH = "/oauth2/v3/token"
_SEND = re.compile(r"/v1/([^/]+)/messages:send")
_TOKEN = re.compile(r"[A-Za-z0-9_:.\-+/=]{32,512}")
_TTL = re.compile(r"\d{1,10}(\.\d{1,9})?s")
_SERVICE = frozenset({"IM", "VOIP", "SUBSCRIPTION", "TRAVEL", "HEALTH", "WORK", "ACCOUNT", "EXPRESS", "FINANCE",
                      "DEVICE_REMINDER", "MAIL", "PLAY_VOICE", "SYSTEM_REMINDER"})
_CATEGORIES = _SERVICE | set(CATEGORIES.values())


def new_huawei_token(rng: Any) -> str:
    """A Huawei push token shaped like real ones (``0`` + 29 digits... here: 130 url-safe chars, seeded)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
    return "IQAAAACy" + "".join(rng.choice(alphabet) for _ in range(122))


def _answer(status: int, code: str, msg: str) -> Response:
    return Response.json(status, {"code": code, "msg": msg, "requestId": secrets.token_hex(12)})


class HuaweiSandbox(VendorSandbox):
    """The Huawei Push Kit + OAuth handler.

    Args:
        clock: sandbox time (token expiry, quota days, acceptance times).
        access_token_ttl: ``expires_in`` of issued tokens, seconds.

    Attributes:
        oauth: the token endpoint's state (``register_client``, ``access_token_ttl``).
        limits: ``daily_quota`` per class and ``rate_per_second`` (HTTP 503 beyond it).
        known_tokens: when not None, tokens outside it are illegal.
        partial_shape: ``"v1"`` (``illegal_tokens`` list) or ``"v3"`` (``illegalTokens`` map) for 80100000.
    """

    vendor = "huawei"

    def idempotency_key(self, item: Accepted) -> str:
        """Huawei has no idempotency key; the notification tag replaces on the device."""
        android = item.payload.get("android") or {}
        return key_of(tag=(android.get("notification") or {}).get("tag"), bi_tag=android.get("bi_tag"))

    def __init__(self, clock: Clock | None = None, *, access_token_ttl: int = 3600) -> None:
        super().__init__(clock)
        self.oauth = ClientCredentialsIssuer(self.clock, access_token_ttl=access_token_ttl, prefix="CgB6e3x9")
        self.limits = Limits(self.clock)
        self.known_tokens: set[str] | None = None
        self.partial_shape = "v1"

    def _target(self, request: Request) -> str | None:
        if request.path == TOKEN_PATH:
            return "token"
        return "send" if _SEND.fullmatch(request.path) else None

    def _error(self, status: int, reason: str, target: str) -> Response:
        if target == "token":
            return Response.json(status, {"error": reason or 1101, "error_description": "injected"})
        if status == 503 and not reason:
            return Response.json(503, {"msg": "flow control"})
        return _answer(status, reason or ("81000001" if status >= 500 else "80100001"), "injected")

    def _route(self, request: Request) -> Response:
        if request.method != "POST":
            return Response.json(405, {"code": "80100001", "msg": "POST only"})
        if request.path == TOKEN_PATH:
            status, payload = self.oauth.grant(request.body)
            self.count("token_grants" if status == 200 else f"grant_rejected:{payload['error']}")
            return Response.json(status, payload)
        match = _SEND.fullmatch(request.path)
        if match is None:
            return Response.json(404, {"code": "80100001", "msg": "Not Found"})
        return self._send(request, match.group(1))

    def _reject(self, status: int, code: str, msg: str) -> Response:
        self.count(f"rejected:{code}")
        return _answer(status, code, msg)

    def _send(self, request: Request, app_id: str) -> Response:
        problem = self.oauth.check(request.header("authorization"), app_id)
        if problem == "expired":
            return self._reject(401, "80200003", "Oauth Token expired")
        if problem is not None:
            return self._reject(401, "80200001", "Oauth authentication error")
        if not self.limits.take_rate():
            self.count("rejected:flow_control")
            return Response.json(503, {"msg": "flow control"}, (("retry-after", "1"),))
        try:
            body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            return self._reject(400, "80100003", "Illegal message structure")
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, dict):
            return self._reject(400, "80100003", "Illegal message structure")
        problem_code = _check(message, _content_size(message))
        if problem_code is not None:
            return self._reject(400, problem_code[0], problem_code[1])
        tokens: list[str] = message["token"]
        category = message.get("android", {}).get("category", "")
        message_class = "marketing" if category == "MARKETING" else "transactional"
        if not self.limits.take_quota(app_id, message_class, len(tokens)):
            return self._reject(200, QUOTA_CODE, f"daily {message_class} quota exceeded")
        bad = [t for t in tokens if not _TOKEN.fullmatch(t) or self.unregistered_at(t) is not None
               or (self.known_tokens is not None and t not in self.known_tokens)]
        if len(bad) == len(tokens):
            return self._reject(200, "80300007", "All the tokens are invalid")
        response = self._accept(request, message, [t for t in tokens if t not in set(bad)])
        if not bad:
            return response
        self.count("partial")
        payload = json.loads(response.body)
        if self.partial_shape == "v3":
            msg = {"success": len(tokens) - len(bad), "failure": len(bad), "illegalTokens": {"invalid": bad}}
        else:
            msg = {"success": len(tokens) - len(bad), "failure": len(bad), "illegal_tokens": bad}
        return Response.json(200, {**payload, "code": "80100000", "msg": json.dumps(msg)})

    def _accept(self, request: Request, message: dict[str, Any], tokens: list[str]) -> Response:
        request_id = secrets.token_hex(12)
        headers = {k: v for k, v in request.headers if k != "authorization"}
        content = {k: v for k, v in message.items() if k != "token"}
        for token in tokens:
            self.record(Accepted("huawei", token, request_id, headers, content, self.clock.now(),
                                 request.connection.id))
        return Response.json(200, {"code": "80000000", "msg": "Success", "requestId": request_id})


def _content_size(message: object) -> int:
    """Bytes of the message without its token list: the size limit is on the content, not the audience."""
    if not isinstance(message, dict):
        return 0
    content = {k: v for k, v in message.items() if k != "token"}
    return len(json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode())


def _check(message: dict[str, Any], size: int) -> tuple[str, str] | None:
    """(code, msg) of the first problem in a Push Kit ``message``, or None."""
    targets = [k for k in ("token", "topic", "condition") if message.get(k)]
    if targets != ["token"]:
        return "80100003", "Exactly one target (token list) is required"
    tokens = message["token"]
    if not isinstance(tokens, list) or not 1 <= len(tokens) <= MAX_TOKENS or not all(
            isinstance(t, str) for t in tokens):
        return "80300010", "The number of tokens in the message body exceeds the default value"
    if "data" in message and not isinstance(message["data"], str):
        return "80100003", "data must be a string"
    android = message.get("android", {})
    if not isinstance(android, dict):
        return "80100003", "android must be an object"
    if android.get("category") is not None and android["category"] not in _CATEGORIES:
        return "80100001", f"Illegal category {android['category']!r}"
    ttl = android.get("ttl", "86400s")
    if not isinstance(ttl, str) or not _TTL.fullmatch(ttl) or float(ttl[:-1]) > 1_296_000:
        return "80100001", "Illegal ttl"
    collapse = android.get("collapse_key", -1)
    if not isinstance(collapse, int) or isinstance(collapse, bool) or not -1 <= collapse <= 100:
        return "80100013", "Collapse_key is illegal"
    notification = android.get("notification")
    if notification is not None:
        if not isinstance(notification, dict) or not isinstance(notification.get("title", ""), str) \
                or not isinstance(notification.get("body", ""), str):
            return "80100003", "Illegal notification"
        click = notification.get("click_action")
        if not isinstance(click, dict) or click.get("type") not in (1, 2, 3, 4):
            return "80100003", "click_action is mandatory for notification messages"
    if size > MAX_BODY_BYTES:
        return "80300008", "The message body size exceeds the default value"
    return None
