"""A loopback Meizu Flyme Push server: per-request MD5 signature, field limits, per-token value map.

``POST /garcia/api/server/push/varnished/pushByPushId`` (form) checks ``appId`` (110000), the
signature over the sorted raw params + app secret (1006), ``pushIds`` (1..1000, 1005),
``messageJson`` fields (1005), and answers ``{"code": "200", "value": {code: [pushIds]}}``:
110003 malformed pushId, 110002 unregistered, 520 over the daily cap of the message's class.
Codes are strings, as Meizu sends them.

Vendor docs: https://github.com/MEIZUPUSH/PushAPI
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import secrets
import string
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

from engine.clock import Clock
from engine.push.sandbox.common import Accepted, VendorSandbox, key_of
from engine.push.sandbox.server import Request, Response

__all__ = ["PUSH_PATH", "MeizuSandbox", "new_meizu_token"]

PUSH_PATH = "/garcia/api/server/push/varnished/pushByPushId"
_PUSH_ID = re.compile(r"[A-Za-z0-9]{20,64}")
_CHINA = timedelta(hours=8)


def new_meizu_token(rng: random.Random) -> str:
    """A Meizu pushId shaped like real ones: 35 alphanumerics starting with a letter pair."""
    alphabet = string.ascii_letters + string.digits
    return "UU" + "".join(rng.choice(alphabet) for _ in range(33))


def _answer(code: str, message: str = "", value: Any = None, msg_id: str = "") -> Response:
    return Response.json(200, {"code": code, "message": message, "value": value if value is not None else {},
                               "redirect": "", "msgId": msg_id})


class MeizuSandbox(VendorSandbox):
    """The Meizu handler.

    Args:
        app_id, app_secret: the credentials it accepts.
        clock: sandbox time (quota day in China time).
        daily_quota: accepted messages per class (``"private"``/``"public"``) per day; None = unlimited.
        rate_limit: requests per sandbox-clock second before 110010; None = unlimited.

    Attributes:
        known_tokens: when not None, pushIds outside it answer 110002.
    """

    vendor = "meizu"

    def idempotency_key(self, item: Accepted) -> str:
        """Meizu shows only the latest notification of one notifyKey."""
        return key_of(notifyKey=(item.payload.get("advanceInfo") or {}).get("notifyKey"))

    def __init__(self, app_id: str, app_secret: str, clock: Clock | None = None, *,
                 daily_quota: dict[str, int | None] | None = None, rate_limit: int | None = None) -> None:
        super().__init__(clock)
        self.app_id, self.app_secret = app_id, app_secret
        self.daily_quota = daily_quota if daily_quota is not None else {"private": None, "public": 100_000}
        self.rate_limit = rate_limit
        self.known_tokens: set[str] | None = None
        self._used: dict[tuple[str, str], int] = {}
        self._second: tuple[int, int] = (0, 0)

    def _target(self, request: Request) -> str | None:
        return "send" if request.path == PUSH_PATH else None

    def _error(self, status: int, reason: str, target: str) -> Response:
        if status == 200:
            return _answer(reason or "1001", "injected")
        return Response.json(status, {"code": "500", "message": reason or "injected"})

    def _reject(self, code: str, message: str) -> Response:
        self.count(f"rejected:{code}")
        return _answer(code, message)

    def _route(self, request: Request) -> Response:
        if request.path != PUSH_PATH:
            return Response.json(404, {"code": "500", "message": "no such API"})
        if request.method != "POST":
            return self._reject("1005", "POST only")
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        if not form.get("appId") or not form.get("pushIds") or not form.get("messageJson"):
            return self._reject("110004", "parameter must not be empty")
        if form["appId"] != self.app_id:
            return self._reject("110000", "appId invalid")
        raw = "".join(f"{k}={form[k]}" for k in sorted(form) if k != "sign") + self.app_secret
        if form.get("sign") != hashlib.md5(raw.encode()).hexdigest():
            return self._reject("1006", "signature failed")
        if self.rate_limit is not None:
            second = int(self.clock.now().timestamp())
            with self._lock:
                self._second = (second, self._second[1] + 1 if self._second[0] == second else 1)
                over = self._second[1] > self.rate_limit
            if over:
                return self._reject("110010", "app push rate too high")
        ids = form["pushIds"].split(",")
        if len(ids) > 1000:
            return self._reject("1005", "at most 1000 pushIds")
        try:
            message = json.loads(form["messageJson"])
        except ValueError:
            return self._reject("1005", "messageJson is not JSON")
        problem = _check(message)
        if problem is not None:
            return self._reject("1005", problem)
        return self._deliver(ids, message, request)

    def _deliver(self, ids: list[str], message: dict[str, Any], request: Request) -> Response:
        value: dict[str, list[str]] = {}
        klass = "private" if message.get("noticeMsgType") == 1 else "public"
        day = (self.clock.now() + _CHINA).date().isoformat()
        limit = self.daily_quota.get(klass)
        msg_id = "NS" + secrets.token_hex(10)
        headers = dict(request.headers)
        for push_id in ids:
            code = None
            if not _PUSH_ID.fullmatch(push_id):
                code = "110003"
            elif self.unregistered_at(push_id) is not None or (self.known_tokens is not None
                                                               and push_id not in self.known_tokens):
                code = "110002"
            else:
                with self._lock:
                    used = self._used.get((klass, day), 0)
                    if limit is not None and used >= limit:
                        code = "520"
                    else:
                        self._used[(klass, day)] = used + 1
            if code is not None:
                value.setdefault(code, []).append(push_id)
                self.count(f"rejected:{code}")
                continue
            self.record(Accepted("meizu", push_id, msg_id, headers, message, self.clock.now(), request.connection.id))
        return _answer("200", "", value, msg_id)


def _check(message: Any) -> str | None:
    """The first problem of a notification ``messageJson``, or None."""
    if not isinstance(message, dict):
        return "messageJson must be an object"
    bar = message.get("noticeBarInfo")
    if not isinstance(bar, dict) or bar.get("noticeBarType", 0) not in (0, 2):
        return "noticeBarInfo.noticeBarType must be 0 or 2"
    for name, limit in (("title", 32), ("content", 100)):
        value = bar.get(name)
        if not isinstance(value, str) or not 1 <= len(value) <= limit:
            return f"noticeBarInfo.{name} must be 1..{limit} characters"
    click = message.get("clickTypeInfo", {})
    if not isinstance(click, dict) or click.get("clickType", 0) not in (0, 1, 2):
        return "clickTypeInfo.clickType must be 0, 1 or 2"
    timing = message.get("pushTimeInfo", {})
    valid = timing.get("validTime", 24) if isinstance(timing, dict) else None
    if not isinstance(valid, int) or not 1 <= valid <= 72:
        return "pushTimeInfo.validTime must be 1..72 hours"
    advance = message.get("advanceInfo", {})
    key = advance.get("notifyKey", "") if isinstance(advance, dict) else None
    if not isinstance(key, str) or len(key) > 8:
        return "advanceInfo.notifyKey must be at most 8 characters"
    if message.get("noticeMsgType", 0) not in (0, 1):
        return "noticeMsgType must be 0 or 1"
    return None
