"""Xiaomi MiPush channel: pure form-encoded multi-regid request builder, one code→Outcome table, batch sender.

Vendor docs:
    https://dev.mi.com/console/doc/detail?pId=1163 (server API, /v3/message/regid)
    https://dev.mi.com/console/doc/detail?pId=2422 (message classification, extra.channel_id)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import urlencode

import httpx

from engine.clock import Clock
from engine.config import XiaomiConfig
from engine.domain import Outcome, PushMessage, Receipt
from engine.push.base import (
    BatchChannel,
    http_throttle_wins,
    json_object,
    parse_retry_after,
    repeat_key,
    tls_context,
)

__all__ = [
    "CHANNEL_IDS",
    "CODES",
    "MAX_DESCRIPTION",
    "MAX_TITLE",
    "MAX_TOKENS",
    "XiaomiChannel",
    "build_request",
    "notify_id",
    "parse_response",
]

MAX_TOKENS = 1000
MAX_TITLE = 50          # characters, exclusive
MAX_DESCRIPTION = 128   # characters, exclusive

#: ``PushMessage.message_class`` → ``extra.channel_id`` (VENDORS.md §10): 私信 (private) for service
#: messages, 公信 (public) for marketing. Real apps register their own channel ids with Xiaomi.
CHANNEL_IDS: dict[str, str] = {"marketing": "public", "transactional": "private"}

#: Xiaomi ``code`` values (an *int*; every answer is HTTP 200), mapped once. Codes beyond 0 / 20301 /
#: 200001 come from client code and Xiaomi's legacy error list [weak].
CODES: dict[int, Outcome] = {
    0: Outcome.DELIVERED,                 # data.bad_regids are INVALID_TOKEN
    10001: Outcome.TRANSIENT,             # system error
    10002: Outcome.TRANSIENT,             # service paused
    10003: Outcome.TRANSIENT,             # remote service error
    10009: Outcome.TRANSIENT,             # system busy
    10016: Outcome.REJECTED_PAYLOAD,      # missing required parameter
    10017: Outcome.REJECTED_PAYLOAD,      # illegal parameter value
    10018: Outcome.REJECTED_PAYLOAD,      # request too long
    10022: Outcome.RATE_LIMITED,          # IP request rate over the limit
    10023: Outcome.RATE_LIMITED,          # app request rate over the limit
    10027: Outcome.RATE_LIMITED,
    10037: Outcome.RATE_LIMITED,
    20301: Outcome.INVALID_TOKEN,         # every target invalid
    21301: Outcome.AUTH_ERROR,            # authentication failed (wrong app secret)
    22022: Outcome.AUTH_ERROR,            # invalid package name: configuration
    200001: Outcome.QUOTA_EXHAUSTED,      # daily quota: stop (xiaomi, app, class) for the day
}


def notify_id(key: str) -> int:
    """A stable ``notify_id`` (0..2^31−1) for a collapse or send id."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % 2**31


def build_request(batch: Sequence[PushMessage], package_name: str) -> tuple[str, dict[str, str], bytes]:
    """Build one ``/v3/message/regid`` request for messages sharing one content (pure).

    Returns:
        ``(path, headers, body)``; body is ``application/x-www-form-urlencoded`` with
        ``registration_id`` (comma-joined), ``restricted_package_name``, ``pass_through=0``,
        ``title``, ``description``, ``payload`` (JSON of ``data``), ``notify_type=-1``,
        ``time_to_live`` (ms), ``notify_id``, ``extra.channel_id``, ``extra.notify_effect=1``
        (open the app), ``extra.jobkey`` (the send id, client-side dedup).

    Raises:
        ValueError: empty batch, more than `MAX_TOKENS`, a token with a comma, a title of 50 or
            more characters or a description of 128 or more. KeyError: unknown message class.
    """
    if not 1 <= len(batch) <= MAX_TOKENS:
        raise ValueError(f"a Xiaomi request carries 1..{MAX_TOKENS} regids, not {len(batch)}")
    first = batch[0]
    if len(first.title) >= MAX_TITLE or not first.title.strip():
        raise ValueError(f"title must be 1..{MAX_TITLE - 1} characters")
    if len(first.body) >= MAX_DESCRIPTION:
        raise ValueError(f"description must be under {MAX_DESCRIPTION} characters")
    if any("," in m.token for m in batch):
        raise ValueError("a regid cannot contain a comma")
    form = {
        "registration_id": ",".join(m.token for m in batch),
        "restricted_package_name": package_name,
        "pass_through": "0",
        "title": first.title,
        "description": first.body,
        "notify_type": "-1",
        "time_to_live": str(max(0, min(first.ttl_seconds, 1_209_600)) * 1000),
        "extra.channel_id": CHANNEL_IDS[first.message_class],
        "extra.notify_effect": "1",
    }
    if first.data:
        form["payload"] = json.dumps(first.data, ensure_ascii=False, separators=(",", ":"))
    key = repeat_key(batch)
    if key:   # same notify_id replaces on the device; without one MIUI shows only the latest push
        form["notify_id"] = str(notify_id(key))
    if len(batch) == 1:
        form["extra.jobkey"] = first.send_id.replace("-", "")[:20]
    return ("/v3/message/regid", {"content-type": "application/x-www-form-urlencoded;charset=UTF-8"},
            urlencode(form).encode())


@http_throttle_wins
def parse_response(status: int, headers: Mapping[str, str], body: bytes, batch: Sequence[PushMessage],
                   now: datetime | None = None) -> list[Receipt]:
    """Classify one answer into one Receipt per message of ``batch`` through `CODES`.

    ``{"result": "ok", "code": 0, "data": {"id", "bad_regids": "r1,r2"}}``: exactly the listed
    regids are INVALID_TOKEN. ``{"result": "error", "code": N, "reason"}`` comes with HTTP 200 too;
    without a body code the HTTP status decides.
    """
    data = json_object(body)
    raw = data.get("code")
    code = raw if isinstance(raw, int) and not isinstance(raw, bool) else None
    result = data.get("data") if isinstance(data.get("data"), dict) else {}
    message_id = result.get("id") if isinstance(result.get("id"), str) else None
    bad_field = result.get("bad_regids")
    bad = set(bad_field.split(",")) - {""} if isinstance(bad_field, str) else set()
    retry_after = parse_retry_after({k.lower(): v for k, v in headers.items()}.get("retry-after"),
                                    now or datetime.now(UTC))
    outcome = (CODES.get(code) if code is not None else None) or _by_status(status)
    reason = str(code) if code is not None else f"http_{status}"
    receipts = []
    for m in batch:
        if outcome is Outcome.DELIVERED and m.token in bad:
            receipts.append(Receipt(send_id=m.send_id, outcome=Outcome.INVALID_TOKEN, status_code=status,
                                    reason="0:bad_regids", vendor_message_id=message_id))
        else:
            delivered = outcome is Outcome.DELIVERED
            receipts.append(Receipt(send_id=m.send_id, outcome=outcome, status_code=status, reason=reason,
                                    vendor_message_id=message_id if delivered else None,
                                    retry_after=None if delivered else retry_after))
    return receipts


def _by_status(status: int) -> Outcome:
    if status == 429:
        return Outcome.RATE_LIMITED
    if status in (401, 403):
        return Outcome.AUTH_ERROR
    if 400 <= status < 500:
        return Outcome.REJECTED_PAYLOAD
    return Outcome.TRANSIENT   # 5xx, or 200 with a code we do not know


class XiaomiChannel(BatchChannel):
    """Sends to Xiaomi MiPush with the static ``key=<AppSecret>`` header, up to 1000 regids a request.

    Args:
        config: the ``[vendors.xiaomi]`` section (base_url, app_secret, package_name, ca_file).
        clock: the injected clock (Retry-After dates).
        transport: an httpx transport to use instead of the network (tests).
        timeout: seconds for connect/read/write/pool.
    """

    vendor = "xiaomi"
    cap = MAX_TOKENS

    def __init__(self, config: XiaomiConfig, clock: Clock, transport: httpx.AsyncBaseTransport | None = None,
                 *, timeout: float = 10.0) -> None:
        # HTTP/1.1: few, large (~130 KB) batch bodies; see BatchChannel on why not HTTP/2.
        client = httpx.AsyncClient(base_url=config.base_url, http2=False, verify=tls_context(config.ca_file),
                                   transport=transport, timeout=timeout)
        self._secret = config.app_secret
        self.package_name = config.package_name
        super().__init__(client, clock, config.concurrency)

    def __repr__(self) -> str:
        return f"XiaomiChannel(package_name={self.package_name!r})"

    async def _credential(self) -> str:
        return self._secret

    def _authorization(self, credential: str) -> str:
        return f"key={credential}"

    def _invalidate(self, credential: str) -> None:
        """A static secret cannot be refreshed."""

    def _request(self, batch: Sequence[PushMessage], now: datetime) -> tuple[str, dict[str, str], bytes]:
        return build_request(batch, self.package_name)

    def _parse(self, status: int, headers: Mapping[str, str], body: bytes, batch: Sequence[PushMessage],
               now: datetime) -> list[Receipt]:
        return parse_response(status, headers, body, batch, now)

    def _needs_refresh(self, receipts: Sequence[Receipt]) -> bool:
        return False
