"""Huawei Push Kit channel: pure multi-token request builder, one code→Outcome table, batch sender.

Vendor docs:
    https://developer.huawei.com/consumer/en/doc/HMSCore-References/https-send-api-0000001050986197
    https://developer.huawei.com/consumer/en/doc/HMSCore-References/error-code-0000001050045759
    https://developer.huawei.com/consumer/en/doc/HMSCore-Guides/oauth2-0000001212610981
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from engine.clock import Clock
from engine.config import HuaweiConfig
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
    "CATEGORIES",
    "CODES",
    "MAX_BODY_BYTES",
    "MAX_TOKENS",
    "QUOTA_CODE",
    "REFRESH_CODES",
    "HuaweiChannel",
    "build_request",
    "illegal_tokens",
    "parse_response",
]

MAX_TOKENS = 1000
MAX_BODY_BYTES = 4096
#: [weak] Huawei reports the marketing cap through receipts (status 256), not in the send answer; the
#: sandbox answers this code when its (app, class) daily quota is spent.
QUOTA_CODE = "80300013"

#: ``PushMessage.message_class`` → ``android.category`` (VENDORS.md §10). Service categories need
#: Huawei's self-classification right; WORK is the neutral one for transactional notices.
CATEGORIES: dict[str, str] = {"marketing": "MARKETING", "transactional": "WORK"}

#: Every business code of the send API (VENDORS.md §3), mapped once. The code is a *string*.
CODES: dict[str, Outcome] = {
    "80000000": Outcome.DELIVERED,
    "80100000": Outcome.DELIVERED,         # partial: the tokens listed in ``msg`` are INVALID_TOKEN
    "80100001": Outcome.REJECTED_PAYLOAD,
    "80100002": Outcome.REJECTED_PAYLOAD,
    "80100003": Outcome.REJECTED_PAYLOAD,
    "80100004": Outcome.REJECTED_PAYLOAD,
    "80100013": Outcome.REJECTED_PAYLOAD,
    "80100016": Outcome.REJECTED_PAYLOAD,  # sensitive content: never retried
    "80100017": Outcome.RATE_LIMITED,
    "80200001": Outcome.AUTH_ERROR,
    "80200003": Outcome.AUTH_ERROR,        # but refreshed and retried once first, see REFRESH_CODES
    "80300002": Outcome.AUTH_ERROR,
    "80300007": Outcome.INVALID_TOKEN,     # all targeted tokens invalid
    "80300008": Outcome.REJECTED_PAYLOAD,
    "80300010": Outcome.REJECTED_PAYLOAD,
    "80300011": Outcome.REJECTED_PAYLOAD,
    QUOTA_CODE: Outcome.QUOTA_EXHAUSTED,
    "80600003": Outcome.AUTH_ERROR,
    "81000001": Outcome.TRANSIENT,
}

#: Codes after which the access token is fetched again and the request retried exactly once.
REFRESH_CODES: frozenset[str] = frozenset({"80200003"})


def build_request(batch: Sequence[PushMessage], app_id: str) -> tuple[str, dict[str, str], bytes]:
    """Build one ``messages:send`` request for messages sharing one content (pure).

    Returns:
        ``(path, headers, body)``; ``body = {"validate_only": false, "message": {"data",
        "android": {"collapse_key", "category", "ttl", "bi_tag", "notification": {"title", "body",
        "click_action": {"type": 3}, "badge"}}, "token": [...]}}``, compact UTF-8 JSON.

    Raises:
        ValueError: empty batch, more than `MAX_TOKENS` tokens, or an unknown message class.
    """
    if not 1 <= len(batch) <= MAX_TOKENS:
        raise ValueError(f"a Huawei request carries 1..{MAX_TOKENS} tokens, not {len(batch)}")
    first = batch[0]
    notification: dict[str, Any] = {"title": first.title, "body": first.body,
                                    "click_action": {"type": 3}}   # open the app (#7: mandatory)
    if first.badge is not None:
        notification["badge"] = {"set_num": first.badge, "class": "Classic"}
    android: dict[str, Any] = {"category": CATEGORIES[first.message_class],
                               "ttl": f"{max(0, min(first.ttl_seconds, 1_296_000))}s",
                               "notification": notification}
    if len(batch) == 1:
        android["bi_tag"] = first.send_id   # receipts name the send
    if first.collapse_id:
        android["collapse_key"] = -1
    key = repeat_key(batch)
    if key:   # a repeat of the send replaces the first copy on the device (Huawei has no idempotency key)
        notification["tag"] = key
    message: dict[str, Any] = {"android": android, "token": [m.token for m in batch]}
    if first.data:
        message["data"] = json.dumps(first.data, ensure_ascii=False, separators=(",", ":"))
    body = json.dumps({"validate_only": False, "message": message}, ensure_ascii=False,
                      separators=(",", ":")).encode()
    return f"/v1/{app_id}/messages:send", {"content-type": "application/json; charset=UTF-8"}, body


def illegal_tokens(msg: object) -> set[str]:
    """The tokens an 80100000 answer lists in ``msg`` (a JSON *string*, v1 or v3 shape).

    v1: ``{"success": n, "failure": m, "illegal_tokens": [...]}``;
    v3: ``{"illegalTokens": {"<reason>": [...]}}``. Anything unparseable lists nothing.
    """
    data = json_object(msg.encode() if isinstance(msg, str) else b"")
    found: set[str] = set()
    v1 = data.get("illegal_tokens")
    if isinstance(v1, list):
        found.update(t for t in v1 if isinstance(t, str))
    v3 = data.get("illegalTokens")
    if isinstance(v3, dict):
        for tokens in v3.values():
            if isinstance(tokens, list):
                found.update(t for t in tokens if isinstance(t, str))
    return found


@http_throttle_wins
def parse_response(status: int, headers: Mapping[str, str], body: bytes, batch: Sequence[PushMessage],
                   now: datetime | None = None) -> list[Receipt]:
    """Classify one answer into one Receipt per message of ``batch`` through `CODES`.

    Two layers: the business ``code`` wins whenever the body has one (Huawei answers HTTP 200 for
    most failures and 401 with 80200003 for an expired token); otherwise the HTTP status decides,
    with 503 meaning flow control (RATE_LIMITED). 80100000 marks exactly the listed tokens invalid.
    """
    data = json_object(body)
    code = str(data["code"]) if isinstance(data.get("code"), str | int) else None
    request_id = data.get("requestId") if isinstance(data.get("requestId"), str) else None
    retry_after = parse_retry_after({k.lower(): v for k, v in headers.items()}.get("retry-after"),
                                    now or datetime.now(UTC))
    outcome = CODES.get(code or "") or oem_status_outcome(status)
    if status == 503:
        outcome = Outcome.RATE_LIMITED
    reason = code or f"http_{status}"
    bad = illegal_tokens(data.get("msg")) if code == "80100000" else set()
    receipts = []
    for m in batch:
        if m.token in bad:
            receipts.append(Receipt(send_id=m.send_id, outcome=Outcome.INVALID_TOKEN, status_code=status,
                                    reason="80100000:illegal_token", vendor_message_id=request_id))
        else:
            receipts.append(Receipt(send_id=m.send_id, outcome=outcome, status_code=status, reason=reason,
                                    vendor_message_id=request_id if outcome is Outcome.DELIVERED else None,
                                    retry_after=None if outcome is Outcome.DELIVERED else retry_after))
    return receipts




class HuaweiChannel(BatchChannel):
    """Sends to Huawei Push Kit with a cached OAuth2 client-credentials token, up to 1000 tokens a request.

    Args:
        config: the ``[vendors.huawei]`` section (base_url, auth_url, app_id = OAuth client id,
            client_secret, ca_file, concurrency).
        clock: the injected clock (token cache, Retry-After dates).
        transport: an httpx transport to use instead of the network (tests); the token endpoint
            is reached through it too.
        timeout: seconds for connect/read/write/pool.
    """

    vendor = "huawei"
    cap = MAX_TOKENS

    def __init__(self, config: HuaweiConfig, clock: Clock, transport: httpx.AsyncBaseTransport | None = None,
                 *, timeout: float = 10.0) -> None:
        # HTTP/1.1: few, large (~130 KB) batch bodies; see BatchChannel on why not HTTP/2.
        client = httpx.AsyncClient(base_url=config.base_url, http2=False, verify=tls_context(config.ca_file),
                                   transport=transport, timeout=timeout)
        self.tokens = ClientCredentialsTokenProvider(config.auth_url, config.app_id, config.client_secret,
                                                     client, clock, "huawei")
        self.app_id = config.app_id
        super().__init__(client, clock, config.concurrency)

    async def _credential(self) -> str:
        return await self.tokens.token()

    def _authorization(self, credential: str) -> str:
        return f"Bearer {credential}"

    def _invalidate(self, credential: str) -> None:
        self.tokens.invalidate(credential)

    def _request(self, batch: Sequence[PushMessage], now: datetime) -> tuple[str, dict[str, str], bytes]:
        return build_request(batch, self.app_id)

    def _parse(self, status: int, headers: Mapping[str, str], body: bytes, batch: Sequence[PushMessage],
               now: datetime) -> list[Receipt]:
        return parse_response(status, headers, body, batch, now)

    def _needs_refresh(self, receipts: Sequence[Receipt]) -> bool:
        return any(r.reason in REFRESH_CODES for r in receipts)
