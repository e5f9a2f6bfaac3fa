"""Google FCM HTTP v1 channel: pure request builder, one error-code→Outcome table, HTTP/2 sender.

Vendor docs:
    https://firebase.google.com/docs/reference/fcm/rest/v1/projects.messages/send
    https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode
    https://firebase.google.com/docs/cloud-messaging/error-codes
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from engine.clock import Clock
from engine.config import FcmConfig
from engine.domain import Outcome, PushMessage, Receipt
from engine.errors import ConfigError, PushError
from engine.push.apns import apns_id
from engine.push.auth import GoogleServiceAccountTokenProvider
from engine.push.base import (
    HttpChannel,
    credential_failure,
    json_object,
    parse_retry_after,
    repeat_key,
    tls_context,
)
from engine.push.h2pool import H2Pool, exchange_receipts

__all__ = ["ERROR_CODES", "REFRESH_REASONS", "FcmChannel", "build_request", "parse_response"]

#: FcmError ``errorCode`` values, the ``google.rpc.ErrorInfo`` reason we act on, and canonical
#: ``status`` values (used when no more specific code is present), mapped once (VENDORS.md §2).
ERROR_CODES: dict[str, Outcome] = {
    # google.firebase.fcm.v1.FcmError.errorCode
    "UNSPECIFIED_ERROR": Outcome.TRANSIENT,
    "INVALID_ARGUMENT": Outcome.REJECTED_PAYLOAD,   # INVALID_TOKEN when it is about message.token
    "UNREGISTERED": Outcome.INVALID_TOKEN,
    "SENDER_ID_MISMATCH": Outcome.INVALID_TOKEN,
    "QUOTA_EXCEEDED": Outcome.RATE_LIMITED,
    "UNAVAILABLE": Outcome.TRANSIENT,
    "INTERNAL": Outcome.TRANSIENT,
    "THIRD_PARTY_AUTH_ERROR": Outcome.AUTH_ERROR,
    # google.rpc.ErrorInfo.reason
    "ACCESS_TOKEN_EXPIRED": Outcome.AUTH_ERROR,     # but refreshed and retried once first
    # canonical google.rpc.Code names
    "NOT_FOUND": Outcome.INVALID_TOKEN,
    "PERMISSION_DENIED": Outcome.AUTH_ERROR,
    "UNAUTHENTICATED": Outcome.AUTH_ERROR,
    "RESOURCE_EXHAUSTED": Outcome.RATE_LIMITED,
    "DEADLINE_EXCEEDED": Outcome.TRANSIENT,
}

#: Codes after which the access token is fetched again and the message retried exactly once.
REFRESH_REASONS: frozenset[str] = frozenset({"ACCESS_TOKEN_EXPIRED"})

_FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


def build_request(msg: PushMessage, project_id: str) -> tuple[str, dict[str, str], bytes]:
    """Build the ``messages:send`` request for one message (pure).

    ``data`` values must be strings for FCM; anything else is JSON-encoded (``3`` → ``"3"``,
    ``True`` → ``"true"``) rather than silently dropped.

    Returns:
        ``(path, headers, body)`` with ``body = {"message": {"token", "notification", "data",
        "android": {"priority", "ttl", "collapse_key", "notification": {"tag"}}, "apns": {"headers":
        {"apns-collapse-id"}}}}`` as compact UTF-8 JSON; the tag and apns-collapse-id come from the
        send id (`repeat_key`).
    """
    message: dict[str, Any] = {"token": msg.token, "notification": {"title": msg.title, "body": msg.body}}
    if msg.data:
        message["data"] = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in msg.data.items()}
    android: dict[str, Any] = {
        "priority": "HIGH" if msg.message_class == "transactional" else "NORMAL",
        "ttl": f"{max(0, msg.ttl_seconds)}s",
    }
    if msg.collapse_id:
        android["collapse_key"] = msg.collapse_id
    # FCM has no idempotency key: a repeat of this send is delivered again and replaces the first
    # copy on the device through the notification tag (iOS: apns-collapse-id). A per-send
    # collapse_key is avoided: FCM keeps only four collapse keys per device while it is offline.
    key = repeat_key([msg])
    android["notification"] = {"tag": key}
    message["android"] = android
    message["apns"] = {"headers": {"apns-collapse-id": msg.collapse_id or apns_id(msg.send_id)}}
    body = json.dumps({"message": message}, ensure_ascii=False, separators=(",", ":")).encode()
    return (f"/v1/projects/{project_id}/messages:send",
            {"content-type": "application/json; charset=UTF-8"}, body)


def parse_response(
    status: int, headers: Mapping[str, str], body: bytes, send_id: str, now: datetime | None = None
) -> Receipt:
    """Classify one FCM answer through `ERROR_CODES`.

    The most specific code wins: FcmError ``errorCode``, then an ErrorInfo ``reason`` we know, then
    the canonical ``status``, then the HTTP status class. ``INVALID_ARGUMENT`` about
    ``message.token`` (a field violation, or "not a valid FCM registration token") is
    ``INVALID_TOKEN``. A 404 without Google's error body (a wrong URL, a proxy) is not taken as a
    dead token.

    Args:
        status: HTTP status.
        headers: response headers (any case).
        body: ``{"name": "projects/<p>/messages/<id>"}`` or ``{"error": {...}}``.
        send_id: the message this answer is for.
        now: current time, to turn a ``Retry-After`` HTTP-date into seconds.
    """
    data = json_object(body)
    if status == 200:
        name = data.get("name") if isinstance(data.get("name"), str) else None
        return Receipt(send_id=send_id, outcome=Outcome.DELIVERED, status_code=200, vendor_message_id=name)
    error = data.get("error") if isinstance(data.get("error"), dict) else {}
    reason = _reason(error)
    outcome = ERROR_CODES.get(reason or "") or _by_status(status, bool(error))
    if reason == "INVALID_ARGUMENT" and _about_token(error):
        outcome = Outcome.INVALID_TOKEN
    lower = {k.lower(): v for k, v in headers.items()}
    return Receipt(
        send_id=send_id,
        outcome=outcome,
        status_code=status,
        reason=reason or f"http_{status}",
        retry_after=parse_retry_after(lower.get("retry-after"), now or datetime.now(UTC)),
    )


def _details(error: dict[str, Any]) -> list[dict[str, Any]]:
    details = error.get("details")
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _reason(error: dict[str, Any]) -> str | None:
    details = _details(error)
    for d in details:
        if d.get("@type") == _FCM_ERROR and isinstance(d.get("errorCode"), str):
            return str(d["errorCode"])
    for d in details:
        if d.get("@type") == _ERROR_INFO and d.get("reason") in ERROR_CODES:
            return str(d["reason"])
    status = error.get("status")
    return status if isinstance(status, str) else None


def _about_token(error: dict[str, Any]) -> bool:
    for d in _details(error):
        if d.get("@type") == _BAD_REQUEST:
            for violation in d.get("fieldViolations") or []:
                if isinstance(violation, dict) and violation.get("field") == "message.token":
                    return True
    return "registration token" in str(error.get("message", "")).lower()


def _by_status(status: int, google_error: bool) -> Outcome:
    if status == 404 and google_error:
        return Outcome.INVALID_TOKEN
    if status == 429:
        return Outcome.RATE_LIMITED
    if status in (401, 403):
        return Outcome.AUTH_ERROR
    if 400 <= status < 500:
        return Outcome.REJECTED_PAYLOAD
    return Outcome.TRANSIENT


class FcmChannel(HttpChannel):
    """Sends to FCM HTTP v1 over HTTP/2 with a cached OAuth2 access token.

    Sends go through the lean `H2Pool` (httpx's HTTP/2 path costs ~1 ms of CPU per request,
    docs/decisions/005); the OAuth token endpoint is reached with httpx. When an httpx
    ``transport`` is injected (tests), sends go through it too.

    Args:
        config: the ``[vendors.fcm]`` section (base_url, project_id, service-account file, ca_file).
        clock: the injected clock (assertion ``iat``/``exp``, token cache, Retry-After dates).
        transport: an httpx transport to use instead of the network (tests); the token endpoint
            is reached through it too.
        timeout: seconds for connect/read/write/pool; the lean path's per-answer timeout.

    Raises:
        ConfigError: the service-account file cannot be read or lacks a field.
        AuthError: its private key is not an RSA key.
    """

    vendor = "fcm"

    def __init__(
        self, config: FcmConfig, clock: Clock, transport: httpx.AsyncBaseTransport | None = None,
        *, timeout: float = 10.0,
    ) -> None:
        try:
            info = json.loads(Path(config.service_account_file).read_text())
        except OSError as exc:
            raise ConfigError(f"vendors.fcm.service_account_file cannot be read: {exc.strerror}") from None
        except ValueError:
            raise ConfigError("vendors.fcm.service_account_file is not valid JSON") from None
        if not isinstance(info, dict):
            raise ConfigError("vendors.fcm.service_account_file must hold a JSON object")
        client = httpx.AsyncClient(
            base_url=config.base_url, http2=True, verify=tls_context(config.ca_file),
            transport=transport, timeout=timeout,
        )
        self.tokens = GoogleServiceAccountTokenProvider(info, client, clock)
        self.project_id = config.project_id
        super().__init__(client, clock, config.concurrency)
        self._pool = None if transport is not None else H2Pool(
            config.base_url, tls_context(config.ca_file), connections=2, concurrency=config.concurrency,
            timeout=timeout)

    async def send(self, messages: Sequence[PushMessage]) -> list[Receipt]:
        if self._pool is None:
            return await super().send(messages)
        receipts, credential = await self._lean_attempt(messages)
        again = [i for i, r in enumerate(receipts) if credential is not None and self._needs_refresh(r)]
        if again:   # the access token expired: fetch a new one and retry those sends exactly once
            self._invalidate(credential)  # type: ignore[arg-type]
            retried, _ = await self._lean_attempt([messages[i] for i in again])
            for i, receipt in zip(again, retried, strict=True):
                receipts[i] = receipt
        return receipts

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
        await super().aclose()

    async def _lean_attempt(self, messages: Sequence[PushMessage]) -> tuple[list[Receipt], str | None]:
        assert self._pool is not None
        try:
            credential = await self._credential()
        except PushError as exc:
            return credential_failure(list(messages), exc), None
        now = self._clock.now()
        receipts = await exchange_receipts(
            self._pool, messages, self._authorization(credential), lambda m: self._request(m, now),
            lambda status, headers, body, send_id: self._parse(status, headers, body, send_id, now))
        return receipts, credential

    async def _credential(self) -> str:
        return await self.tokens.token()

    def _authorization(self, credential: str) -> str:
        return f"Bearer {credential}"

    def _invalidate(self, credential: str) -> None:
        self.tokens.invalidate(credential)

    def _request(self, msg: PushMessage, now: datetime) -> tuple[str, dict[str, str], bytes]:
        return build_request(msg, self.project_id)

    def _parse(self, status: int, headers: Mapping[str, str], body: bytes, send_id: str, now: datetime) -> Receipt:
        return parse_response(status, headers, body, send_id, now)

    def _needs_refresh(self, receipt: Receipt) -> bool:
        return receipt.reason in REFRESH_REASONS
