"""Caller identity for the API: bearer keys or HMAC-signed requests, scopes, per-key rate limits, audit of denials.

401 means "who are you?" (no, unknown or wrong credentials, bad signature, replay); 403 means "not
allowed" (the key lacks the scope). Neither says whether a key id exists.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from collections.abc import Callable

from fastapi import HTTPException, Request

from engine.security.apikeys import ApiKey, audit, authenticate, verify_signature

__all__ = ["KEY_CACHE_SECONDS", "require", "require_metrics"]

KEY_CACHE_SECONDS = 5.0


def _deny(request: Request, status: int, message: str, key_id: str | None = None) -> HTTPException:
    """The refusal to raise; audited within ``ctx.denials_audited_per_second`` (all counted in /metrics).

    Refusals cost no key, so without a bound anyone who reaches the port could write audit rows, each a
    commit on the loop that serves everyone, as fast as they can send.
    """
    ctx = request.app.state.ctx
    budget = ApiKey("auth.denied", (), ctx.denials_audited_per_second)   # one bucket that all refusals share
    if ctx.denial_budget.allow(budget, ctx.clock.now().timestamp()):
        audit(ctx.store, ctx.clock.now(), key_id, "auth.denied", request.url.path[:200], status, message)
    ctx.metrics.denied.labels(str(status)).inc()
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return HTTPException(status, message, headers=headers)


def _cached(ctx, presented: str) -> ApiKey | None:
    """:func:`authenticate`, remembered for ``KEY_CACHE_SECONDS`` (a revocation takes effect within that)."""
    now = time.monotonic()
    digest = hashlib.sha256(presented.encode("utf-8", "replace")).hexdigest()
    hit = ctx.key_cache.get(digest)
    if hit is not None and hit[1] > now:
        return hit[0]
    key = authenticate(ctx.store, presented)
    if key is not None:
        if len(ctx.key_cache) > 10_000:
            ctx.key_cache.clear()
        ctx.key_cache[digest] = (key, now + KEY_CACHE_SECONDS)
    return key


def require(scope: str) -> Callable:
    """A FastAPI dependency: the calling key, which holds ``scope`` (or admin) and is within its rate."""

    async def dependency(request: Request) -> ApiKey:
        ctx = request.app.state.ctx
        headers = {k.lower(): v for k, v in request.headers.items()}
        if "x-pushwise-signature" in headers:
            body = await request.body()
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            key, reason = verify_signature(ctx.store, ctx.keyring, ctx.nonces, headers, request.method, path, body,
                                           time.time())
            if key is None:
                raise _deny(request, 401, reason)
        else:
            value = headers.get("authorization", "")
            if not value:
                raise _deny(request, 401, "missing credentials: send 'Authorization: Bearer <key>' or sign the request")
            scheme, _, presented = value.partition(" ")
            key = _cached(ctx, presented.strip()) if scheme.lower() == "bearer" else None
            if key is None:
                raise _deny(request, 401, "invalid API key")
        if not key.allows(scope):
            raise _deny(request, 403, f"this key lacks the '{scope}' scope", key.key_id)
        if not ctx.limiter.allow(key, time.monotonic()):
            ctx.metrics.denied.labels("429").inc()
            raise HTTPException(429, "rate limit exceeded for this key", headers={"Retry-After": "1"})
        request.state.key_id = key.key_id
        return key

    return dependency


def _loopback(request: Request) -> bool:
    try:
        return request.client is not None and ipaddress.ip_address(request.client.host).is_loopback
    except ValueError:
        return False


_metrics_key = require("metrics")


async def require_metrics(request: Request) -> ApiKey | None:
    """The /metrics gate: a key with the 'metrics' (or 'admin') scope; none needed from loopback when allowed.

    ``ServiceContext.metrics_open_on_loopback`` admits key-less scrapes from 127.0.0.1/::1 only, for a
    Prometheus on the same host. Behind a reverse proxy on that host every caller looks local: keep it off then.
    """
    ctx = request.app.state.ctx
    if ctx.metrics_open_on_loopback and "authorization" not in request.headers and _loopback(request):
        return None
    return await _metrics_key(request)
