"""OPPO Push (OPUSH) channel: SHA-256 signed auth, pure batch builder, one code→Outcome table.

Requests are ``application/x-www-form-urlencoded``; every message goes through
``unicast_batch`` (≤ 1000 messages, one per regId) so that each token gets its own answer
(``data[i].errorCode``). The ``auth_token`` travels as a form field.

Vendor docs (OPUSH server API, mirrored): 调用地址 / 公共参数 / 鉴权 / 单推-批量 / 返回码,
    https://open.oppomobile.com/new/developmentDoc/info?id=11238
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx

from engine.clock import Clock
from engine.config import OppoConfig
from engine.domain import Outcome, PushMessage, Receipt
from engine.errors import AuthError, PushError
from engine.push.auth import CachedToken, fingerprint
from engine.push.base import (
    BatchChannel,
    credential_failure,
    http_throttle_wins,
    json_object,
    parse_retry_after,
    tls_context,
    transport_receipt,
)

__all__ = ["CLASSES", "CODES", "REFRESH_CODES", "OppoAuth", "OppoChannel", "auth_form", "build_request",
           "parse_response"]

log = logging.getLogger(__name__)

AUTH_PATH = "/server/v1/auth"
BATCH_PATH = "/server/v1/message/notification/unicast_batch"
CAP = 1000

#: OPUSH return codes (VENDORS.md §6), mapped once; used for the top-level ``code`` and for
#: ``data[i].errorCode``.
CODES: dict[int, Outcome] = {
    0: Outcome.DELIVERED,
    -2: Outcome.RATE_LIMITED,      # service flow control
    -1: Outcome.TRANSIENT,         # service unavailable
    11: Outcome.AUTH_ERROR,        # invalid AuthToken: refreshed and retried once first
    13: Outcome.RATE_LIMITED,      # app call limit
    14: Outcome.AUTH_ERROR, 15: Outcome.AUTH_ERROR, 16: Outcome.AUTH_ERROR,
    17: Outcome.AUTH_ERROR, 18: Outcome.AUTH_ERROR, 19: Outcome.AUTH_ERROR,
    26: Outcome.AUTH_ERROR, 27: Outcome.AUTH_ERROR, 28: Outcome.AUTH_ERROR,
    29: Outcome.AUTH_ERROR, 30: Outcome.AUTH_ERROR,
    33: Outcome.QUOTA_EXHAUSTED,   # daily message limit: stop (oppo, app, class) for the day
    40: Outcome.REJECTED_PAYLOAD, 41: Outcome.REJECTED_PAYLOAD,
    55: Outcome.RATE_LIMITED,      # access frequency limit
    67: Outcome.REJECTED_PAYLOAD,  # category / notify_level: a classification bug
    10000: Outcome.INVALID_TOKEN,  # invalid registration_id
}

#: Codes after which the auth_token is fetched again and the request retried exactly once.
REFRESH_CODES: frozenset[int] = frozenset({11})

#: Message class → OPPO classification fields: 通讯与服务 (ex-私信) vs 内容与营销 (ex-公信).
#: ``notify_level`` 2 = bar + lock screen, 1 = bar only; ``channel_id`` must exist in the app.
CLASSES: dict[str, dict[str, Any]] = {
    "transactional": {"category": "ACCOUNT", "notify_level": 2, "channel_id": "pushwise_service"},
    "marketing": {"category": "MARKETING", "notify_level": 1, "channel_id": "pushwise_marketing"},
}


def auth_form(app_key: str, master_secret: str, now: datetime) -> dict[str, str]:
    """The ``/server/v1/auth`` form: ``sign`` = hex SHA-256 of app_key + timestamp(ms) + master_secret."""
    timestamp = str(int(now.timestamp() * 1000))
    sign = hashlib.sha256(f"{app_key}{timestamp}{master_secret}".encode()).hexdigest()
    return {"app_key": app_key, "timestamp": timestamp, "sign": sign}


def _notification(msg: PushMessage) -> dict[str, Any]:
    note: dict[str, Any] = {"title": msg.title, "content": msg.body, "click_action_type": 0,
                            "off_line": True, "off_line_ttl": max(1, min(msg.ttl_seconds, 864_000)),
                            **CLASSES[msg.message_class]}
    if msg.data:
        note["action_parameters"] = json.dumps(msg.data, ensure_ascii=False, separators=(",", ":"))
    if msg.collapse_id:
        note["app_message_id"] = msg.collapse_id[:64]
    else:
        note["app_message_id"] = msg.send_id[:64]   # OPPO delivers one message per id and target: idempotency
    return note


def build_request(batch: Sequence[PushMessage], auth_token: str) -> tuple[str, dict[str, str], bytes]:
    """Build the ``unicast_batch`` request for up to 1000 messages (pure).

    Raises:
        ValueError: more than 1000 messages, or a message class OPPO has no category for.
    """
    if not 1 <= len(batch) <= CAP:
        raise ValueError(f"OPPO batches hold 1..{CAP} messages, got {len(batch)}")
    messages = [{"target_type": 2, "target_value": m.token, "verify_registration_id": True,
                 "notification": _notification(m)} for m in batch]
    form = {"auth_token": auth_token,
            "messages": json.dumps(messages, ensure_ascii=False, separators=(",", ":"))}
    return BATCH_PATH, {"content-type": "application/x-www-form-urlencoded"}, urlencode(form).encode()


def _code(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@http_throttle_wins
def parse_response(status: int, headers: Mapping[str, str], body: bytes, batch: Sequence[PushMessage],
                   now: datetime) -> list[Receipt]:
    """One Receipt per message for a ``unicast_batch`` answer (pure).

    HTTP status first (non-200: 429 rate limited, 5xx transient, else by class), then the business
    ``code``; with code 0, each ``data[i]`` (matched by ``registrationId``) carries its own
    ``messageId`` or ``errorCode``. A token the answer does not mention is TRANSIENT (never assumed
    delivered).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    retry_after = parse_retry_after(lower.get("retry-after"), now)
    payload = json_object(body)
    code = _code(payload.get("code"))
    if status != 200 or code is None:
        outcome = (Outcome.RATE_LIMITED if status == 429 else Outcome.AUTH_ERROR if status in (401, 403)
                   else Outcome.TRANSIENT)
        return [Receipt(m.send_id, outcome, status_code=status, reason=f"http_{status}", retry_after=retry_after)
                for m in batch]
    if code != 0:
        outcome = CODES.get(code, Outcome.TRANSIENT if code < 0 else Outcome.REJECTED_PAYLOAD)
        return [Receipt(m.send_id, outcome, status_code=200, reason=str(code), retry_after=retry_after)
                for m in batch]
    items = payload.get("data") if isinstance(payload.get("data"), list) else []
    by_token = {str(d.get("registrationId")): d for d in items if isinstance(d, dict)}
    out = []
    for m in batch:
        item = by_token.get(m.token)
        if item is None:
            out.append(Receipt(m.send_id, Outcome.TRANSIENT, status_code=200, reason="missing_in_answer"))
            continue
        error = _code(item.get("errorCode"))
        if error in (None, 0):
            out.append(Receipt(m.send_id, Outcome.DELIVERED, status_code=200,
                               vendor_message_id=str(item.get("messageId") or "") or None))
        else:
            out.append(Receipt(m.send_id, CODES.get(error, Outcome.REJECTED_PAYLOAD), status_code=200,
                               reason=str(error)))
    return out


class OppoAuth(CachedToken):
    """Fetches and caches the 24 h ``auth_token``; refreshes an hour before expiry or on demand.

    Args:
        config: app_key and master_secret.
        http: the client (base_url = the OPUSH host).
        clock: signs ``timestamp`` and ages the cache.
    """

    LIFETIME = timedelta(hours=24)
    MARGIN = timedelta(hours=1)

    def __init__(self, config: OppoConfig, http: httpx.AsyncClient, clock: Clock) -> None:
        super().__init__(clock)
        self._config, self._http = config, http

    async def _fetch(self) -> None:
        now = self._clock.now()
        url = self._config.auth_url or AUTH_PATH
        try:
            response = await self._http.post(url, data=auth_form(self._config.app_key,
                                                                 self._config.master_secret, now))
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            receipt = transport_receipt("auth", exc)
            if receipt.outcome is Outcome.AUTH_ERROR:
                raise AuthError(f"oppo auth: {receipt.reason}") from None
            raise PushError(f"oppo auth unreachable: {type(exc).__name__}") from None
        self.fetches += 1
        payload = json_object(response.content)
        code = _code(payload.get("code"))
        data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
        if response.status_code != 200 or code is None or CODES.get(code) in (Outcome.TRANSIENT,
                                                                            Outcome.RATE_LIMITED):
            raise PushError(f"oppo auth answered http {response.status_code} code {code}")
        if code != 0 or not data.get("auth_token"):
            raise AuthError(f"oppo auth refused: code {code} {payload.get('message', '')}")
        self._token = str(data["auth_token"])
        self._valid_until = now + self.LIFETIME - self.MARGIN
        log.info("fetched OPPO auth_token fp=%s", fingerprint(self._token))


class OppoChannel(BatchChannel):
    """Sends to OPPO Push in ``unicast_batch`` requests of ≤ 1000 regIds.

    Args:
        config: the ``[vendors.oppo]`` section (base_url, app_key, master_secret, ca_file).
        clock: the injected clock.
        transport: an httpx transport instead of the network (tests).
        timeout: seconds for connect/read/write/pool.
    """

    vendor = "oppo"
    cap = CAP

    def __init__(self, config: OppoConfig, clock: Clock, transport: httpx.AsyncBaseTransport | None = None,
                 *, timeout: float = 10.0) -> None:
        client = httpx.AsyncClient(base_url=config.base_url, verify=tls_context(config.ca_file),
                                   transport=transport, timeout=timeout)
        self.tokens = OppoAuth(config, client, clock)
        super().__init__(client, clock, config.concurrency)

    async def _attempt(self, batch: list[PushMessage]) -> tuple[list[Receipt], str | None]:
        try:
            credential = await self._credential()
        except PushError as exc:
            return credential_failure(batch, exc), None
        now = self._clock.now()
        try:
            path, headers, body = build_request(batch, credential)
        except (KeyError, ValueError) as exc:
            return [Receipt(m.send_id, Outcome.REJECTED_PAYLOAD, reason=f"build: {type(exc).__name__}")
                    for m in batch], None
        try:
            response = await self._client.post(path, content=body, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return [transport_receipt(m.send_id, exc) for m in batch], credential
        return self._parse(response.status_code, response.headers, response.content, batch, now), credential

    def batch_key(self, msg: PushMessage) -> tuple[Any, ...]:
        """Every ``unicast_batch`` item carries its own notification (and the send id in its
        ``action_parameters`` and ``app_message_id``), so sends with different contents share requests."""
        return (msg.app_id,)

    async def _credential(self) -> str:
        return await self.tokens.token()

    def _authorization(self, credential: str) -> str:  # OPPO carries auth_token in the form
        return ""

    def _invalidate(self, credential: str) -> None:
        self.tokens.invalidate(credential)

    def _request(self, batch: Sequence[PushMessage], now: datetime) -> tuple[str, dict[str, str], bytes]:
        raise NotImplementedError("OPPO requests need the auth_token: see _attempt")

    def _parse(self, status: int, headers: Mapping[str, str], body: bytes, batch: Sequence[PushMessage],
               now: datetime) -> list[Receipt]:
        return parse_response(status, headers, body, batch, now)

    def _needs_refresh(self, receipts: Sequence[Receipt]) -> bool:
        return any(r.reason is not None and r.reason.lstrip("-").isdigit() and int(r.reason) in REFRESH_CODES
                   for r in receipts)
