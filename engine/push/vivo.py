"""vivo Push channel: MD5-signed auth, pure builders (single and list), one result→Outcome table.

One token goes through ``/message/send``; 2..1000 tokens through ``/message/saveListPayload``
(→ ``taskId``) then ``/message/pushToList``, whose ``invalidUsers`` name the dead regIds. The
``authToken`` travels in a header of that name. ``requestId`` is derived from the send ids, so a
resend of the same batch is deduplicated by vivo.

Vendor docs: https://dev.vivo.com.cn/documentCenter/doc/362 (服务端 API 接口文档)
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx

from engine.clock import Clock
from engine.config import VivoConfig
from engine.domain import Outcome, PushMessage, Receipt
from engine.errors import AuthError, PushError
from engine.push.auth import CachedToken, fingerprint
from engine.push.base import (
    BatchChannel,
    credential_failure,
    http_throttle_wins,
    json_object,
    parse_retry_after,
    repeat_key,
    tls_context,
    transport_receipt,
)
from engine.push.windows import SEND_WINDOWS

__all__ = ["CLASSES", "CODES", "REFRESH_CODES", "VivoAuth", "VivoChannel", "auth_body", "build_list_request",
           "WINDOW_CODE", "build_payload_request", "build_single_request", "invalid_users", "parse_response",
           "window_opens_in"]

log = logging.getLogger(__name__)

AUTH_PATH = "/message/auth"
CAP = 1000

#: vivo ``result`` codes (VENDORS.md §7; several only seen in production clients), mapped once.
CODES: dict[int, Outcome] = {
    0: Outcome.DELIVERED,
    10000: Outcome.AUTH_ERROR,        # authToken invalid/expired: refreshed and retried once first
    10040: Outcome.TRANSIENT,
    10054: Outcome.INVALID_TOKEN,
    10302: Outcome.INVALID_TOKEN,
    10070: Outcome.QUOTA_EXHAUSTED,   # operational (运营) daily total
    10073: Outcome.QUOTA_EXHAUSTED,   # system (系统) daily total
    10071: Outcome.RATE_LIMITED,      # outside 07:00–23:00 for operational messages: later, not tomorrow
    10085: Outcome.REJECTED_PAYLOAD, 10104: Outcome.REJECTED_PAYLOAD,   # content rejected
    10096: Outcome.REJECTED_PAYLOAD, 10097: Outcome.REJECTED_PAYLOAD,   # category errors
    10252: Outcome.RATE_LIMITED,
}

#: Codes after which the authToken is fetched again and the request retried exactly once.
REFRESH_CODES: frozenset[int] = frozenset({10000})

#: Message class → vivo ``classification`` (1 系统 / 0 运营) and a consistent secondary ``category``.
CLASSES: dict[str, dict[str, Any]] = {
    "transactional": {"classification": 1, "category": "ACCOUNT"},
    "marketing": {"classification": 0, "category": "MARKETING"},
}


def auth_body(config: VivoConfig, now: datetime) -> dict[str, Any]:
    """The ``/message/auth`` body: ``sign`` = lowercase hex MD5(appId + appKey + timestamp + appSecret)."""
    timestamp = int(now.timestamp() * 1000)
    raw = f"{config.app_id}{config.app_key}{timestamp}{config.app_secret}"
    return {"appId": config.app_id, "appKey": config.app_key, "timestamp": timestamp,
            "sign": hashlib.md5(raw.encode()).hexdigest()}


def request_id(batch: Sequence[PushMessage]) -> str:
    """A stable ≤ 64-char requestId: the send id for one message, a digest of all send ids otherwise."""
    if len(batch) == 1 and len(batch[0].send_id) <= 64:
        return batch[0].send_id
    return hashlib.sha256("\n".join(m.send_id for m in batch).encode()).hexdigest()


def _content(msg: PushMessage, key: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"notifyType": 4, "title": msg.title, "content": msg.body,
                            "timeToLive": max(60, min(msg.ttl_seconds, 86_400)), "skipType": 1,
                            "pushMode": 0, **CLASSES[msg.message_class]}
    if msg.data:
        body["clientCustomMap"] = {str(k): str(v) for k, v in msg.data.items()}
    if key:   # same notifyId replaces on the device; the requestId dedups at vivo
        body["notifyId"] = int(hashlib.sha256(key.encode()).hexdigest(), 16) % (2**31 - 1) + 1
    return body


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


_HEADERS = {"content-type": "application/json; charset=UTF-8"}


def build_single_request(msg: PushMessage) -> tuple[str, dict[str, str], bytes]:
    """``/message/send`` for one regId (pure)."""
    return "/message/send", dict(_HEADERS), _json({"regId": msg.token, **_content(msg, repeat_key([msg])),
                                                   "requestId": request_id([msg])})


def build_payload_request(batch: Sequence[PushMessage]) -> tuple[str, dict[str, str], bytes]:
    """``/message/saveListPayload``: the shared content of a 2..1000 batch (pure)."""
    return "/message/saveListPayload", dict(_HEADERS), _json({**_content(batch[0], repeat_key(batch)),
                                                              "requestId": request_id(batch)})


def build_list_request(batch: Sequence[PushMessage], task_id: str) -> tuple[str, dict[str, str], bytes]:
    """``/message/pushToList`` for 2..1000 regIds sharing ``task_id`` (pure).

    Raises:
        ValueError: fewer than 2 or more than 1000 messages.
    """
    if not 2 <= len(batch) <= CAP:
        raise ValueError(f"vivo pushToList takes 2..{CAP} regIds, got {len(batch)}")
    body = {"regIds": [m.token for m in batch], "taskId": task_id, "requestId": request_id(batch),
            "pushMode": 0}
    return "/message/pushToList", dict(_HEADERS), _json(body)


def invalid_users(payload: Mapping[str, Any]) -> set[str]:
    """The regIds in ``invalidUsers``, as exact strings.

    vivo's ``userid`` is a long digit string (23 digits); some answers carry it as a bare JSON
    number. Python's JSON decoder keeps integers exact, so ``str()`` restores the digits; a float
    (an exponent in the answer) cannot name a token and is ignored.
    """
    out: set[str] = set()
    for user in payload.get("invalidUsers") or []:
        userid = user.get("userid") if isinstance(user, dict) else None
        if isinstance(userid, str):
            out.add(userid)
        elif isinstance(userid, int) and not isinstance(userid, bool):
            out.add(str(userid))
    return out


def _code(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


#: Operational messages are refused outside 07:00–23:00 China time (engine.push.windows.SEND_WINDOWS).
WINDOW_CODE = 10071


def window_opens_in(now: datetime) -> float:
    """Seconds from ``now`` (aware) until vivo's operational send window next opens (07:00 China time)."""
    china = now.astimezone(SEND_WINDOWS[("vivo", "marketing")].zone)
    opens = china.replace(hour=SEND_WINDOWS[("vivo", "marketing")].opens, minute=0, second=0, microsecond=0)
    if opens <= china:
        opens += timedelta(days=1)
    return (opens - china).total_seconds()


@http_throttle_wins
def parse_response(status: int, headers: Mapping[str, str], body: bytes, batch: Sequence[PushMessage],
                   now: datetime) -> list[Receipt]:
    """One Receipt per message for a ``send`` or ``pushToList`` answer (pure).

    HTTP status first, then ``result``; with result 0 the regIds in ``invalidUsers`` are
    INVALID_TOKEN and the others DELIVERED with the ``taskId``.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    retry_after = parse_retry_after(lower.get("retry-after"), now)
    payload = json_object(body)
    code = _code(payload.get("result"))
    if status != 200 or code is None:
        outcome = (Outcome.RATE_LIMITED if status == 429 else Outcome.AUTH_ERROR if status in (401, 403)
                   else Outcome.TRANSIENT)
        return [Receipt(m.send_id, outcome, status_code=status, reason=f"http_{status}", retry_after=retry_after)
                for m in batch]
    if code != 0:
        outcome = CODES.get(code, Outcome.REJECTED_PAYLOAD)
        not_before = None
        if code == WINDOW_CODE:   # not the message's fault: it waits for the window, the attempt not counted
            retry_after = window_opens_in(now) if retry_after is None else retry_after
            not_before = now + timedelta(seconds=retry_after)
        return [Receipt(m.send_id, outcome, status_code=200, reason=str(code), retry_after=retry_after,
                        not_before=not_before) for m in batch]
    dead = invalid_users(payload)
    task = str(payload.get("taskId") or "") or None
    return [Receipt(m.send_id, Outcome.INVALID_TOKEN, status_code=200, reason="invalidUsers")
            if m.token in dead else Receipt(m.send_id, Outcome.DELIVERED, status_code=200, vendor_message_id=task)
            for m in batch]


class VivoAuth(CachedToken):
    """Fetches and caches the 1-day ``authToken``; refreshes an hour early, or on demand (10000).

    Args:
        config: app_id, app_key, app_secret.
        http: the client (base_url = the vivo host).
        clock: signs ``timestamp`` and ages the cache.
    """

    LIFETIME = timedelta(days=1)
    MARGIN = timedelta(hours=1)

    def __init__(self, config: VivoConfig, http: httpx.AsyncClient, clock: Clock) -> None:
        super().__init__(clock)
        self._config, self._http = config, http

    async def _fetch(self) -> None:
        now = self._clock.now()
        try:
            response = await self._http.post(self._config.auth_url or AUTH_PATH, content=_json(
                auth_body(self._config, now)), headers=_HEADERS)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            receipt = transport_receipt("auth", exc)
            if receipt.outcome is Outcome.AUTH_ERROR:
                raise AuthError(f"vivo auth: {receipt.reason}") from None
            raise PushError(f"vivo auth unreachable: {type(exc).__name__}") from None
        self.fetches += 1
        payload = json_object(response.content)
        code = _code(payload.get("result"))
        if response.status_code != 200 or code is None or CODES.get(code) in (Outcome.TRANSIENT,
                                                                            Outcome.RATE_LIMITED):
            raise PushError(f"vivo auth answered http {response.status_code} result {code}")
        if code != 0 or not payload.get("authToken"):
            raise AuthError(f"vivo auth refused: result {code}")
        self._token = str(payload["authToken"])
        self._valid_until = now + self.LIFETIME - self.MARGIN
        log.info("fetched vivo authToken fp=%s", fingerprint(self._token))


class VivoChannel(BatchChannel):
    """Sends to vivo Push: one token via ``send``, 2..1000 via ``saveListPayload`` + ``pushToList``.

    Args:
        config: the ``[vendors.vivo]`` section (base_url, app_id, app_key, app_secret, ca_file).
        clock: the injected clock.
        transport: an httpx transport instead of the network (tests).
        timeout: seconds for connect/read/write/pool.
    """

    vendor = "vivo"
    cap = CAP

    def __init__(self, config: VivoConfig, clock: Clock, transport: httpx.AsyncBaseTransport | None = None,
                 *, timeout: float = 10.0) -> None:
        client = httpx.AsyncClient(base_url=config.base_url, verify=tls_context(config.ca_file),
                                   transport=transport, timeout=timeout)
        self.tokens = VivoAuth(config, client, clock)
        super().__init__(client, clock, config.concurrency)

    async def _attempt(self, batch: list[PushMessage]) -> tuple[list[Receipt], str | None]:
        try:
            credential = await self._credential()
        except PushError as exc:
            return credential_failure(batch, exc), None
        now = self._clock.now()
        try:
            request = build_single_request(batch[0]) if len(batch) == 1 else build_payload_request(batch)
        except (KeyError, ValueError) as exc:
            return [Receipt(m.send_id, Outcome.REJECTED_PAYLOAD, reason=f"build: {type(exc).__name__}")
                    for m in batch], None
        try:
            response = await self._post(request, credential)
            if len(batch) > 1:
                saved = json_object(response.content)
                if response.status_code != 200 or saved.get("result") != 0 or not saved.get("taskId"):
                    return self._parse(response.status_code, response.headers, response.content, batch,
                                       now), credential
                response = await self._post(build_list_request(batch, str(saved["taskId"])), credential)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return [transport_receipt(m.send_id, exc) for m in batch], credential
        return self._parse(response.status_code, response.headers, response.content, batch, now), credential

    async def _post(self, request: tuple[str, dict[str, str], bytes], credential: str) -> httpx.Response:
        path, headers, body = request
        return await self._client.post(path, content=body, headers={**headers, "authToken": credential})

    async def _credential(self) -> str:
        return await self.tokens.token()

    def _authorization(self, credential: str) -> str:  # vivo uses the ``authToken`` header
        return ""

    def _invalidate(self, credential: str) -> None:
        self.tokens.invalidate(credential)

    def _request(self, batch: Sequence[PushMessage], now: datetime) -> tuple[str, dict[str, str], bytes]:
        return build_single_request(batch[0]) if len(batch) == 1 else build_payload_request(batch)

    def _parse(self, status: int, headers: Mapping[str, str], body: bytes, batch: Sequence[PushMessage],
               now: datetime) -> list[Receipt]:
        return parse_response(status, headers, body, batch, now)

    def _needs_refresh(self, receipts: Sequence[Receipt]) -> bool:
        return any(r.reason is not None and r.reason.isdigit() and int(r.reason) in REFRESH_CODES
                   for r in receipts)
