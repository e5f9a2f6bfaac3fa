"""``pushwise serve``: one process owns the DuckDB file and runs the API and the scheduled jobs on one event loop.

Jobs (APScheduler, on the loop that serves HTTP, so store access never overlaps): dispatch ticks, snapshot
publishing for readers in other processes, a daily backup with rotation, and the retention purge of raw
events. At start-up it creates a short-lived admin key and writes it with the URL to
``<db>.service.json`` (owner-only), which lets the command line reach the running service instead of
fighting it for the database; the key is revoked and the file removed at shutdown (docs/decisions/009).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from engine.analytics.pseudonym import load_pseudonym_key
from engine.api.app import ServiceContext, create_app
from engine.clock import Clock, SystemClock
from engine.config import Settings
from engine.errors import ConfigError
from engine.security.apikeys import NonceCache, create_key
from engine.security.crypto import load_keyring
from engine.store import Store

if TYPE_CHECKING:
    from engine.dispatch import Dispatcher

__all__ = ["ServeOptions", "check_bind", "runtime_file", "serve"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    certfile: str | None = None
    keyfile: str | None = None
    allow_remote_http: bool = False
    backup_dir: str | None = "data/backups"
    backup_keep: int = 7
    backup_hour_utc: int = 2
    retention_days: float = 0.0          # 0: keep raw events forever
    sandbox: bool = False                # dispatch to loopback sandboxes (demos, benchmarks)
    publish_every_seconds: float = 30.0   # a snapshot copy blocks the loop; readers lag by this much
    metrics_open_on_loopback: bool = False  # /metrics without a key for loopback scrapers


def runtime_file(db_path: str | Path) -> Path:
    """Where a running service leaves its URL and short-lived admin key for the local CLI."""
    p = Path(db_path)
    return p.with_name(p.name + ".service.json")


def check_bind(opts: ServeOptions) -> None:
    """Plain HTTP only on loopback unless explicitly allowed; a certificate needs its key.

    Raises:
        ConfigError: with the flag that fixes it.
    """
    if bool(opts.certfile) != bool(opts.keyfile):
        raise ConfigError("--cert and --key go together")
    if opts.certfile:
        for f in (opts.certfile, opts.keyfile):
            if not Path(str(f)).is_file():
                raise ConfigError(f"TLS file not found: {f}")
        return
    try:
        loopback = opts.host == "localhost" or ipaddress.ip_address(opts.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not opts.allow_remote_http:
        raise ConfigError(f"refusing plain HTTP on {opts.host}: give --cert/--key for HTTPS, "
                          "or --allow-remote-http if a TLS proxy sits in front")


def _write_runtime(path: Path, url: str, admin_key: str, cafile: str | None) -> None:
    """Write the file anew (never through a link or into a file left with wider permissions)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"url": url, "admin_key": admin_key, "pid": os.getpid(), "cafile": cafile}, fh)


async def _serve(server: uvicorn.Server) -> None:
    # On a startup failure (port in use, …) uvicorn logs why and calls sys.exit, which a task would pass
    # straight through the event loop as a traceback; the runner reports it instead.
    with contextlib.suppress(SystemExit):
        await server.serve()


def _add_jobs(scheduler: AsyncIOScheduler, ctx: ServiceContext, opts: ServeOptions, dispatcher: Dispatcher | None,
              clock: Clock, dispatch_seconds: float) -> None:
    """Dispatch ticks, snapshot publishing, the daily backup and the retention purge.

    Every job is a coroutine function: APScheduler's asyncio executor runs those on the event loop, but
    plain functions on a worker thread, where they would use the store's one connection while a request
    does (DuckDB refuses: "connection is busy"; inside a transaction, statements would interleave).
    """
    from engine.backup import write_backup
    from engine.service.operations import purge_events

    store = ctx.store

    async def tick() -> None:
        try:
            await dispatcher.tick()
        except Exception:  # keep serving: the next tick retries, the log says why
            log.exception("dispatch tick failed")

    async def snapshot() -> None:
        store.publish_snapshot()

    async def backup() -> None:
        m = write_backup(store, ctx.backup_dir, ctx.keyring, clock.now(), keep=opts.backup_keep)
        log.warning("backup written: %s", m.path)

    async def retention() -> None:
        purge_events(store, clock.now(), opts.retention_days)

    if dispatcher is not None:
        scheduler.add_job(tick, "interval", seconds=dispatch_seconds, max_instances=1, coalesce=True, id="dispatch")
    scheduler.add_job(snapshot, "interval", seconds=opts.publish_every_seconds, id="snapshot", max_instances=1,
                      coalesce=True)
    if ctx.backup_dir is not None:
        scheduler.add_job(backup, "cron", hour=opts.backup_hour_utc, minute=0, id="backup", timezone="UTC")
    if opts.retention_days > 0:
        scheduler.add_job(retention, "interval", hours=6, id="retention",
                          next_run_time=clock.now() + timedelta(seconds=5))


async def _run(settings: Settings, opts: ServeOptions, store: Store, stack: ExitStack) -> None:
    from engine.dispatch import Dispatcher
    from engine.push.registry import build_channels

    clock = SystemClock()
    keyring = load_keyring()
    ctx = ServiceContext(store=store, keyring=keyring, pseudonym_key=load_pseudonym_key(), clock=clock,
                         nonces=NonceCache.persistent(store, time.time()),   # replays refused across restarts
                         backup_dir=Path(opts.backup_dir) if opts.backup_dir else None, backup_keep=opts.backup_keep,
                         retention_days=opts.retention_days, metrics_open_on_loopback=opts.metrics_open_on_loopback)
    vendors = settings.vendors
    if opts.sandbox:
        from engine.push.sandbox import start_sandboxes

        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pushwise-sandbox-")))
        vendors = stack.enter_context(start_sandboxes(workdir, clock=clock)).vendor_settings()
    ctx.webpush_hosts = vendors.webpush.endpoint_hosts()   # with the sandbox: its loopback host too
    # "secret:V/N" references are decrypted in memory while the channels are built
    channels = build_channels(Settings(**{**settings.__dict__, "vendors": vendors}).validate(), clock,
                              store=store, keyring=keyring)
    dispatcher = Dispatcher.from_settings(store, channels, clock, settings, keyring=keyring)
    store.execute("UPDATE api_keys SET revoked_at = ? WHERE label = 'service-local' AND revoked_at IS NULL",
                  [clock.now()])   # left by a service that crashed
    admin_key, made = create_key(store, keyring, ["admin"], clock.now(), label="service-local",
                                 rate_per_second=1000.0)
    scheme = "https" if opts.certfile else "http"
    config = uvicorn.Config(create_app(ctx), host=opts.host, port=opts.port, ssl_certfile=opts.certfile,
                            ssl_keyfile=opts.keyfile, log_level="warning",
                            access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    ctx.keyring_listeners.append(lambda k: setattr(dispatcher, "keyring", k))   # rotation while serving
    scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
    _add_jobs(scheduler, ctx, opts, dispatcher if channels else None, clock, settings.dispatch_interval_seconds)
    scheduler.start()
    runtime = runtime_file(store.path)
    try:
        serving = asyncio.create_task(_serve(server))
        while not server.started and not serving.done():
            await asyncio.sleep(0.05)
        if not server.started:
            raise ConfigError(f"the API could not listen on {opts.host}:{opts.port}; see the error above")
        port = server.servers[0].sockets[0].getsockname()[1]
        host = "127.0.0.1" if opts.host in ("0.0.0.0", "localhost") else opts.host
        _write_runtime(runtime, f"{scheme}://{host}:{port}", admin_key,
                       str(Path(settings.service_ca).resolve()) if settings.service_ca and opts.certfile else None)
        print(f"pushwise serving {scheme}://{opts.host}:{port} (docs at /docs); vendors: "
              f"{', '.join(sorted(channels)) or 'none enabled'}", flush=True)
        await serving
    finally:
        scheduler.shutdown(wait=False)
        runtime.unlink(missing_ok=True)
        store.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ?", [clock.now(), made.key_id])
        for ch in channels.values():
            await ch.aclose()
        store.publish_snapshot()


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt   # the same orderly way out as Ctrl-C


def serve(settings: Settings, opts: ServeOptions) -> None:
    """Run until interrupted (Ctrl-C or SIGTERM).

    uvicorn catches both signals while it serves, shuts down, and then raises the signal again under the
    handler that was installed before it started. For SIGTERM (what systemd and Docker send) that is the
    default action, which would kill the process before ``_run`` revokes the local admin key, removes the
    runtime file and publishes the snapshot; so SIGTERM is turned into the same exception as Ctrl-C.
    """
    check_bind(opts)
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        with ExitStack() as stack:
            store = stack.enter_context(Store(settings.db_path))
            asyncio.run(_run(settings, opts, store, stack))
    finally:
        signal.signal(signal.SIGTERM, previous)
