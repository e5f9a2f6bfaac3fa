"""Meizu Flyme Push channel: per-request MD5 signature, pure builder, one code→Outcome table.

``pushByPushId`` takes ≤ 1000 comma-separated pushIds and one ``messageJson``; the answer's
``code`` is a *string*, and with ``"200"`` its ``value`` maps per-token codes to lists of pushIds.
There is no token endpoint: every request is signed with the app secret.

Vendor docs: https://github.com/MEIZUPUSH/PushAPI (魅族开放平台PUSH系统HTTP接口文档)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import httpx

from engine.clock import Clock
from engine.config import MeizuConfig
from engine.domain import Outcome, PushMessage, Receipt
from engine.push.base import (
    BatchChannel,
    http_throttle_wins,
    json_object,
    parse_retry_after,
    repeat_key,
    tls_context,
    transport_receipt,
)

__all__ = ["CLASSES", "CODES", "PUSH_PATH", "MeizuChannel", "build_request", "parse_response", "sign"]

PUSH_PATH = "/garcia/api/server/push/varnished/pushByPushId"
CAP = 1000

#: Meizu codes, top-level ``code`` and the keys of ``value`` (per-token), mapped once (VENDORS.md §8).
CODES: dict[str, Outcome] = {
    "200": Outcome.DELIVERED,
    "500": Outcome.TRANSIENT,
    "1001": Outcome.TRANSIENT,
    "1003": Outcome.RATE_LIMITED,          # server busy
    "1005": Outcome.REJECTED_PAYLOAD,
    "1006": Outcome.AUTH_ERROR,            # signature failed
    "110000": Outcome.AUTH_ERROR, "110001": Outcome.AUTH_ERROR, "110009": Outcome.AUTH_ERROR,
    "110004": Outcome.REJECTED_PAYLOAD,
    "110010": Outcome.RATE_LIMITED,        # app push rate too high
    "110053": Outcome.REJECTED_PAYLOAD,    # pass-through limit (we never send pass-through)
    # per-token keys of ``value``
    "110002": Outcome.INVALID_TOKEN,       # pushId expired (unsubscribed, switch off)
    "110003": Outcome.INVALID_TOKEN,       # pushId illegal
    "110005": Outcome.INVALID_TOKEN,       # alias invalid
    "201": Outcome.AUTH_ERROR,             # no permission
    "501": Outcome.TRANSIENT,
    "513": Outcome.RATE_LIMITED, "519": Outcome.RATE_LIMITED,
    "520": Outcome.QUOTA_EXHAUSTED,        # folded / over the device cap (VENDORS.md §10, §14)
}

#: Message class → ``messageJson.noticeMsgType`` (1 私信 private / 0 公信 public). [weak] The field
#: name comes from Meizu's 2023 classification notice, not the API README; keep it in one place.
CLASSES: dict[str, dict[str, Any]] = {
    "transactional": {"noticeMsgType": 1},
    "marketing": {"noticeMsgType": 0},
}


def sign(params: Mapping[str, str], secret: str) -> str:
    """Lowercase hex MD5 of ``k1=v1k2=v2…`` (names sorted, raw values, ``sign`` excluded) + secret."""
    raw = "".join(f"{k}={params[k]}" for k in sorted(params) if k != "sign") + secret
    return hashlib.md5(raw.encode()).hexdigest()


def _message_json(msg: PushMessage, key: str | None) -> str:
    message: dict[str, Any] = {
        "noticeBarInfo": {"noticeBarType": 0, "title": msg.title, "content": msg.body},
        "clickTypeInfo": {"clickType": 0, "parameters": {str(k): str(v) for k, v in msg.data.items()}},
        "pushTimeInfo": {"offLine": 1, "validTime": max(1, min(72, -(-msg.ttl_seconds // 3600)))},
        "advanceInfo": {"notificationType": {"vibrate": True, "lights": True, "sound": True}},
        **CLASSES[msg.message_class],
    }
    if key:   # notifyKey collapses: a repeat of the send replaces the first copy on the device
        message["advanceInfo"]["notifyKey"] = hashlib.sha256(key.encode()).hexdigest()[:8]
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def build_request(batch: Sequence[PushMessage], app_id: str, secret: str) -> tuple[str, dict[str, str], bytes]:
    """The signed ``pushByPushId`` form for ≤ 1000 messages sharing one content (pure).

    Raises:
        ValueError: an empty batch or more than 1000 messages.
    """
    if not 1 <= len(batch) <= CAP:
        raise ValueError(f"Meizu batches hold 1..{CAP} pushIds, got {len(batch)}")
    params = {"appId": app_id, "pushIds": ",".join(m.token for m in batch), "messageJson": _message_json(batch[0], repeat_key(batch))}
    params["sign"] = sign(params, secret)
    return PUSH_PATH, {"content-type": "application/x-www-form-urlencoded;charset=UTF-8"}, urlencode(params).encode()


def _per_token(value: Any) -> dict[str, str]:
    """pushId → code from ``value`` (lists or comma-separated strings)."""
    out: dict[str, str] = {}
    if isinstance(value, dict):
        for code, ids in value.items():
            items = ids.split(",") if isinstance(ids, str) else ids if isinstance(ids, list) else []
            for push_id in items:
                out[str(push_id).strip()] = str(code)
    return out


@http_throttle_wins
def parse_response(status: int, headers: Mapping[str, str], body: bytes, batch: Sequence[PushMessage],
                   now: datetime) -> list[Receipt]:
    """One Receipt per message (pure): HTTP status, then the string ``code``, then ``value`` per token."""
    lower = {k.lower(): v for k, v in headers.items()}
    retry_after = parse_retry_after(lower.get("retry-after"), now)
    payload = json_object(body)
    code = payload.get("code")
    code = str(code) if isinstance(code, str | int) and not isinstance(code, bool) else None
    if status != 200 or code is None:
        outcome = (Outcome.RATE_LIMITED if status == 429 else Outcome.AUTH_ERROR if status in (401, 403)
                   else Outcome.TRANSIENT)
        return [Receipt(m.send_id, outcome, status_code=status, reason=f"http_{status}", retry_after=retry_after)
                for m in batch]
    if code != "200":
        outcome = CODES.get(code, Outcome.REJECTED_PAYLOAD)
        return [Receipt(m.send_id, outcome, status_code=200, reason=code, retry_after=retry_after) for m in batch]
    failed = _per_token(payload.get("value"))
    msg_id = str(payload.get("msgId") or "") or None
    out = []
    for m in batch:
        token_code = failed.get(m.token)
        if token_code is None:
            out.append(Receipt(m.send_id, Outcome.DELIVERED, status_code=200, vendor_message_id=msg_id))
        else:
            out.append(Receipt(m.send_id, CODES.get(token_code, Outcome.REJECTED_PAYLOAD), status_code=200,
                               reason=token_code))
    return out


class MeizuChannel(BatchChannel):
    """Sends to Meizu Push, ≤ 1000 pushIds per signed request (no credential to refresh).

    Args:
        config: the ``[vendors.meizu]`` section (base_url, app_id, app_secret, ca_file).
        clock: the injected clock.
        transport: an httpx transport instead of the network (tests).
        timeout: seconds for connect/read/write/pool.
    """

    vendor = "meizu"
    cap = CAP

    def __init__(self, config: MeizuConfig, clock: Clock, transport: httpx.AsyncBaseTransport | None = None,
                 *, timeout: float = 10.0) -> None:
        client = httpx.AsyncClient(base_url=config.base_url, verify=tls_context(config.ca_file),
                                   transport=transport, timeout=timeout)
        self.app_id = config.app_id
        self._secret = config.app_secret
        super().__init__(client, clock, config.concurrency)

    def __repr__(self) -> str:
        return f"MeizuChannel(app_id={self.app_id!r})"

    async def _attempt(self, batch: list[PushMessage]) -> tuple[list[Receipt], str | None]:
        now = self._clock.now()
        try:
            path, headers, body = self._request(batch, now)
        except (KeyError, ValueError) as exc:
            return [Receipt(m.send_id, Outcome.REJECTED_PAYLOAD, reason=f"build: {type(exc).__name__}")
                    for m in batch], None
        try:
            response = await self._client.post(path, content=body, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return [transport_receipt(m.send_id, exc) for m in batch], None
        return self._parse(response.status_code, response.headers, response.content, batch, now), None

    async def _credential(self) -> str:
        return ""

    def _authorization(self, credential: str) -> str:
        return ""

    def _invalidate(self, credential: str) -> None:
        """Nothing cached: every request is signed afresh."""

    def _request(self, batch: Sequence[PushMessage], now: datetime) -> tuple[str, dict[str, str], bytes]:
        return build_request(batch, self.app_id, self._secret)

    def _parse(self, status: int, headers: Mapping[str, str], body: bytes, batch: Sequence[PushMessage],
               now: datetime) -> list[Receipt]:
        return parse_response(status, headers, body, batch, now)

    def _needs_refresh(self, receipts: Sequence[Receipt]) -> bool:
        return False
