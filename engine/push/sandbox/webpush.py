"""A loopback Web Push service (RFC 8030) that checks VAPID, decrypts aes128gcm bodies, and keeps them.

``new_subscription()`` generates a subscription (UA key pair + auth secret) whose endpoint is
``<base_url>/wpush/v2/<id>``; ``POST`` to it checks ``TTL`` (400 when missing), ``Urgency``,
``Topic``, ``Content-Encoding: aes128gcm`` without legacy ``Encryption``/``Crypto-Key: dh=``
headers (400, VENDORS.md §13 #18), the aes128gcm header block, the 4096-byte limit (413), and the
``vapid t=…, k=…`` JWT (ES256 with ``k``, ``aud`` = this origin, ``exp`` ≤ 24 h ahead, ``sub``
``mailto:``/``https:``; 403 otherwise). It decrypts the body with the subscription's private key
and keeps the plaintext. Unknown subscriptions answer 404, unregistered ones 410.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import secrets
import struct
from pathlib import Path
from typing import Any

import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from engine.clock import Clock
from engine.push.sandbox.common import Accepted, VendorSandbox, key_of
from engine.push.sandbox.server import Request, Response
from engine.push.webpush import b64url, subscription_token

__all__ = ["WebPushSandbox", "ensure_vapid_key", "new_webpush_subscription", "subscription_keys"]

_PATH = re.compile(r"/wpush/v2/([A-Za-z0-9_-]{8,128})")
_URGENCY = frozenset({"very-low", "low", "normal", "high"})
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")
_VAPID = re.compile(r"vapid\s+t=([^,\s]+)\s*,\s*k=([A-Za-z0-9_-]+)\s*", re.IGNORECASE)
_CURVE_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def subscription_keys(sub_id: str) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """The browser-side secrets of sandbox subscription ``sub_id``: UA private key and auth secret.

    They are derived from the endpoint id, so the sandbox can play the browser and decrypt any
    subscription made by `new_webpush_subscription` without being told about it first (a sandbox
    convenience: real push services never see these keys).
    """
    scalar = int.from_bytes(hashlib.sha256(b"pushwise-sandbox-ua-key:" + sub_id.encode()).digest()) % (_CURVE_ORDER - 1)
    auth = hashlib.sha256(b"pushwise-sandbox-auth:" + sub_id.encode()).digest()[:16]
    return ec.derive_private_key(scalar + 1, ec.SECP256R1()), auth


def new_webpush_subscription(rng: random.Random, base_url: str) -> tuple[str, ec.EllipticCurvePrivateKey, bytes]:
    """A subscription on the sandbox at ``base_url``, determined by ``rng``.

    Returns:
        ``(token, ua_private_key, auth_secret)``: the ``devices.token`` JSON, and the secrets a
        browser would keep (to decrypt what is pushed).
    """
    sub_id = b64url(rng.randbytes(24))
    key, auth = subscription_keys(sub_id)
    point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return subscription_token(f"{base_url}/wpush/v2/{sub_id}", point, auth), key, auth


class WebPushSandbox(VendorSandbox):
    """The push-service handler.

    Args:
        clock: sandbox time (JWT ``exp`` checks, acceptance times).
        rate_limit: pushes per sandbox-clock second before 429 (``Retry-After: 1``); None = unlimited.
        max_ttl: TTL cap echoed in the ``TTL`` response header (seconds).

    Attributes:
        base_url: the origin subscriptions point at (set when the server starts).
        known_tokens: when not None, subscriptions (token JSON) outside it answer 404.
    """

    vendor = "webpush"

    def idempotency_key(self, item: Accepted) -> str:
        """A push service replaces a pending message with the same Topic (RFC 8030 §5.4)."""
        return key_of(topic=item.headers.get("topic"))

    def __init__(self, clock: Clock | None = None, *, rate_limit: int | None = None,
                 max_ttl: int = 2_419_200) -> None:
        super().__init__(clock)
        self.base_url = ""
        self.rate_limit, self.max_ttl = rate_limit, max_ttl
        self.known_tokens: set[str] | None = None
        self._second: tuple[int, int] = (0, 0)
        self._rng = random.Random(secrets.randbits(64))

    def new_token(self, rng: random.Random | None = None) -> str:
        """A subscription on this sandbox (its ``devices.token`` JSON)."""
        return new_webpush_subscription(rng or self._rng, self.base_url)[0]

    new_subscription = new_token

    def _target(self, request: Request) -> str | None:
        return "send" if _PATH.fullmatch(request.path) else None

    def _error(self, status: int, reason: str, target: str) -> Response:
        return Response.json(status, {"code": status, "errno": 999, "error": reason or "injected",
                                      "message": reason or "injected"})

    def _reject(self, status: int, message: str) -> Response:
        self.count(f"rejected:{status}")
        return Response.json(status, {"code": status, "error": message, "message": message})

    def _route(self, request: Request) -> Response:
        match = _PATH.fullmatch(request.path)
        if match is None:
            return self._reject(404, "no such endpoint")
        if request.method != "POST":
            return self._reject(405, "POST only")
        key, auth = subscription_keys(match.group(1))
        point = key.public_key().public_bytes(serialization.Encoding.X962,
                                              serialization.PublicFormat.UncompressedPoint)
        token = subscription_token(f"{self.base_url}{request.path}", point, auth)
        if self.known_tokens is not None and token not in self.known_tokens:
            return self._reject(404, "subscription not found")
        if self.unregistered_at(token) is not None:
            return self._reject(410, "subscription expired or unsubscribed")
        problem = self._check_vapid(request.header("authorization") or "")
        if problem is not None:
            return self._reject(403, problem)
        problem = _check_headers(request)
        if problem is not None:
            return self._reject(400, problem)
        if len(request.body) > 4096:
            return self._reject(413, "payload too large")
        problem = _check_block(request.body)
        if problem is not None:
            return self._reject(400, problem)
        try:
            plain = http_ece.decrypt(request.body, private_key=key, auth_secret=auth, version="aes128gcm")
        except Exception:   # http_ece raises bare ECEError/InvalidTag/ValueError: all mean "cannot decrypt"
            return self._reject(400, "body does not decrypt")
        if self.rate_limit is not None:
            second = int(self.clock.now().timestamp())
            with self._lock:
                self._second = (second, self._second[1] + 1 if self._second[0] == second else 1)
                over = self._second[1] > self.rate_limit
            if over:
                self.count("rejected:429")
                return Response.json(429, {"code": 429, "error": "Too Many Requests"}, (("retry-after", "1"),))
        payload: dict[str, Any]
        try:
            payload = json.loads(plain)
        except (ValueError, UnicodeDecodeError):
            payload = {"raw": plain.decode("latin-1")}
        message_id = secrets.token_urlsafe(12)
        headers = {k: v for k, v in request.headers if k != "authorization"}
        self.record(Accepted("webpush", token, message_id, headers, payload, self.clock.now(), request.connection.id))
        ttl = min(int(request.header("ttl") or 0), self.max_ttl)
        return Response(201, (("location", f"{self.base_url}/m/{message_id}"), ("ttl", str(ttl))))

    def _check_vapid(self, authorization: str) -> str | None:
        match = _VAPID.fullmatch(authorization)
        if match is None:
            return "missing or malformed vapid authorization"
        token, k = match.groups()
        try:
            point = _unb64(k)
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
            claims = jwt.decode(token, public, algorithms=["ES256"], audience=self.base_url,
                                options={"require": ["aud", "exp", "sub"], "verify_exp": False})
        except (ValueError, jwt.PyJWTError) as exc:
            return f"invalid JWT provided: {type(exc).__name__}"
        now = self.clock.now().timestamp()
        exp = claims["exp"]
        if not isinstance(exp, int) or exp <= now:
            return "JWT expired"
        if exp > now + 24 * 3600:
            return "exp must not be more than 24h from now"
        if not str(claims["sub"]).startswith(("mailto:", "https:")):
            return "sub must be a mailto: or https: URL"
        return None


def _unb64(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check_headers(request: Request) -> str | None:
    ttl = request.header("ttl")
    if ttl is None or not ttl.isdigit():
        return "missing or invalid TTL header"
    if (request.header("urgency") or "normal") not in _URGENCY:
        return "invalid Urgency header"
    topic = request.header("topic")
    if topic is not None and not _TOPIC.fullmatch(topic):
        return "invalid Topic header"
    if (request.header("content-encoding") or "").lower() != "aes128gcm":
        return "Content-Encoding must be aes128gcm"
    if request.header("encryption") is not None or "dh=" in (request.header("crypto-key") or ""):
        return "aesgcm Encryption/Crypto-Key headers are not allowed with aes128gcm"
    return None


def _check_block(body: bytes) -> str | None:
    """Problems of the RFC 8188 header block (salt 16, rs uint32, idlen, keyid = 65-byte P-256 point)."""
    if len(body) < 21:
        return "aes128gcm header block truncated"
    rs, idlen = struct.unpack("!IB", body[16:21])
    if rs < 18:
        return "aes128gcm record size too small"
    if idlen != 65 or len(body) < 21 + idlen + 17:
        return "aes128gcm keyid must be a 65-byte P-256 public key"
    if body[21] != 4:
        return "aes128gcm keyid is not an uncompressed point"
    if len(body) - 21 - idlen > rs:
        return "aes128gcm body must be a single record"
    return None


def ensure_vapid_key(directory: Path) -> Path:
    """Create (or reuse) ``vapid.pem`` (P-256, PKCS#8) under ``directory``; its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "vapid.pem"
    if not path.is_file():
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        path.write_bytes(pem)
        os.chmod(path, 0o600)
    return path
