"""A loopback Xiaomi MiPush ``/v3/message/regid`` API that enforces the protocol client libraries use.

Every answer is HTTP 200 with a JSON business code: the static ``Authorization: key=<AppSecret>``
(21301), ``restricted_package_name`` (22022), the form fields (10016 missing / 10017 illegal:
1..1000 comma-separated regids, title under 50 characters, description under 128, registered
``extra.channel_id``, ttl at most two weeks, 4096-byte content), the request rate (10023) and the daily
quota per (app, class) (200001). Dead regids come back in ``data.bad_regids``; when every target is
dead the answer is 20301.

Vendor docs:
    https://dev.mi.com/console/doc/detail?pId=1163
"""

from __future__ import annotations

import base64
import re
import secrets
from typing import Any
from urllib.parse import parse_qs

from engine.clock import Clock
from engine.push.sandbox.common import Accepted, Limits, VendorSandbox, key_of
from engine.push.sandbox.server import Request, Response
from engine.push.xiaomi import CHANNEL_IDS, MAX_DESCRIPTION, MAX_TITLE, MAX_TOKENS

__all__ = ["SEND_PATH", "XiaomiSandbox", "new_xiaomi_token"]

SEND_PATH = "/v3/message/regid"
MAX_BODY_BYTES = 4096
_REGID = re.compile(r"[A-Za-z0-9+/=_\-]{20,256}")
_TWO_WEEKS_MS = 14 * 86_400_000


def new_xiaomi_token(rng: Any) -> str:
    """A MiPush regid shaped like real ones (64 base64 characters, seeded)."""
    return base64.b64encode(bytes(rng.getrandbits(8) for _ in range(48))).decode()


def _error(code: int, reason: str) -> Response:
    return Response.json(200, {"result": "error", "code": code, "reason": reason, "description": reason,
                               "trace_id": secrets.token_hex(12)})


class XiaomiSandbox(VendorSandbox):
    """The MiPush handler.

    Args:
        clock: sandbox time (quota days, acceptance times).

    Attributes:
        apps: ``{app_secret: package_name}`` allowed to push.
        channels: ``{extra.channel_id: message class}`` registered for the app.
        limits: ``daily_quota`` per class (200001 beyond), ``rate_per_second`` (10023 beyond).
        known_tokens: when not None, regids outside it are bad.
    """

    vendor = "xiaomi"

    def idempotency_key(self, item: Accepted) -> str:
        """Xiaomi replaces a notification with the same notify_id; extra.jobkey dedups on the device."""
        return key_of(notify_id=item.payload.get("notify_id"), jobkey=item.payload.get("extra.jobkey"))

    def __init__(self, clock: Clock | None = None) -> None:
        super().__init__(clock)
        self.apps: dict[str, str] = {}
        self.channels: dict[str, str] = {v: k for k, v in CHANNEL_IDS.items()}
        self.limits = Limits(self.clock)
        self.known_tokens: set[str] | None = None

    def register_app(self, app_secret: str, package_name: str) -> None:
        with self._lock:
            self.apps[app_secret] = package_name

    def _target(self, request: Request) -> str | None:
        return "send" if request.path == SEND_PATH else None

    def _error(self, status: int, reason: str, target: str) -> Response:
        code = int(reason) if reason.isdigit() else 10001
        return Response.json(status, {"result": "error", "code": code, "reason": "injected"})

    def _route(self, request: Request) -> Response:
        if request.path != SEND_PATH:
            return Response.json(404, {"result": "error", "code": 10012, "reason": "illegal request"})
        if request.method != "POST":
            return _error(10012, "POST only")
        return self._send(request)

    def _reject(self, code: int, reason: str) -> Response:
        self.count(f"rejected:{code}")
        return _error(code, reason)

    def _send(self, request: Request) -> Response:
        scheme, _, secret = (request.header("authorization") or "").partition("=")
        with self._lock:
            package = self.apps.get(secret) if scheme.strip().lower() == "key" else None
        if package is None:
            return self._reject(21301, "authentication failed")
        if not self.limits.take_rate():
            return self._reject(10023, "request rate over the limit")
        try:
            form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8"), keep_blank_values=True).items()}
        except UnicodeDecodeError:
            return self._reject(10017, "body is not UTF-8")
        content = sum(len(k.encode()) + len(v.encode()) for k, v in form.items() if k != "registration_id")
        if content > MAX_BODY_BYTES:   # the limit is on the message, not on the audience
            return self._reject(10018, "request too long")
        problem = _check(form, self.channels)
        if problem is not None:
            return self._reject(*problem)
        if package not in form["restricted_package_name"].split(","):
            return self._reject(22022, "invalid package name")
        regids = form["registration_id"].split(",")
        message_class = self.channels[form["extra.channel_id"]]
        if not self.limits.take_quota(package, message_class, len(regids)):
            return self._reject(200001, f"daily {message_class} quota exceeded")
        bad = [r for r in regids if not _REGID.fullmatch(r) or self.unregistered_at(r) is not None
               or (self.known_tokens is not None and r not in self.known_tokens)]
        if len(bad) == len(regids):
            return self._reject(20301, "no valid targets")
        if bad:
            self.count("partial")
        message_id = f"sdm{secrets.token_hex(10)}"
        headers = {k: v for k, v in request.headers if k != "authorization"}
        content = {k: v for k, v in form.items() if k != "registration_id"}
        for regid in regids:
            if regid not in bad:
                self.record(Accepted("xiaomi", regid, message_id, headers, content, self.clock.now(),
                                     request.connection.id))
        data = {"id": message_id, "day_acked": "0", "day_quota": "0"}
        if bad:
            data["bad_regids"] = ",".join(bad)
        return Response.json(200, {"result": "ok", "code": 0, "trace_id": secrets.token_hex(12),
                                   "description": "success", "info": f"Received push messages for {len(regids)} REGID",
                                   "data": data})


def _check(form: dict[str, str], channels: dict[str, str]) -> tuple[int, str] | None:
    """(code, reason) of the first problem in a regid send form, or None."""
    for name in ("registration_id", "restricted_package_name", "title", "description", "extra.channel_id"):
        if name not in form:
            return 10016, f"missing required parameter {name}"
    regids = form["registration_id"].split(",")
    if not 1 <= len(regids) <= MAX_TOKENS:
        return 10017, f"registration_id must list 1..{MAX_TOKENS} regids"
    if not form["title"].strip() or len(form["title"]) >= MAX_TITLE:
        return 10017, f"title must be 1..{MAX_TITLE - 1} characters"
    if len(form["description"]) >= MAX_DESCRIPTION:
        return 10017, f"description must be under {MAX_DESCRIPTION} characters"
    if form.get("pass_through", "0") not in ("0", "1"):
        return 10017, "pass_through must be 0 or 1"
    for name in ("notify_type", "time_to_live", "notify_id", "extra.notify_effect"):
        if name in form and not form[name].lstrip("-").isdigit():
            return 10017, f"{name} must be an integer"
    if int(form.get("time_to_live", "0")) > _TWO_WEEKS_MS:
        return 10017, "time_to_live must be at most two weeks"
    if form["extra.channel_id"] not in channels:
        return 10017, f"unknown extra.channel_id {form['extra.channel_id']!r}"
    return None
