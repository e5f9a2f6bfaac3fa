"""Web Push channel (RFC 8030): aes128gcm bodies (RFC 8291/8188), VAPID auth (RFC 8292), one status table.

The device token of a Web Push device is its subscription, stored in ``devices.token`` as the
compact JSON a browser's ``PushSubscription.toJSON()`` produces::

    {"endpoint":"https://push.example/wpush/v2/…","keys":{"p256dh":"<b64url 65 B>","auth":"<b64url 16 B>"}}

The endpoint's origin is the push service (the "vendor host") and the VAPID ``aud``.

Vendor docs:
    https://www.rfc-editor.org/rfc/rfc8030  https://www.rfc-editor.org/rfc/rfc8291
    https://www.rfc-editor.org/rfc/rfc8292  https://www.rfc-editor.org/rfc/rfc8188
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import http_ece
import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from engine.clock import Clock
from engine.config import WebPushConfig
from engine.domain import Outcome, PushMessage, Receipt
from engine.errors import AuthError, ConfigError
from engine.push.auth import fingerprint
from engine.push.base import HttpChannel, parse_retry_after, repeat_key, tls_context, transport_receipt

__all__ = ["MAX_BODY", "STATUSES", "URGENCY", "Subscription", "VapidSigner", "WebPushChannel", "b64url",
           "build_request", "encrypt", "parse_response", "parse_subscription", "subscription_token", "topic"]

log = logging.getLogger(__name__)

#: Push services must accept bodies up to 4096 bytes (RFC 8030 §7.2), encryption framing included.
MAX_BODY = 4096
RECORD_SIZE = 4096

#: HTTP status of the push service → Outcome (RFC 8030 §5–8, VENDORS.md §9), mapped once.
STATUSES: dict[int, Outcome] = {
    200: Outcome.DELIVERED, 201: Outcome.DELIVERED, 202: Outcome.DELIVERED,
    400: Outcome.REJECTED_PAYLOAD,
    401: Outcome.AUTH_ERROR, 403: Outcome.AUTH_ERROR,   # VAPID refused: re-signed and retried once first
    404: Outcome.INVALID_TOKEN, 410: Outcome.INVALID_TOKEN,
    413: Outcome.REJECTED_PAYLOAD,
    429: Outcome.RATE_LIMITED,
}

#: Message class → ``Urgency`` header (RFC 8030 §5.3).
URGENCY: dict[str, str] = {"transactional": "high", "marketing": "normal"}

_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")


def b64url(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Subscription:
    """A browser push subscription: endpoint URL, UA public key (65 B) and auth secret (16 B)."""

    endpoint: str
    p256dh: bytes
    auth: bytes

    @property
    def origin(self) -> str:
        parts = urlsplit(self.endpoint)
        return f"{parts.scheme}://{parts.netloc}"

    def __repr__(self) -> str:  # the endpoint is a bearer capability: never print it whole
        return f"Subscription(origin={self.origin!r}, fp={fingerprint(self.endpoint)})"


def endpoint_allowed(endpoint: str, hosts: Sequence[str]) -> bool:
    """Whether ``endpoint``'s host is one of ``hosts`` (``"*.domain"`` covers the subdomains of domain)."""
    host = (urlsplit(endpoint).hostname or "").lower().rstrip(".")
    return bool(host) and any(host == h or (h.startswith("*.") and host.endswith(h[1:])) for h in hosts)


def subscription_token(endpoint: str, p256dh: bytes, auth: bytes) -> str:
    """The ``devices.token`` string for a subscription (compact ``PushSubscription.toJSON()``)."""
    return json.dumps({"endpoint": endpoint, "keys": {"p256dh": b64url(p256dh), "auth": b64url(auth)}},
                      separators=(",", ":"))


def parse_subscription(token: str) -> Subscription:
    """Parse a ``devices.token`` subscription.

    Raises:
        ValueError: not that JSON shape, an endpoint that is not https, or keys of the wrong size.
    """
    try:
        data = json.loads(token)
        endpoint, keys = data["endpoint"], data["keys"]
        p256dh, auth = _unb64(keys["p256dh"]), _unb64(keys["auth"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError("web push token is not a subscription JSON") from exc
    if not isinstance(endpoint, str) or urlsplit(endpoint).scheme != "https":
        raise ValueError("web push endpoint must be an https URL")
    if len(p256dh) != 65 or p256dh[0] != 4 or len(auth) != 16:
        raise ValueError("web push keys must be a 65-byte P-256 point and a 16-byte auth secret")
    return Subscription(endpoint, p256dh, auth)


def encrypt(plaintext: bytes, sub: Subscription, *, salt: bytes | None = None,
            sender_key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    """The RFC 8291 aes128gcm body: 86-byte header (salt, rs, keyid = sender public key) + one record.

    ``salt`` and ``sender_key`` are fresh per message unless given (golden tests).
    """
    return http_ece.encrypt(plaintext, salt=salt or os.urandom(16),
                            private_key=sender_key or ec.generate_private_key(ec.SECP256R1()),
                            dh=sub.p256dh, auth_secret=sub.auth, version="aes128gcm", rs=RECORD_SIZE)


def topic(key: str) -> str:
    """The ``Topic`` header (≤ 32 URL-safe base64 characters) for a collapse or send id: the key itself
    when it fits, its UUID hex when it is a UUID, else 32 characters of its SHA-256 in base64url.
    A pending message with the same topic is replaced at the push service (RFC 8030 §5.4)."""
    if _TOPIC.fullmatch(key):
        return key
    try:
        return uuid.UUID(key).hex
    except ValueError:
        return base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()).decode()[:32]


def build_request(msg: PushMessage, vapid: str, *, salt: bytes | None = None,
                  sender_key: ec.EllipticCurvePrivateKey | None = None) -> tuple[str, dict[str, str], bytes]:
    """(endpoint URL, headers, encrypted body) for one message; pure given ``salt``/``sender_key``.

    The plaintext is ``{"send_id","title","body","data"}`` as compact JSON.

    Raises:
        ValueError: the token is not a subscription, or the body would exceed 4096 bytes.
    """
    sub = parse_subscription(msg.token)
    plain = json.dumps({"send_id": msg.send_id, "title": msg.title, "body": msg.body, "data": msg.data},
                       ensure_ascii=False, separators=(",", ":")).encode()
    body = encrypt(plain, sub, salt=salt, sender_key=sender_key)
    if len(body) > MAX_BODY:
        raise ValueError(f"web push body is {len(body)} bytes after encryption, over {MAX_BODY}")
    headers = {"content-encoding": "aes128gcm", "content-type": "application/octet-stream",
               "ttl": str(max(0, msg.ttl_seconds)), "urgency": URGENCY[msg.message_class],
               "authorization": vapid}
    headers["topic"] = topic(repeat_key([msg]) or msg.send_id)
    return sub.endpoint, headers, body


def parse_response(status: int, headers: Mapping[str, str], body: bytes, send_id: str,
                   now: datetime | None = None) -> Receipt:
    """Classify one push-service answer through `STATUSES` (other 4xx rejected, 5xx transient)."""
    lower = {k.lower(): v for k, v in headers.items()}
    outcome = STATUSES.get(status) or (Outcome.REJECTED_PAYLOAD if 400 <= status < 500 else Outcome.TRANSIENT)
    if outcome is Outcome.DELIVERED:
        return Receipt(send_id, outcome, status_code=status, vendor_message_id=lower.get("location"))
    return Receipt(send_id, outcome, status_code=status, reason=f"http_{status}",
                   retry_after=parse_retry_after(lower.get("retry-after"), now or datetime.now(UTC)))


class VapidSigner:
    """Mints ES256 VAPID JWTs per push-service origin and caches each until an hour before ``exp``.

    Args:
        key_pem: the P-256 private key, PEM.
        subject: ``mailto:`` or ``https:`` contact (Apple refuses anything else).
        clock: source of ``exp``.

    Raises:
        AuthError: the key is not a P-256 private key.
        ConfigError: the subject is not ``mailto:``/``https:``.
    """

    LIFETIME = timedelta(hours=12)
    MARGIN = timedelta(hours=1)

    def __init__(self, key_pem: bytes, subject: str, clock: Clock) -> None:
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError):
            raise AuthError("VAPID private key cannot be loaded") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise AuthError("VAPID private key must be a P-256 key")
        if not subject.startswith(("mailto:", "https:")):
            raise ConfigError("vendors.webpush.vapid_subject must start with mailto: or https:")
        self._key, self.subject, self._clock = key, subject, clock
        point = key.public_key().public_bytes(serialization.Encoding.X962,
                                              serialization.PublicFormat.UncompressedPoint)
        self.public_key = b64url(point)
        self._cache: dict[str, tuple[str, datetime]] = {}
        self.mints = 0

    def header(self, origin: str) -> str:
        """``vapid t=<jwt>, k=<public key>`` for ``origin``."""
        now = self._clock.now()
        cached = self._cache.get(origin)
        if cached is None or now >= cached[1]:
            exp = now + self.LIFETIME
            token = jwt.encode({"aud": origin, "exp": int(exp.timestamp()), "sub": self.subject},
                               self._key, algorithm="ES256")
            cached = self._cache[origin] = (token, exp - self.MARGIN)
            self.mints += 1
        return f"vapid t={cached[0]}, k={self.public_key}"

    def invalidate(self, origin: str) -> None:
        self._cache.pop(origin, None)


class WebPushChannel(HttpChannel):
    """Sends each message to its subscription's endpoint, encrypted, with a per-origin VAPID JWT.

    Args:
        config: the ``[vendors.webpush]`` section (vapid key file, subject, ca_file, concurrency).
        clock: the injected clock.
        transport: an httpx transport instead of the network (tests).
        timeout: seconds for connect/read/write/pool.

    Raises:
        ConfigError: the key file cannot be read or the subject is unusable.
        AuthError: the key is not P-256.
    """

    vendor = "webpush"

    def __init__(self, config: WebPushConfig, clock: Clock, transport: httpx.AsyncBaseTransport | None = None,
                 *, timeout: float = 10.0) -> None:
        try:
            key_pem = Path(config.vapid_private_key_file).read_bytes()
        except OSError as exc:
            raise ConfigError(f"vendors.webpush.vapid_private_key_file cannot be read: {exc.strerror}") from None
        self.vapid = VapidSigner(key_pem, config.vapid_subject, clock)
        client = httpx.AsyncClient(http2=True, verify=tls_context(config.ca_file), transport=transport,
                                   timeout=timeout)
        super().__init__(client, clock, config.concurrency)
        self.hosts = config.endpoint_hosts()

    async def _attempt(self, msg: PushMessage) -> tuple[Receipt, str | None]:
        now = self._clock.now()
        try:
            sub = parse_subscription(msg.token)
            if not endpoint_allowed(sub.endpoint, self.hosts):
                # stored before the allow-list or since narrowed: never post to a host nobody approved
                return Receipt(msg.send_id, Outcome.REJECTED_PAYLOAD,
                               reason="endpoint is not on an allowed push service (vendors.webpush.allowed_hosts)"), None
            origin = sub.origin
            url, headers, body = build_request(msg, self.vapid.header(origin))
        except (KeyError, ValueError) as exc:
            return Receipt(msg.send_id, Outcome.REJECTED_PAYLOAD, reason=f"build: {exc}"), None
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return transport_receipt(msg.send_id, exc), origin
        return self._parse(response.status_code, response.headers, response.content, msg.send_id, now), origin

    async def _credential(self) -> str:
        return ""

    def _authorization(self, credential: str) -> str:
        return credential

    def _invalidate(self, credential: str) -> None:
        self.vapid.invalidate(credential)   # the "credential" of an attempt is the origin it signed for

    def _request(self, msg: PushMessage, now: datetime) -> tuple[str, dict[str, str], bytes]:
        return build_request(msg, self.vapid.header(parse_subscription(msg.token).origin))

    def _parse(self, status: int, headers: Mapping[str, str], body: bytes, send_id: str, now: datetime) -> Receipt:
        return parse_response(status, headers, body, send_id, now)

    def _needs_refresh(self, receipt: Receipt) -> bool:
        return receipt.status_code in (401, 403)
