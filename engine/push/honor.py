"""Honor Push channel: pure camelCase multi-token request builder, one code→Outcome table, batch sender.

Vendor docs (no official page in our corpus; shapes agree across five open-source clients, [weak]):
    https://developer.honor.com/cn/docs/11002/reference/downlink-message
    https://developer.honor.com/cn/docs/11002/guides/server-auth
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from engine.clock import Clock
from engine.config import HonorConfig
from engine.domain import Outcome, PushMessage, Receipt
from engine.push.auth import ClientCredentialsTokenProvider
from engine.push.base import (
    BatchChannel,
    http_throttle_wins,
    json_object,
    oem_status_outcome,
    parse_retry_after,
    repeat_key,
    tls_context,
)

__all__ = [
    "CODES",
    "IMPORTANCE",
    "MAX_BODY_BYTES",
    "MAX_TOKENS",
    "QUOTA_CODE",
    "RATE_CODE",
    "REFRESH_CODES",
    "HonorChannel",
    "build_request",
    "parse_response",
]

MAX_TOKENS = 1000
MAX_BODY_BYTES = 4096
QUOTA_CODE = 80300013   # [weak] Huawei-style numbering; the real cap is per device and silent
RATE_CODE = 80100017    # [weak] "too frequent": Honor QPS is 3000 and cannot be raised

#: ``PushMessage.message_class`` → ``android.notification.importance`` (VENDORS.md §10).
IMPORTANCE: dict[str, str] = {"marketing": "LOW", "transactional": "NORMAL"}

#: Honor business codes (an *int*), mapped once. Success is 200 (one client assumes 0: not accepted).
#: The 8xxxxxxx numbering follows Huawei's, from which Honor forked [weak].
CODES: dict[int, Outcome] = {
    200: Outcome.DELIVERED,               # per-token failTokens/expireTokens are INVALID_TOKEN
    80100001: Outcome.REJECTED_PAYLOAD,
    80100003: Outcome.REJECTED_PAYLOAD,
    80100004: Outcome.REJECTED_PAYLOAD,
    80100016: Outcome.REJECTED_PAYLOAD,
    RATE_CODE: Outcome.RATE_LIMITED,
    80200001: Outcome.AUTH_ERROR,
    80200003: Outcome.AUTH_ERROR,         # but refreshed and retried once first
    80300002: Outcome.AUTH_ERROR,
    80300007: Outcome.INVALID_TOKEN,      # all targeted tokens invalid
    80300008: Outcome.REJECTED_PAYLOAD,
    80300010: Outcome.REJECTED_PAYLOAD,
    QUOTA_CODE: Outcome.QUOTA_EXHAUSTED,
    80600003: Outcome.AUTH_ERROR,
    81000001: Outcome.TRANSIENT,
}

#: Codes after which the access token is fetched again and the request retried exactly once.
REFRESH_CODES: frozenset[str] = frozenset({"80200003"})


def build_request(batch: Sequence[PushMessage], app_id: str, now: datetime) -> tuple[str, dict[str, str], bytes]:
    """Build one ``sendMessage`` request for messages sharing one content (pure).

    Returns:
        ``(path, headers, body)``; headers carry ``timestamp`` (ms since the epoch); ``body =
        {"data", "android": {"ttl", "biTag", "notification": {"title", "body", "clickAction":
        {"type": 3}, "importance", "tag", "badge"}}, "token": [...]}``, compact UTF-8 JSON.

    Raises:
        ValueError: empty batch, more than `MAX_TOKENS` tokens. KeyError: unknown message class.
    """
    if not 1 <= len(batch) <= MAX_TOKENS:
        raise ValueError(f"an Honor request carries 1..{MAX_TOKENS} tokens, not {len(batch)}")
    first = batch[0]
    notification: dict[str, Any] = {"title": first.title, "body": first.body, "clickAction": {"type": 3},
                                    "importance": IMPORTANCE[first.message_class]}
    key = repeat_key(batch)
    if key:   # a repeat of the send replaces the first copy on the device (Honor has no idempotency key)
        notification["tag"] = key
    if first.badge is not None:
        notification["badge"] = {"setNum": first.badge, "badgeClass": "Classic"}
    android: dict[str, Any] = {"ttl": f"{max(0, min(first.ttl_seconds, 1_296_000))}s",
                               "notification": notification}
    if len(batch) == 1:
        android["biTag"] = first.send_id
    message: dict[str, Any] = {"android": android, "token": [m.token for m in batch]}
    if first.data:
        message["data"] = json.dumps(first.data, ensure_ascii=False, separators=(",", ":"))
    body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
    headers = {"content-type": "application/json", "timestamp": str(int(now.timestamp() * 1000))}
    return f"/api/v1/{app_id}/sendMessage", headers, body


@http_throttle_wins
def parse_response(status: int, headers: Mapping[str, str], body: bytes, batch: Sequence[PushMessage],
                   now: datetime | None = None) -> list[Receipt]:
    """Classify one answer into one Receipt per message of ``batch`` through `CODES`.

    ``{"code": 200, "data": {"requestId", "failTokens", "expireTokens"}}``: the listed tokens are
    INVALID_TOKEN, the rest DELIVERED. A body code wins over the HTTP status (HTTP 200 + business
    error); without one the HTTP status decides.
    """
    data = json_object(body)
    raw = data.get("code")
    code = int(raw) if isinstance(raw, int) or (isinstance(raw, str) and raw.isdigit()) else None
    result = data.get("data") if isinstance(data.get("data"), dict) else {}
    request_id = result.get("requestId") if isinstance(result.get("requestId"), str) else None
    retry_after = parse_retry_after({k.lower(): v for k, v in headers.items()}.get("retry-after"),
                                    now or datetime.now(UTC))
    outcome = CODES.get(code) if code is not None else None
    outcome = outcome or oem_status_outcome(status)
    reason = str(code) if code is not None else f"http_{status}"
    expired, failed = _tokens(result.get("expireTokens")), _tokens(result.get("failTokens"))
    receipts = []
    for m in batch:
        if outcome is Outcome.DELIVERED and (m.token in expired or m.token in failed):
            why = "expireTokens" if m.token in expired else "failTokens"
            receipts.append(Receipt(send_id=m.send_id, outcome=Outcome.INVALID_TOKEN, status_code=status,
                                    reason=f"{code}:{why}", vendor_message_id=request_id))
        else:
            delivered = outcome is Outcome.DELIVERED
            receipts.append(Receipt(send_id=m.send_id, outcome=outcome, status_code=status, reason=reason,
                                    vendor_message_id=request_id if delivered else None,
                                    retry_after=None if delivered else retry_after))
    return receipts


def _tokens(value: object) -> set[str]:
    return {t for t in value if isinstance(t, str)} if isinstance(value, list) else set()




class HonorChannel(BatchChannel):
    """Sends to Honor Push with a cached OAuth2 client-credentials token, up to 1000 tokens a request.

    Args:
        config: the ``[vendors.honor]`` section (base_url, auth_url, app_id, client_id, client_secret).
        clock: the injected clock (``timestamp`` header, token cache, Retry-After dates).
        transport: an httpx transport to use instead of the network (tests).
        timeout: seconds for connect/read/write/pool.
    """

    vendor = "honor"
    cap = MAX_TOKENS

    def __init__(self, config: HonorConfig, clock: Clock, transport: httpx.AsyncBaseTransport | None = None,
                 *, timeout: float = 10.0) -> None:
        # HTTP/1.1: few, large (~130 KB) batch bodies; see BatchChannel on why not HTTP/2.
        client = httpx.AsyncClient(base_url=config.base_url, http2=False, verify=tls_context(config.ca_file),
                                   transport=transport, timeout=timeout)
        self.tokens = ClientCredentialsTokenProvider(config.auth_url, config.client_id, config.client_secret,
                                                     client, clock, "honor")
        self.app_id = config.app_id
        super().__init__(client, clock, config.concurrency)

    async def _credential(self) -> str:
        return await self.tokens.token()

    def _authorization(self, credential: str) -> str:
        return f"Bearer {credential}"

    def _invalidate(self, credential: str) -> None:
        self.tokens.invalidate(credential)

    def _request(self, batch: Sequence[PushMessage], now: datetime) -> tuple[str, dict[str, str], bytes]:
        return build_request(batch, self.app_id, now)

    def _parse(self, status: int, headers: Mapping[str, str], body: bytes, batch: Sequence[PushMessage],
               now: datetime) -> list[Receipt]:
        return parse_response(status, headers, body, batch, now)

    def _needs_refresh(self, receipts: Sequence[Receipt]) -> bool:
        return any(r.reason in REFRESH_CODES for r in receipts)
