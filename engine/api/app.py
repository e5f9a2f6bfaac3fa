"""The FastAPI application: triggers, events, devices, consent, admin actions, health and metrics.

Every endpoint is ``async`` on purpose: they then run one at a time on the event loop that also runs the
scheduler's jobs, so the store's single DuckDB connection is never used by two callers at once
(docs/decisions/001 and 009). The frequent writes (events, triggers) go through a group commit
(`engine.service.batching`): concurrent requests share one transaction, and each is answered after it
commits. Validation failures answer 400 (malformed JSON), 413 (body too large) or
422 with one line per problem naming the field; no error answer echoes a submitted value.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.analytics.pseudonym import pseudonymise
from engine.api.auth import require, require_metrics
from engine.api.metrics import ApiMetrics
from engine.api.schemas import (
    ConsentIn,
    DeviceIn,
    DeviceOut,
    EraseIn,
    EventsIn,
    EventsOut,
    KeyIn,
    SecretIn,
    TriggerIn,
    TriggerOut,
)
from engine.api.web import SecurityHeaders, mount_docs
from engine.clock import Clock, SystemClock
from engine.errors import InputError, PushwiseError
from engine.security import vendor_secrets
from engine.security.apikeys import (
    ApiKey,
    NonceCache,
    RateLimiter,
    audit,
    audit_many,
    create_key,
    list_keys,
    revoke_key,
)
from engine.security.crypto import Keyring
from engine.service import operations as ops
from engine.service.batching import GroupCommit
from engine.service.trigger import TriggerSpec, plan_triggers, send_status
from engine.store import Store

__all__ = ["MAX_BODY_BYTES", "ServiceContext", "create_app"]

log = logging.getLogger(__name__)
SendKey = Annotated[ApiKey, Depends(require("send"))]
IngestKey = Annotated[ApiKey, Depends(require("ingest"))]
AdminKey = Annotated[ApiKey, Depends(require("admin"))]
MAX_BODY_BYTES = 1_000_000
MAX_EVENT_LEAD = timedelta(days=1)
#: Manual backups (``pushwise backup`` while serving) kept in the service's folder until the CLI has copied
#: them: a few, so that two CLIs backing up at once do not prune each other's before the copy.
MANUAL_BACKUPS_KEPT = 3


@dataclass
class ServiceContext:
    """What the app needs, injected (tests build one over a temporary store)."""

    store: Store
    keyring: Keyring
    pseudonym_key: bytes
    clock: Clock = field(default_factory=SystemClock)
    backup_dir: Path | None = None
    backup_keep: int = 7
    retention_days: float = 0.0
    metrics_open_on_loopback: bool = False   # /metrics without a key from loopback (see engine.api.auth)
    #: hosts a Web Push subscription may point at (WebPushConfig.endpoint_hosts; its defaults when None)
    webpush_hosts: tuple[str, ...] | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    nonces: NonceCache = field(default_factory=NonceCache)
    limiter: RateLimiter = field(default_factory=RateLimiter)
    denials_audited_per_second: float = 20.0   # refusals beyond this are counted in /metrics, not audited
    denial_budget: RateLimiter = field(default_factory=RateLimiter)
    key_cache: dict = field(default_factory=dict)   # sha256(bearer) → (ApiKey, expiry), see engine.api.auth
    #: called with the new keyring after a rotation (the dispatcher decrypts tokens with its own reference)
    keyring_listeners: list[Callable[[Keyring], None]] = field(default_factory=list)
    metrics: ApiMetrics = field(init=False)

    writes: GroupCommit = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = ApiMetrics(lambda: self.store)
        self.writes = GroupCommit(self.store, {"events": self._events, "trigger": self._triggers})

    def _events(self, store: Store, batches: list[list[tuple]]) -> list[tuple[int, int]]:
        """Each request's (event_id, user_id, item_id, event_type, ts, properties JSON) rows, in one frame."""
        frame = pd.DataFrame([r for rows in batches for r in rows],
                             columns=["event_id", "user_id", "item_id", "event_type", "ts", "properties"])
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        frame["batch"] = np.repeat(np.arange(len(batches)), [len(rows) for rows in batches])
        return ops.append_events(store, frame, self.clock.now(), batches=len(batches))

    def _triggers(self, store: Store, items: list[tuple[TriggerSpec, str | None]]) -> list[dict]:
        """Plan the triggers and write their audit rows, in the same transaction."""
        now = self.clock.now()
        out = plan_triggers(store, [spec for spec, _ in items], now)
        audit_many(store, [(now, key_id, "trigger", r["trigger_id"], 202, f"{spec.name}: {r['sends']} sends")
                           for (spec, key_id), r in zip(items, out, strict=True)])
        return out

    def pseudonym(self, user_id: str) -> str:
        return "u:" + pseudonymise(user_id, self.pseudonym_key)


class _BodyLimit:
    """ASGI middleware: refuse bodies over the limit with 413 before they are buffered whole."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await _too_large(self.limit)(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _BodyTooLarge(self.limit)
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge:
            await _too_large(self.limit)(scope, receive, send)


class _Measure:
    """ASGI middleware: request count by route and status, and latency by route, for /metrics.

    Plain ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware runs every
    request through extra tasks and streams, a third of a light request's cost here.
    """

    def __init__(self, app, metrics: ApiMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = 500

        async def sent(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            name = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(name, str(status)).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - t0)


class _BodyTooLarge(StarletteHTTPException):
    """An HTTP exception, so FastAPI's body parsing passes it on instead of answering 400 (chunked bodies)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large_message(limit))


def _too_large_message(limit: int) -> str:
    return f"request body larger than {limit} bytes"


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"error": _too_large_message(limit)}, status_code=413)


def _problems(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        where = next(e for e in errors if e.get("type") == "json_invalid")
        reason = (where.get("ctx") or {}).get("error", "cannot parse")
        return JSONResponse({"error": f"malformed JSON: {reason}"}, status_code=400)
    problems = [{"where": ".".join(str(p) for p in e.get("loc", ())), "problem": str(e.get("msg", "invalid"))}
                for e in errors]
    return JSONResponse({"error": "invalid request", "problems": problems}, status_code=422)


def create_app(ctx: ServiceContext) -> FastAPI:
    """Build the API over ``ctx``; OpenAPI at ``/openapi.json``, interactive docs at ``/docs``."""
    app = FastAPI(title="Pushwise", version="1", description="Personalized push: triggers, events, devices, consent",
                  docs_url=None, redoc_url=None, swagger_ui_oauth2_redirect_url=None)   # no CDN: engine.api.web
    app.state.ctx = ctx
    mount_docs(app)
    app.add_middleware(_BodyLimit, limit=ctx.max_body_bytes)
    app.add_middleware(_Measure, metrics=ctx.metrics)
    app.add_middleware(SecurityHeaders)   # outermost: also on 413s and errors answered by the middlewares
    app.add_exception_handler(RequestValidationError, lambda _r, exc: _problems(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(InputError)
    async def _input(_r: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=422)

    @app.exception_handler(PushwiseError)
    async def _internal(_r: Request, exc: PushwiseError) -> JSONResponse:
        log.error("request failed: %s", type(exc).__name__)  # never the message: it may quote stored values
        return JSONResponse({"error": "internal error; nothing was changed"}, status_code=503)


    def _audit(request: Request, action: str, target: str | None, status: int, detail: str | None = None) -> None:
        audit(ctx.store, ctx.clock.now(), getattr(request.state, "key_id", None), action, target, status, detail)

    @app.get("/v1/health", tags=["service"])
    async def health() -> dict:
        """Liveness and the outbox depth (no authentication; no personal data)."""
        depth = ctx.store.execute("SELECT count(*) FROM sends WHERE state IN ('pending', 'retry')").fetchall()[0][0]
        return {"status": "ok", "queue_depth": depth}

    @app.get("/metrics", tags=["service"], response_class=Response, dependencies=[Depends(require_metrics)])
    async def metrics() -> Response:
        """Prometheus text exposition; needs a key with the 'metrics' (or 'admin') scope."""
        return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/triggers", status_code=202, response_model=TriggerOut, tags=["sends"])
    async def trigger(body: TriggerIn, request: Request, key: SendKey) -> dict:
        """Plan a personalized send for users or a segment, now or at each user's best time."""
        spec = TriggerSpec(name=body.name, title=body.title, body=body.body, message_class=body.message_class,
                           when=body.when, user_ids=tuple(body.user_ids), countries=tuple(body.countries),
                           item_id=body.item_id, data=body.data)
        return await ctx.writes.submit("trigger", (spec, getattr(request.state, "key_id", None)))

    @app.get("/v1/triggers/{trigger_id}", tags=["sends"])
    async def trigger_status(trigger_id: str, key: SendKey) -> dict:
        """Sends of a trigger by state."""
        status = send_status(ctx.store, trigger_id[:64])
        if status is None:
            raise HTTPException(404, "no trigger with this id")
        return status

    @app.post("/v1/events", response_model=EventsOut, tags=["events"])
    async def events(body: EventsIn, request: Request, key: IngestKey) -> dict:
        """Append app events (opens, clicks, purchases); a repeated event_id is ignored."""
        # retention purges by event time: an event dated far ahead would outlive it (a day covers clock skew)
        ahead = ctx.clock.now() + MAX_EVENT_LEAD
        late = next((n for n, e in enumerate(body.events) if e.ts > ahead), None)
        if late is not None:
            raise InputError(f"events.{late}.ts is more than a day ahead of the server clock")
        rows = [(e.event_id, e.user_id, e.item_id, e.event_type, e.ts, e.properties_json()) for e in body.events]
        stored, dup = await ctx.writes.submit("events", rows)
        return {"stored": stored, "duplicates": dup}

    @app.post("/v1/devices", response_model=DeviceOut, tags=["devices"])
    async def device(body: DeviceIn, request: Request, key: IngestKey) -> dict:
        """Register a device token, or refresh it when already known (stored encrypted)."""
        r = ops.register_device(ctx.store, ctx.keyring, user_id=body.user_id, vendor=body.vendor, token=body.token,
                                now=ctx.clock.now(), app_id=body.app_id, time_zone=body.time_zone,
                                webpush_hosts=ctx.webpush_hosts)
        _audit(request, "device.register", ctx.pseudonym(body.user_id), 200, body.vendor)
        return {"device_id": r.device_id, "created": r.created}

    @app.delete("/v1/devices/{device_id}", status_code=204, tags=["devices"])
    async def remove(device_id: str, request: Request, key: IngestKey) -> Response:
        """Remove a device; sends planned for it are cancelled when they come due."""
        if not ops.remove_device(ctx.store, device_id[:64]):
            raise HTTPException(404, "no device with this id")
        _audit(request, "device.remove", device_id[:64], 204)
        return Response(status_code=204)

    @app.put("/v1/consents", tags=["consent"])
    async def consent(body: ConsentIn, request: Request, key: IngestKey) -> dict:
        """Grant or withdraw consent per channel and message class; withdrawal cancels planned sends."""
        ops.set_consent(ctx.store, user_id=body.user_id, channel=body.channel, message_class=body.message_class,
                        granted=body.granted, now=ctx.clock.now())
        _audit(request, "consent", ctx.pseudonym(body.user_id), 200, f"{body.message_class}={body.granted}")
        return {"user_id": body.user_id, "message_class": body.message_class, "granted": body.granted}

    @app.post("/v1/admin/erase", tags=["admin"])
    async def erase(body: EraseIn, request: Request, key: AdminKey) -> dict:
        """Erase every row about a user (events, devices, decisions, sends, consent)."""
        counts = ops.erase_user(ctx.store, body.user_id, key=ctx.pseudonym_key, now=ctx.clock.now())
        _audit(request, "erase", ctx.pseudonym(body.user_id), 200, str(sum(counts.values())))
        return {"deleted": counts}

    @app.post("/v1/admin/keys", status_code=201, tags=["admin"])
    async def new_key(body: KeyIn, request: Request, key: AdminKey) -> dict:
        """Create an API key; the key is in this answer only."""
        full, made = create_key(ctx.store, ctx.keyring, list(body.scopes), ctx.clock.now(), label=body.label,
                                rate_per_second=body.rate_per_second)
        _audit(request, "key.create", made.key_id, 201, ",".join(made.scopes))
        return {"key": full, "key_id": made.key_id, "scopes": list(made.scopes)}

    @app.get("/v1/admin/keys", tags=["admin"])
    async def keys(key: AdminKey) -> list[dict]:
        """Every API key's id, scopes, label, rate and dates (never a secret)."""
        return list_keys(ctx.store)

    @app.delete("/v1/admin/keys/{key_id}", tags=["admin"])
    async def revoke(key_id: str, request: Request, key: AdminKey) -> dict:
        """Revoke a key at once (this process forgets it too; no grace period)."""
        if not revoke_key(ctx.store, key_id, ctx.clock.now()):
            raise HTTPException(404, f"no live API key {key_id!r}")
        ctx.key_cache.clear()                  # a cached lookup must not outlive the revocation
        _audit(request, "key.revoke", key_id, 200)
        return {"key_id": key_id, "revoked": True}

    @app.post("/v1/admin/rotate-data-key", tags=["admin"])
    async def rotate(request: Request, key: AdminKey) -> dict:
        """Re-encrypt every secret under the current data key (add the key first; see `pushwise keys`)."""
        from engine.security.crypto import load_keyring

        ctx.keyring = load_keyring() if ctx.keyring.source != "memory" else ctx.keyring
        counts = ops.rotate_data_key(ctx.store, ctx.keyring)
        for listener in ctx.keyring_listeners:
            listener(ctx.keyring)
        _audit(request, "data-key.rotate", ctx.keyring.current_id, 200)
        return {"current_key": ctx.keyring.current_id, "reencrypted": counts}

    @app.put("/v1/admin/secrets/{vendor}/{name}", tags=["admin"])
    async def put_secret(vendor: str, name: str, body: SecretIn, request: Request, key: AdminKey) -> dict:
        """Store or replace a vendor credential, encrypted under the data key; the value is never returned."""
        created = vendor_secrets.put_secret(ctx.store, ctx.keyring, vendor, name, body.value, ctx.clock.now())
        _audit(request, "secret.put", f"{vendor}/{name}", 200, "created" if created else "replaced")
        return {"vendor": vendor, "name": name, "created": created}

    @app.get("/v1/admin/secrets", tags=["admin"])
    async def list_secrets(key: AdminKey) -> list[dict]:
        """Stored vendor credentials by vendor and name (never their values)."""
        return [{"vendor": s.vendor, "name": s.name, "key_id": s.key_id, "updated_at": s.updated_at.isoformat()}
                for s in vendor_secrets.list_secrets(ctx.store)]

    @app.delete("/v1/admin/secrets/{vendor}/{name}", status_code=204, tags=["admin"])
    async def remove_secret(vendor: str, name: str, request: Request, key: AdminKey) -> Response:
        """Delete a stored vendor credential (a running channel keeps the copy it was built with)."""
        if not vendor_secrets.remove_secret(ctx.store, vendor, name):
            raise HTTPException(404, "no stored secret with this vendor and name")
        _audit(request, "secret.remove", f"{vendor}/{name}", 204)
        return Response(status_code=204)

    @app.post("/v1/admin/backup", tags=["admin"])
    async def backup(request: Request, key: AdminKey) -> dict:
        """Write a consistent backup now, into the service's own folder (never a caller-chosen path).

        It goes to ``manual/`` under the backup folder, where the newest few are kept: in the folder itself it
        would count toward the daily rotation and push the oldest scheduled backup out.
        """
        from engine.backup import write_backup

        folder = (ctx.backup_dir or Path(ctx.store.path).parent / "backups") / "manual"
        manifest = write_backup(ctx.store, folder, ctx.keyring, ctx.clock.now(), keep=MANUAL_BACKUPS_KEPT)
        _audit(request, "backup", manifest.name, 200)
        return {"path": str(manifest.path), "tables": manifest.row_counts}

    return app
