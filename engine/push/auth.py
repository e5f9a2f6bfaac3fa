"""Vendor credentials: the APNs provider JWT and the Google service-account OAuth2 access token.

Both providers cache what they mint and re-mint only when the vendor's rules allow or require it.
Neither ever logs a token or a key; logs carry a short fingerprint instead.

Vendor docs:
    https://developer.apple.com/documentation/usernotifications/establishing-a-token-based-connection-to-apns
    https://developers.google.com/identity/protocols/oauth2/service-account#httprest
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import datetime, timedelta
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from engine.clock import Clock
from engine.errors import AuthError, ConfigError, PushError
from engine.push.base import is_certificate_failure

__all__ = [
    "CachedToken",
    "FCM_SCOPE",
    "ApnsTokenProvider",
    "ClientCredentialsTokenProvider",
    "GoogleServiceAccountTokenProvider",
    "fingerprint",
]

log = logging.getLogger(__name__)

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def fingerprint(secret: str) -> str:
    """A short, non-reversible label for a token, safe to log."""
    return hashlib.sha256(secret.encode()).hexdigest()[:10]


class ApnsTokenProvider:
    """Mints and caches the ES256 provider JWT that authorizes APNs requests.

    Apple rejects a token older than an hour and refuses tokens changed more often than every
    20 minutes on a connection, so the token is re-minted after `REFRESH_AFTER` and never sooner than
    `MIN_INTERVAL` — unless APNs rejected it as expired (`invalidate(expired=True)`).

    Args:
        team_id: the 10-character Apple team id (claim ``iss``).
        key_id: the 10-character key id (header ``kid``).
        key_pem: the ``.p8`` P-256 private key, PEM.
        clock: source of ``iat``.

    Raises:
        AuthError: the key is not a usable P-256 private key.
    """

    REFRESH_AFTER = timedelta(minutes=50)
    MIN_INTERVAL = timedelta(minutes=20)

    def __init__(self, team_id: str, key_id: str, key_pem: str | bytes, clock: Clock) -> None:
        self.team_id = team_id
        self.key_id = key_id
        self._clock = clock
        self._key = _load_private_key(key_pem, ec.EllipticCurvePrivateKey, "APNs .p8")
        if not isinstance(self._key.curve, ec.SECP256R1):
            raise AuthError("APNs .p8 key must be a P-256 (prime256v1) key")
        self._token: str | None = None
        self._minted_at: datetime | None = None
        self._stale = False
        self._expired = False
        self.mints = 0

    def __repr__(self) -> str:
        return f"ApnsTokenProvider(team_id={self.team_id!r}, key_id={self.key_id!r}, mints={self.mints})"

    def token(self) -> str:
        """The current provider token, minting a new one when due."""
        now = self._clock.now()
        if self._token is None or self._minted_at is None or self._due(now - self._minted_at):
            self._mint(now)
        assert self._token is not None
        return self._token

    def invalidate(self, *, expired: bool = False, token: str | None = None) -> None:
        """Ask for a new token.

        Args:
            expired: APNs answered ``ExpiredProviderToken``: re-mint at the next call regardless of
                the 20-minute rule.
            token: the token that was rejected; when it is no longer the cached one (another
                request already re-minted) nothing happens.
        """
        if token is not None and token != self._token:
            return
        self._stale = True
        self._expired = self._expired or expired

    def _due(self, age: timedelta) -> bool:
        if self._expired or age >= self.REFRESH_AFTER:
            return True
        return self._stale and age >= self.MIN_INTERVAL

    def _mint(self, now: datetime) -> None:
        iat = int(now.timestamp())
        try:
            token = jwt.encode({"iss": self.team_id, "iat": iat}, self._key, algorithm="ES256",
                               headers={"kid": self.key_id})
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise AuthError(f"could not sign the APNs provider token: {type(exc).__name__}") from None
        self._token, self._minted_at = token, now
        self._stale = self._expired = False
        self.mints += 1
        log.info("minted APNs provider token kid=%s iat=%d fp=%s", self.key_id, iat, fingerprint(token))


class CachedToken:
    """A bearer credential fetched from a token endpoint, cached until ``_valid_until``.

    Subclasses implement ``_fetch()``, which sets ``_token`` and ``_valid_until`` (and counts
    ``fetches``); callers use :meth:`token` and, after the vendor refused a token, :meth:`invalidate`.
    One lock makes concurrent senders share a single fetch.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._token: str | None = None
        self._valid_until: datetime | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def token(self) -> str:
        """A valid token, fetched when none is cached or the cached one is due for refresh.

        Raises:
            AuthError: the endpoint refused our credentials.
            PushError: the token endpoint is unreachable or failing (transport error, 5xx).
        """
        async with self._lock:
            if self._token is None or self._valid_until is None or self._clock.now() >= self._valid_until:
                await self._fetch()
            assert self._token is not None
            return self._token

    def invalidate(self, token: str | None = None) -> None:
        """Drop the cached token (only if it is still ``token`` when one is given)."""
        if token is None or token == self._token:
            self._token = self._valid_until = None

    async def _fetch(self) -> None:
        raise NotImplementedError


class GoogleServiceAccountTokenProvider(CachedToken):
    """Exchanges a self-signed RS256 JWT for an OAuth2 access token and caches it.

    The token is reused until five minutes before it expires (a tenth of its lifetime for tokens
    shorter than 50 minutes), and fetched again on demand after `invalidate`. Concurrent callers
    share one fetch.

    Args:
        service_account_info: the parsed service-account JSON (``client_email``, ``private_key``,
            ``private_key_id``, ``token_uri``).
        http: the client used to reach ``token_uri``.
        clock: source of ``iat``/``exp`` and of cache expiry.

    Raises:
        ConfigError: a required field is missing, or ``token_uri`` is not https.
        AuthError: the private key is not a usable RSA key.
    """

    LIFETIME = 3600
    MARGIN = 300.0

    def __init__(self, service_account_info: dict[str, Any], http: httpx.AsyncClient, clock: Clock) -> None:
        missing = [k for k in ("client_email", "private_key", "private_key_id", "token_uri")
                   if not service_account_info.get(k)]
        if missing:
            raise ConfigError(f"service account is missing {', '.join(missing)}")
        self.client_email: str = service_account_info["client_email"]
        self.key_id: str = service_account_info["private_key_id"]
        self.token_uri: str = service_account_info["token_uri"]
        if not self.token_uri.lower().startswith("https://"):
            raise ConfigError("service account token_uri must be an https:// URL")
        self._key = _load_private_key(service_account_info["private_key"], rsa.RSAPrivateKey, "service account")
        super().__init__(clock)
        self._http = http

    def __repr__(self) -> str:
        return f"GoogleServiceAccountTokenProvider(client_email={self.client_email!r}, fetches={self.fetches})"

    def assertion(self, now: datetime) -> str:
        """The signed JWT-bearer assertion for ``now`` (RS256, ``kid`` = ``private_key_id``)."""
        iat = int(now.timestamp())
        claims = {"iss": self.client_email, "scope": FCM_SCOPE, "aud": self.token_uri,
                  "iat": iat, "exp": iat + self.LIFETIME}
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.key_id})

    async def _fetch(self) -> None:
        now = self._clock.now()
        form = {"grant_type": JWT_BEARER, "assertion": self.assertion(now)}
        try:
            response = await self._http.post(self.token_uri, data=form)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            if is_certificate_failure(exc):
                raise AuthError("token endpoint: tls: server certificate not trusted") from None
            raise PushError(f"token endpoint unreachable: {type(exc).__name__}") from None
        self.fetches += 1
        payload = _json(response)
        if response.status_code >= 500 or response.status_code == 429:
            raise PushError(f"token endpoint answered {response.status_code}")
        if response.status_code != 200 or not payload.get("access_token"):
            error = payload.get("error", "unknown_error")
            detail = payload.get("error_description", "")
            raise AuthError(f"token endpoint refused the assertion: {error}: {detail}")
        expires_in = float(payload.get("expires_in", 3600))
        margin = min(self.MARGIN, expires_in / 10)
        self._token = str(payload["access_token"])
        self._valid_until = now + timedelta(seconds=expires_in - margin)
        log.info("fetched access token for %s fp=%s expires_in=%s", self.client_email,
                 fingerprint(self._token), expires_in)


class ClientCredentialsTokenProvider(CachedToken):
    """OAuth2 client-credentials access token (Huawei Push Kit, Honor Push), cached until near expiry.

    Same cache rules as `GoogleServiceAccountTokenProvider`: reused until five minutes (a tenth of
    its lifetime for short tokens) before ``expires_in`` runs out, fetched again after
    `invalidate`; concurrent callers share one fetch.

    Args:
        token_url: the vendor's token endpoint (form ``grant_type=client_credentials``).
        client_id: Huawei's App ID / Honor's client id.
        client_secret: the app secret (never logged).
        http: the client used to reach ``token_url``.
        clock: source of cache expiry.
        label: vendor name for messages and logs.
    """

    MARGIN = 300.0

    def __init__(self, token_url: str, client_id: str, client_secret: str, http: httpx.AsyncClient,
                 clock: Clock, label: str = "oauth") -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        super().__init__(clock)
        self._http = http
        self.label = label

    def __repr__(self) -> str:
        return f"ClientCredentialsTokenProvider(label={self.label!r}, client_id={self.client_id!r}, fetches={self.fetches})"

    async def _fetch(self) -> None:
        now = self._clock.now()
        form = {"grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self._secret}
        try:
            response = await self._http.post(self.token_url, data=form)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            if is_certificate_failure(exc):
                raise AuthError(f"{self.label} token endpoint: tls: server certificate not trusted") from None
            raise PushError(f"{self.label} token endpoint unreachable: {type(exc).__name__}") from None
        self.fetches += 1
        payload = _json(response)
        if response.status_code >= 500 or response.status_code == 429:
            raise PushError(f"{self.label} token endpoint answered {response.status_code}")
        if response.status_code != 200 or not payload.get("access_token"):
            error = payload.get("error", "unknown_error")
            detail = payload.get("error_description", "")
            raise AuthError(f"{self.label} token endpoint refused the client credentials: {error}: {detail}")
        expires_in = float(payload.get("expires_in", 3600))
        self._token = str(payload["access_token"])
        self._valid_until = now + timedelta(seconds=expires_in - min(self.MARGIN, expires_in / 10))
        log.info("fetched %s access token for client %s fp=%s expires_in=%s", self.label, self.client_id,
                 fingerprint(self._token), expires_in)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _load_private_key(pem: str | bytes, kind: type, what: str) -> Any:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise AuthError(f"{what} private key cannot be loaded: {type(exc).__name__}") from None
    if not isinstance(key, kind):
        raise AuthError(f"{what} private key has the wrong type: {type(key).__name__}")
    return key
