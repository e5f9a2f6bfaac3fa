"""A loopback APNs provider API that enforces Apple's protocol (token auth, headers, payload, 410s).

It checks what Apple documents and what APNSwift's validating mock checks: POST
``/3/device/<token>`` only, an ES256 provider JWT from a registered key with a numeric ``iat`` at
most an hour old, at most one provider-token change per connection every 20 minutes, the
``apns-*`` headers, a JSON payload with ``aps`` of at most 4096 bytes (5120 for VoIP). Reasons
come back as ``{"reason": ...}`` with the status Apple uses. ``BadPayload`` (malformed JSON or no
``aps``) is the sandbox's own reason: Apple documents none for it.

Vendor docs:
    https://developer.apple.com/documentation/usernotifications/sending-notification-requests-to-apns
    https://developer.apple.com/documentation/usernotifications/handling-notification-responses-from-apns
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from engine.clock import Clock
from engine.push.sandbox.common import Accepted, VendorSandbox, key_of
from engine.push.sandbox.server import Request, Response

__all__ = ["PUSH_TYPE_SUFFIX", "ApnsSandbox"]

#: apns-push-type → the suffix Apple requires on apns-topic.
PUSH_TYPE_SUFFIX: dict[str, str] = {
    "alert": "", "background": "", "mdm": "", "widgets": "", "controls": "",
    "voip": ".voip", "complication": ".complication", "fileprovider": ".pushkit.fileprovider",
    "liveactivity": ".push-type.liveactivity", "location": ".location-query", "pushtotalk": ".voip-ptt",
}
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TOKEN = re.compile(r"[0-9a-fA-F]{64}")
_PREFIX = "/3/device/"
_TOKEN_MAX_AGE = 3600
_TOKEN_MIN_CHANGE = 1200
_CLOCK_LEEWAY = 60
_UNIQUE_HEADERS = frozenset({"authorization", "apns-id", "apns-topic", "apns-push-type", "apns-priority",
                             "apns-expiration", "apns-collapse-id"})


class ApnsSandbox(VendorSandbox):
    """The APNs handler.

    Args:
        topic: the bundle id the registered keys may push to.
        clock: sandbox time (JWT age, 20-minute rule, acceptance times).
        development: emit ``apns-unique-id`` like Apple's development environment does.
    """

    vendor = "apns"

    def idempotency_key(self, item: Accepted) -> str:
        """APNs keeps no memory of apns-id; apns-collapse-id makes the device show the latest copy only."""
        h = item.headers
        return key_of(apns_id=h.get("apns-id"), apns_collapse_id=h.get("apns-collapse-id"))

    def __init__(self, topic: str, clock: Clock | None = None, *, development: bool = True) -> None:
        super().__init__(clock)
        self.topic = topic
        self.development = development
        self._keys: dict[tuple[str, str], ec.EllipticCurvePublicKey] = {}
        self._verified: dict[str, tuple[str, str, int]] = {}

    def register_key(self, team_id: str, key_id: str, public_key: ec.EllipticCurvePublicKey) -> None:
        """Accept provider tokens signed by ``public_key``'s private half for (team, key id)."""
        with self._lock:
            self._keys[(team_id, key_id)] = public_key

    def _target(self, request: Request) -> str | None:
        return "send" if request.path.startswith(_PREFIX) else None

    def _error(self, status: int, reason: str, target: str) -> Response:
        # Injected errors carry no apns-id on purpose: real 5xx answers may lack it (aioapns #19).
        return Response.json(status, {"reason": reason})

    def _reject(self, status: int, reason: str, apns_id: str | None, **extra: Any) -> Response:
        self.count(f"rejected:{reason}")
        headers = (("apns-id", apns_id),) if apns_id else ()
        return Response.json(status, {"reason": reason, **extra}, headers)

    def _route(self, request: Request) -> Response:
        apns_id = request.header("apns-id")
        echo = apns_id if apns_id and _UUID.fullmatch(apns_id) else None
        if request.method != "POST":
            return self._reject(405, "MethodNotAllowed", echo)
        if not request.path.startswith(_PREFIX):
            return self._reject(404, "BadPath", echo)
        token = request.path[len(_PREFIX):].split("?", 1)[0]
        if not token:
            return self._reject(400, "MissingDeviceToken", echo)
        names = [k for k, _ in request.headers if k in _UNIQUE_HEADERS]
        if len(names) != len(set(names)):
            return self._reject(400, "DuplicateHeaders", echo)
        problem = self._check_auth(request) or self._check_headers(request)
        if problem is not None:
            return self._reject(problem[0], problem[1], echo)
        if not _TOKEN.fullmatch(token):
            return self._reject(400, "BadDeviceToken", echo)
        payload = self._check_payload(request)
        if isinstance(payload, tuple):
            return self._reject(payload[0], payload[1], echo)
        gone = self.unregistered_at(token)
        if gone is not None:
            return self._reject(410, "Unregistered", echo, timestamp=int(gone.timestamp() * 1000))
        apns_id = apns_id or str(uuid.uuid4())
        headers = {k: v for k, v in request.headers if k != "authorization"}
        self.record(Accepted("apns", token, apns_id, headers, payload, self.clock.now(), request.connection.id))
        out = [("apns-id", apns_id)]
        if self.development:
            out.append(("apns-unique-id", str(uuid.uuid4())))
        return Response(200, tuple(out))

    def _check_auth(self, request: Request) -> tuple[int, str] | None:
        value = request.header("authorization")
        if not value:
            return 403, "MissingProviderToken"
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return 403, "InvalidProviderToken"
        verified = self._verify(token.strip())
        if verified is None:
            return 403, "InvalidProviderToken"
        _team, kid, iat = verified
        now = int(self.clock.now().timestamp())
        conn = request.connection.state
        if now - iat > _TOKEN_MAX_AGE:
            if conn.get("token") == token:
                conn["token_expired"] = True
            return 403, "ExpiredProviderToken"
        if iat > now + _CLOCK_LEEWAY:
            return 403, "InvalidProviderToken"
        if conn.setdefault("kid", kid) != kid:
            return 403, "UnrelatedKeyIdInToken"
        current = conn.get("token")
        if current is None:
            conn.update(token=token, token_at=now, token_expired=False)
        elif current != token:
            if not conn.get("token_expired") and now - conn["token_at"] < _TOKEN_MIN_CHANGE:
                return 429, "TooManyProviderTokenUpdates"
            conn.update(token=token, token_at=now, token_expired=False)
            self.count("provider_token_changes")
        return None

    def _verify(self, token: str) -> tuple[str, str, int] | None:
        """(team id, key id, iat) of a correctly signed provider token, cached by token string."""
        with self._lock:
            cached = self._verified.get(token)
        if cached is not None:
            return cached
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return None
        team, kid, iat = claims.get("iss"), header.get("kid"), claims.get("iat")
        if header.get("alg") != "ES256" or not isinstance(kid, str) or not isinstance(team, str):
            return None
        if not isinstance(iat, int) or isinstance(iat, bool):  # a string iat is a classic client bug
            return None
        with self._lock:
            key = self._keys.get((team, kid))
        if key is None:
            return None
        try:
            jwt.decode(token, key, algorithms=["ES256"],
                       options={"verify_exp": False, "verify_iat": False, "verify_nbf": False})
        except jwt.PyJWTError:
            return None
        with self._lock:
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[token] = (team, kid, iat)
        return team, kid, iat

    def _check_headers(self, request: Request) -> tuple[int, str] | None:
        topic = request.header("apns-topic")
        if not topic:
            return 400, "MissingTopic"
        push_type = request.header("apns-push-type") or "alert"
        if push_type not in PUSH_TYPE_SUFFIX:
            return 400, "InvalidPushType"
        if topic != self.topic + PUSH_TYPE_SUFFIX[push_type]:
            return (400, "InvalidPushType") if topic.startswith(self.topic) else (400, "TopicDisallowed")
        apns_id = request.header("apns-id")
        if apns_id is not None and not _UUID.fullmatch(apns_id):
            return 400, "BadMessageId"
        priority = request.header("apns-priority")
        if priority is not None and (priority not in ("10", "5", "1") or
                                     (push_type == "background" and priority == "10")):
            return 400, "BadPriority"
        expiration = request.header("apns-expiration")
        if expiration is not None and not expiration.isdigit():
            return 400, "BadExpirationDate"
        collapse = request.header("apns-collapse-id")
        if collapse is not None and len(collapse.encode()) > 64:
            return 400, "BadCollapseId"
        return None

    def _check_payload(self, request: Request) -> dict[str, Any] | tuple[int, str]:
        if not request.body:
            return 400, "PayloadEmpty"
        limit = 5120 if request.header("apns-push-type") == "voip" else 4096
        if len(request.body) > limit:
            return 413, "PayloadTooLarge"
        try:
            payload = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            return 400, "BadPayload"
        if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
            return 400, "BadPayload"
        return payload
