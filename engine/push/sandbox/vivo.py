"""A loopback vivo Push server: MD5-signed auth, authToken header, field limits, lists, daily quotas.

``/message/auth`` checks appId/appKey, the ms timestamp (±10 min) and the MD5 sign; ``/message/send``,
``/message/saveListPayload`` and ``/message/pushToList`` check the ``authToken`` header (10000 when
unknown or expired), field types and limits, classification/category consistency (10096/10097),
a required ``requestId`` (a reused one is answered again without counting twice), regId counts
(2..1000), and the daily total per (app, classification) (10070 operational, 10073 system). Dead
regIds answer 10302 (single) or appear in ``invalidUsers`` — as 23-digit strings, or as bare JSON
numbers when ``userid_as_number`` is set (VENDORS.md §13 #20).

Vendor docs: https://dev.vivo.com.cn/documentCenter/doc/362
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
from datetime import datetime, timedelta
from typing import Any

from engine.clock import Clock
from engine.push.sandbox.common import Accepted, VendorSandbox, key_of
from engine.push.sandbox.server import Request, Response

__all__ = ["VivoSandbox", "new_vivo_token"]

SYSTEM_CATEGORIES = frozenset({"IM", "ACCOUNT", "TODO", "DEVICE_REMINDER", "ORDER", "SUBSCRIPTION"})
OPERATION_CATEGORIES = frozenset({"NEWS", "CONTENT", "MARKETING", "SOCIAL"})
_PATHS = {"/message/auth": "token", "/message/send": "send", "/message/saveListPayload": "send",
          "/message/pushToList": "send"}
_CHINA = timedelta(hours=8)


def new_vivo_token(rng: random.Random) -> str:
    """A vivo regId shaped like real ones: 23 decimal digits, no leading zero."""
    return str(rng.randrange(10**22, 10**23))


def _answer(result: int, desc: str = "请求成功", **extra: Any) -> Response:
    return Response.json(200, {"result": result, "desc": desc, **extra})


class VivoSandbox(VendorSandbox):
    """The vivo handler.

    Args:
        app_id, app_key, app_secret: the credentials it accepts.
        clock: sandbox time (timestamp window, token expiry, quota day in China time).
        token_ttl: authToken lifetime, seconds (1 day like vivo).
        daily_quota: accepted messages per classification (0 operational, 1 system) per day; None = unlimited.
        rate_limit: requests per sandbox-clock second before 10252; None = unlimited.
        userid_as_number: write ``invalidUsers[].userid`` as bare JSON numbers.
        send_window: refuse operational messages outside 07:00–23:00 China time (10071).

    Attributes:
        known_tokens: when not None, regIds outside it are invalid.
    """

    vendor = "vivo"

    def idempotency_key(self, item: Accepted) -> str:
        """vivo deduplicates on requestId (this sandbox too); the same notifyId replaces on the device."""
        return key_of(requestId=item.payload.get("requestId"), notifyId=item.payload.get("notifyId"))

    def __init__(self, app_id: str, app_key: str, app_secret: str, clock: Clock | None = None, *,
                 token_ttl: int = 86_400, daily_quota: dict[int, int | None] | None = None,
                 rate_limit: int | None = None, userid_as_number: bool = False, send_window: bool = True) -> None:
        super().__init__(clock)
        self.app_id, self.app_key, self.app_secret = app_id, app_key, app_secret
        self.token_ttl = token_ttl
        self.daily_quota = daily_quota if daily_quota is not None else {0: 10_000, 1: None}
        self.rate_limit = rate_limit
        self.userid_as_number = userid_as_number
        self.send_window = send_window
        self.known_tokens: set[str] | None = None
        self._tokens: dict[str, datetime] = {}
        self._tasks: dict[str, dict[str, Any]] = {}
        self._requests: dict[str, bytes] = {}
        self._used: dict[tuple[int, str], int] = {}
        self._second: tuple[int, int] = (0, 0)

    def _target(self, request: Request) -> str | None:
        return _PATHS.get(request.path)

    def _error(self, status: int, reason: str, target: str) -> Response:
        if status == 200:
            return _answer(int(reason or 10040), "injected")
        return Response.json(status, {"result": 10040, "desc": reason or "injected"})

    def _reject(self, code: int, desc: str) -> Response:
        self.count(f"rejected:{code}")
        return _answer(code, desc)

    def _route(self, request: Request) -> Response:
        if request.path not in _PATHS:
            return Response.json(404, {"result": 10050, "desc": "no such API"})
        try:
            body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            return self._reject(10050, "body is not JSON")
        if not isinstance(body, dict):
            return self._reject(10050, "body is not a JSON object")
        if request.path == "/message/auth":
            return self._auth(body)
        with self._lock:
            expires = self._tokens.get(request.header("authtoken") or "")
        if expires is None or self.clock.now() >= expires:
            return self._reject(10000, "权限认证失败 authToken invalid or expired")
        if self.rate_limit is not None:
            second = int(self.clock.now().timestamp())
            with self._lock:
                self._second = (second, self._second[1] + 1 if self._second[0] == second else 1)
                over = self._second[1] > self.rate_limit
            if over:
                return self._reject(10252, "request rate exceeded")
        request_id = body.get("requestId")
        if not isinstance(request_id, str) or not 1 <= len(request_id) <= 64:
            return self._reject(10055, "requestId is required, at most 64 characters")
        key = f"{request.path}:{request_id}"
        with self._lock:
            replay = self._requests.get(key)
        if replay is not None:   # vivo deduplicates on requestId: same answer, nothing sent twice
            return Response(200, (("content-type", "application/json; charset=UTF-8"),), replay)
        if request.path == "/message/pushToList":
            response = self._push_list(body, request)
        else:
            problem = _check(body, single=request.path == "/message/send")
            if problem is not None:
                return self._reject(*problem)
            hour = (self.clock.now() + _CHINA).hour
            if self.send_window and body["classification"] == 0 and not 7 <= hour < 23:
                return self._reject(10071, "operational messages only 07:00-23:00")
            response = self._save(body) if request.path == "/message/saveListPayload" else self._send(body, request)
        if response.status == 200 and json.loads(response.body).get("result") == 0:
            with self._lock:
                self._requests[key] = response.body
        return response

    def _auth(self, body: dict[str, Any]) -> Response:
        if body.get("appId") != self.app_id or body.get("appKey") != self.app_key:
            return self._reject(10000, "appId or appKey invalid")
        stamp, now = body.get("timestamp"), self.clock.now()
        if not isinstance(stamp, int) or abs(stamp / 1000 - now.timestamp()) > 600:
            return self._reject(10000, "timestamp outside ±10 minutes")
        expected = hashlib.md5(f"{self.app_id}{self.app_key}{stamp}{self.app_secret}".encode()).hexdigest()
        if body.get("sign") != expected:
            return self._reject(10000, "sign invalid")
        token = secrets.token_hex(16)
        with self._lock:
            self._tokens[token] = now + timedelta(seconds=self.token_ttl)
        self.count("token_grants")
        return _answer(0, authToken=token)

    def _dead(self, token: str) -> bool:
        return self.unregistered_at(token) is not None or (self.known_tokens is not None
                                                           and token not in self.known_tokens)

    def _take_quota(self, classification: int, n: int) -> int:
        """How many of ``n`` messages the day's quota still admits (and count them)."""
        day = (self.clock.now() + _CHINA).date().isoformat()
        limit = self.daily_quota.get(classification)
        with self._lock:
            used = self._used.get((classification, day), 0)
            admitted = n if limit is None else max(0, min(n, limit - used))
            self._used[(classification, day)] = used + admitted
        return admitted

    def _quota_code(self, classification: int) -> int:
        return 10073 if classification == 1 else 10070

    def _send(self, body: dict[str, Any], request: Request) -> Response:
        token = body.get("regId")
        if not isinstance(token, str) or self._dead(token):
            return self._reject(10302, "regId invalid")
        if self._take_quota(body["classification"], 1) < 1:
            return self._reject(self._quota_code(body["classification"]), "daily total exceeded")
        task = secrets.token_hex(8)
        self._record(token, task, body, request)
        return _answer(0, taskId=task)

    def _save(self, body: dict[str, Any]) -> Response:
        task = secrets.token_hex(8)
        with self._lock:
            self._tasks[task] = body
        return _answer(0, taskId=task)

    def _push_list(self, body: dict[str, Any], request: Request) -> Response:
        ids, task_id = body.get("regIds"), body.get("taskId")
        with self._lock:
            content = self._tasks.get(str(task_id))
        if content is None:
            return self._reject(10050, "taskId unknown")
        if not isinstance(ids, list) or not 2 <= len(ids) <= 1000 or not all(isinstance(t, str) for t in ids):
            return self._reject(10050, "regIds must hold 2..1000 strings")
        dead = [t for t in ids if self._dead(t)]
        live = [t for t in ids if not self._dead(t)]
        admitted = self._take_quota(content["classification"], len(live))
        if live and admitted == 0:
            return self._reject(self._quota_code(content["classification"]), "daily total exceeded")
        for token in live[:admitted]:
            self._record(token, str(task_id), content, request)
        self.count("rejected:invalidUsers", len(dead))
        users = [{"status": 2, "userid": int(t) if self.userid_as_number and t.isdigit() else t} for t in dead]
        return _answer(0, taskId=task_id, invalidUsers=users)

    def _record(self, token: str, task: str, body: dict[str, Any], request: Request) -> None:
        headers = {k: v for k, v in request.headers if k != "authtoken"}
        self.record(Accepted("vivo", token, task, headers, body, self.clock.now(), request.connection.id))


def _check(body: dict[str, Any], *, single: bool) -> tuple[int, str] | None:
    """(result, desc) for the first problem of a send / saveListPayload body, or None."""
    for name, limit in (("title", 40), ("content", 100)):
        value = body.get(name)
        if not isinstance(value, str) or not 1 <= len(value) <= limit:
            return 10050, f"{name} must be 1..{limit} characters"
        if not any(ch.isalpha() for ch in value):   # pure digits / symbols are refused as spam
            return 10085, f"{name} content rejected"
    if body.get("notifyType") not in (1, 2, 3, 4) or body.get("skipType") not in (1, 2, 3, 4):
        return 10050, "notifyType and skipType must be 1..4"
    ttl = body.get("timeToLive", 86_400)
    if not isinstance(ttl, int) or not 60 <= ttl <= 86_400:
        return 10050, "timeToLive must be 60..86400 seconds"
    classification, category = body.get("classification", 0), body.get("category")
    if classification not in (0, 1):
        return 10050, "classification must be 0 or 1"
    if category is not None:
        if category not in SYSTEM_CATEGORIES | OPERATION_CATEGORIES:
            return 10096, "category invalid"
        if (category in SYSTEM_CATEGORIES) != (classification == 1):
            return 10097, "category inconsistent with classification"
    custom = body.get("clientCustomMap", {})
    if not isinstance(custom, dict) or len(json.dumps(custom, ensure_ascii=False)) > 1024:
        return 10050, "clientCustomMap must be an object of at most 1024 characters"
    if single and not isinstance(body.get("regId"), str):
        return 10050, "regId is required"
    body.setdefault("classification", classification)
    return None
