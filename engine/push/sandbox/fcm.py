"""A loopback FCM HTTP v1 API and Google OAuth2 token endpoint that enforce the real protocols.

``POST /token`` takes the JWT-bearer grant (RS256 assertion verified against the registered
service account's public key) and issues opaque access tokens with a configurable lifetime.
``POST /v1/projects/{p}/messages:send`` checks the bearer token, the message shape (exactly one
target, string-only ``data``, reserved keys, Android priority/ttl, size) and answers errors in
Google's shape: ``{"error": {"code", "message", "status", "details": [FcmError / ErrorInfo /
BadRequest]}}``.

Vendor docs:
    https://firebase.google.com/docs/reference/fcm/rest/v1/projects.messages
    https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode
    https://developers.google.com/identity/protocols/oauth2/service-account#httprest
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization

from engine.clock import Clock
from engine.push.auth import FCM_SCOPE, JWT_BEARER
from engine.push.sandbox.common import Accepted, VendorSandbox, key_of
from engine.push.sandbox.server import Request, Response

__all__ = ["GOOGLE_TOKEN_URI", "FcmSandbox", "google_error"]

#: google-auth always signs for this audience, whatever token_uri says; Google accepts it.
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
_SEND = re.compile(r"/v1/projects/([^/]+)/messages:send")
_FCM_TOKEN = re.compile(r"[A-Za-z0-9_:\-]{100,4096}")
_DURATION = re.compile(r"\d{1,10}(\.\d{1,9})?s")
_RESERVED = frozenset({"from", "notification", "message_type"})
_STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
_FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_UNAUTHENTICATED = ("Request had invalid authentication credentials. Expected OAuth 2 access token, login "
                    "cookie or other valid authentication credential.")
_BAD_JWT_TIME = ("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
                 "Check your iat and exp values in the JWT claim.")


def google_error(code: int, message: str, *details: dict[str, Any], status: str | None = None) -> Response:
    """A Google API error response: ``{"error": {"code", "message", "status", "details"}}``."""
    error = {"code": code, "message": message, "status": status or _STATUS_NAMES.get(code, "UNKNOWN"),
             "details": list(details)}
    return Response.json(code, {"error": error})


def _fcm_error(code: int, message: str, error_code: str, field: str | None = None) -> Response:
    details: list[dict[str, Any]] = [{"@type": _FCM_ERROR, "errorCode": error_code}]
    if field:
        details.append({"@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": [{"field": field, "description": message}]})
    return google_error(code, message, *details)


def _auth_error(reason: str) -> Response:
    return google_error(401, _UNAUTHENTICATED, {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "googleapis.com",
        "metadata": {"service": "fcm.googleapis.com", "method": "google.firebase.fcm.v1.FcmService.SendMessage"}})


@dataclass(frozen=True)
class _Account:
    email: str
    project_id: str
    public_key: Any


class FcmSandbox(VendorSandbox):
    """The FCM + OAuth handler.

    Args:
        clock: sandbox time (assertion validity, access-token expiry, acceptance times).
        access_token_ttl: ``expires_in`` of issued access tokens, seconds (short to test refresh).
        project_per_minute: send requests per project per minute (FCM's default 600,000; None =
            unlimited). Beyond it: 429 RESOURCE_EXHAUSTED / QUOTA_EXCEEDED with ``Retry-After`` to the
            end of the minute. Every authenticated send counts, client errors included; 429s do not.
        device_per_minute: messages per device token per minute (FCM: 240 for Android; None = unlimited),
            answered the same way.

    Attributes:
        token_uri: this sandbox's token endpoint URL (set when the server starts); assertions must
            name it, or Google's canonical endpoint, as ``aud``.
        known_tokens: when not None, device tokens outside it answer 404 UNREGISTERED.
    """

    vendor = "fcm"

    def idempotency_key(self, item: Accepted) -> str:
        """FCM has no idempotency key; the notification tag (and apns-collapse-id) replace on the device."""
        android = item.payload.get("android") or {}
        note = android.get("notification") or {}
        apns = (item.payload.get("apns") or {}).get("headers") or {}
        return key_of(tag=note.get("tag"), collapse_key=android.get("collapse_key"),
                      apns_collapse_id=apns.get("apns-collapse-id"))

    def __init__(self, clock: Clock | None = None, *, access_token_ttl: int = 3599,
                 project_per_minute: int | None = 600_000, device_per_minute: int | None = 240) -> None:
        super().__init__(clock)
        self.access_token_ttl = access_token_ttl
        self.project_per_minute, self.device_per_minute = project_per_minute, device_per_minute
        self._minute = -1                       # the sandbox-clock minute the counters below belong to
        self._project_used: Counter[str] = Counter()
        self._device_used: Counter[str] = Counter()
        self.token_uri = ""
        self.known_tokens: set[str] | None = None
        self._accounts: dict[str, _Account] = {}
        self._access: dict[str, tuple[_Account, datetime]] = {}

    def register_service_account(self, info: dict[str, Any]) -> None:
        """Trust ``info``'s key (by ``private_key_id``) for ``client_email`` and its ``project_id``."""
        key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
        with self._lock:
            self._accounts[info["private_key_id"]] = _Account(info["client_email"], info["project_id"],
                                                               key.public_key())

    def _target(self, request: Request) -> str | None:
        if request.path == "/token":
            return "token"
        return "send" if _SEND.fullmatch(request.path) else None

    def _error(self, status: int, reason: str, target: str) -> Response:
        if target == "token":
            return Response.json(status, {"error": reason or "internal_failure", "error_description": "injected"})
        if reason == "ACCESS_TOKEN_EXPIRED":
            return _auth_error(reason)
        return _fcm_error(status, f"injected {reason}", reason or _STATUS_NAMES.get(status, "UNSPECIFIED_ERROR"))

    def _route(self, request: Request) -> Response:
        if request.path == "/token":
            if request.method != "POST":
                return Response.json(405, {"error": "invalid_request", "error_description": "POST only"})
            return self._grant(request)
        match = _SEND.fullmatch(request.path)
        if match is None:
            return google_error(404, f"Requested entity was not found: {request.path}")
        if request.method != "POST":
            return google_error(405, "Method not allowed.", status="UNIMPLEMENTED")
        return self._send(request, match.group(1))

    # -- OAuth2 JWT-bearer grant ----------------------------------------------------------------

    def _grant(self, request: Request) -> Response:
        form = parse_qs(request.body.decode("utf-8", "replace"))
        grant_type, assertion = form.get("grant_type", [""])[0], form.get("assertion", [""])[0]
        if grant_type != JWT_BEARER:
            return self._grant_error("unsupported_grant_type", f"Invalid grant_type: {grant_type}")
        claims = self._verify_assertion(assertion)
        if isinstance(claims, Response):
            return claims
        account: _Account = claims["account"]
        token = "ya29.sandbox." + secrets.token_urlsafe(32)
        expires = self.clock.now() + timedelta(seconds=self.access_token_ttl)
        with self._lock:
            self._access[token] = (account, expires)
        self.count("token_grants")
        return Response.json(200, {"access_token": token, "expires_in": self.access_token_ttl,
                                   "token_type": "Bearer"})

    def _grant_error(self, error: str, description: str) -> Response:
        self.count(f"grant_rejected:{error}")
        return Response.json(400, {"error": error, "error_description": description})

    def _verify_assertion(self, assertion: str) -> dict[str, Any] | Response:
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            return self._grant_error("invalid_request", "Invalid assertion format")
        with self._lock:
            account = self._accounts.get(str(header.get("kid")))
        if account is None or header.get("alg") != "RS256":
            return self._grant_error("invalid_grant", "Invalid JWT Signature.")
        try:
            claims = jwt.decode(assertion, account.public_key, algorithms=["RS256"],
                                audience=[self.token_uri, GOOGLE_TOKEN_URI],
                                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False})
        except jwt.InvalidAudienceError:
            return self._grant_error("invalid_grant", "Invalid JWT: Failed audience check.")
        except jwt.PyJWTError:
            return self._grant_error("invalid_grant", "Invalid JWT Signature.")
        if claims.get("iss") != account.email:
            return self._grant_error("invalid_grant", "Invalid email or User ID")
        iat, exp, now = claims.get("iat"), claims.get("exp"), self.clock.now().timestamp()
        if not isinstance(iat, int) or not isinstance(exp, int) or not iat < exp <= iat + 3600:
            return self._grant_error("invalid_grant", _BAD_JWT_TIME)
        if exp < now or iat > now + 300:
            return self._grant_error("invalid_grant", _BAD_JWT_TIME)
        scopes = str(claims.get("scope", "")).split()
        if FCM_SCOPE not in scopes and "https://www.googleapis.com/auth/cloud-platform" not in scopes:
            return self._grant_error("invalid_scope", "The scope does not allow FCM sends.")
        return {**claims, "account": account}

    # -- messages:send --------------------------------------------------------------------------

    def _send(self, request: Request, project: str) -> Response:
        auth = request.header("authorization") or ""
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return self._reject(_auth_error("CREDENTIALS_MISSING"), "CREDENTIALS_MISSING")
        with self._lock:
            entry = self._access.get(token.strip())
        if entry is None:
            return self._reject(_auth_error("ACCESS_TOKEN_TYPE_UNSUPPORTED"), "ACCESS_TOKEN_TYPE_UNSUPPORTED")
        account, expires = entry
        if self.clock.now() >= expires:
            return self._reject(_auth_error("ACCESS_TOKEN_EXPIRED"), "ACCESS_TOKEN_EXPIRED")
        if account.project_id != project:
            return self._reject(google_error(403, f"Permission 'cloudmessaging.messages.create' denied on "
                                                  f"resource '//cloudresourcemanager.googleapis.com/projects/{project}'"),
                                "PERMISSION_DENIED")
        try:
            body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            body = None
        message = body.get("message") if isinstance(body, dict) else None
        throttled = self._throttle(project, message.get("token") if isinstance(message, dict) else None)
        if throttled is not None:
            return throttled
        if body is None:
            return self._reject(google_error(400, "Invalid JSON payload received."), "INVALID_ARGUMENT")
        if not isinstance(message, dict):
            return self._reject(_fcm_error(400, "Request contains an invalid argument.", "INVALID_ARGUMENT",
                                           "message"), "INVALID_ARGUMENT")
        problem = _check_message(message)
        if problem is not None:
            return self._reject(_fcm_error(400, problem[1], "INVALID_ARGUMENT", problem[0]), "INVALID_ARGUMENT")
        device = message.get("token")
        if device is not None:
            gone = self.unregistered_at(device) is not None
            if gone or (self.known_tokens is not None and device not in self.known_tokens):
                return self._reject(_fcm_error(404, "Requested entity was not found.", "UNREGISTERED"),
                                    "UNREGISTERED")
        name = f"projects/{project}/messages/0:{int(time.time() * 1000)}%{secrets.token_hex(8)}"
        headers = {k: v for k, v in request.headers if k != "authorization"}
        self.record(Accepted("fcm", str(device or message.get("topic") or message.get("condition")), name,
                             headers, message, self.clock.now(), request.connection.id))
        return Response.json(200, {"name": name})

    def _reject(self, response: Response, reason: str) -> Response:
        self.count(f"rejected:{reason}")
        return response

    def _throttle(self, project: str, device: object) -> Response | None:
        """429 QUOTA_EXCEEDED when the project's or the device's messages this minute are used up."""
        now = self.clock.now()
        minute = int(now.timestamp()) // 60
        with self._lock:
            if minute != self._minute:
                self._minute = minute
                self._project_used.clear()
                self._device_used.clear()
            over = self.project_per_minute is not None and self._project_used[project] >= self.project_per_minute
            if not over and isinstance(device, str) and self.device_per_minute is not None:
                over = self._device_used[device] >= self.device_per_minute
                if not over:
                    self._device_used[device] += 1
            if not over:
                self._project_used[project] += 1
        if not over:
            return None
        wait = str(max(1, 60 * (minute + 1) - int(now.timestamp())))
        response = self._reject(_fcm_error(429, "Quota exceeded for quota metric 'Send requests'.",
                                           "QUOTA_EXCEEDED"), "QUOTA_EXCEEDED")
        return replace(response, headers=(*response.headers, ("retry-after", wait)))


def _check_message(message: dict[str, Any]) -> tuple[str, str] | None:
    """(field, description) of the first problem in an FCM ``message``, or None."""
    targets = [k for k in ("token", "topic", "condition") if message.get(k)]
    if len(targets) != 1:
        return "message", "Exactly one of token, topic or condition must be specified."
    token = message.get("token")
    if token is not None and (not isinstance(token, str) or not _FCM_TOKEN.fullmatch(token)):
        return "message.token", "The registration token is not a valid FCM registration token"
    data = message.get("data", {})
    if not isinstance(data, dict):
        return "message.data", "Invalid value at 'message.data' (type.googleapis.com/google.protobuf.Struct)"
    for i, (key, value) in enumerate(data.items()):
        if not isinstance(value, str):
            field = f"message.data[{i}].value"
            return field, f"Invalid value at '{field}' (TYPE_STRING), {value!r}"
        if key in _RESERVED or key.lower().startswith(("google", "gcm")):
            return "message.data", f"Invalid data payload key: {key}"
    android = message.get("android", {})
    if not isinstance(android, dict):
        return "message.android", "Invalid value at 'message.android'"
    if android.get("priority", "NORMAL") not in ("NORMAL", "HIGH"):
        return "message.android.priority", (
            f"Invalid value at 'message.android.priority', {android['priority']!r}")
    if "ttl" in android and not (isinstance(android["ttl"], str) and _DURATION.fullmatch(android["ttl"])):
        return "message.android.ttl", "Invalid value at 'message.android.ttl' (google.protobuf.Duration)"
    content = {k: message[k] for k in ("notification", "data") if k in message}
    if "notification" in android:
        content["android_notification"] = android["notification"]
    limit = 2048 if message.get("topic") else 4096
    if len(json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode()) > limit:
        return "message", "Android message is too big"
    return None
