"""Loopback APNs and FCM servers that behave like the real services, for tests, demos and benchmarks.

``start_sandboxes(workdir)`` creates a CA, vendor credentials and two TLS servers on 127.0.0.1 in a
background thread, and hands back a `Sandboxes` object: the engine settings that point at them,
the notifications they accepted, and fault injection::

    with start_sandboxes(tmp) as sandboxes:
        settings.vendors = sandboxes.vendor_settings()
        channels = build_channels(settings, clock)
        sandboxes.inject("apns", Fault.error(503, "ServiceUnavailable", retry_after=5))
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from engine.clock import Clock
from engine.config import ApnsConfig, FcmConfig, VendorsConfig
from engine.push.sandbox.apns import ApnsSandbox
from engine.push.sandbox.ca import CaFiles, client_context, ensure_ca, server_context
from engine.push.sandbox.common import Accepted, Fault, VendorSandbox
from engine.push.sandbox.credentials import ensure_apns_credentials, ensure_service_account
from engine.push.sandbox.fcm import FcmSandbox
from engine.push.sandbox.server import SandboxServer
from engine.push.sandbox.tokens import new_apns_token, new_fcm_token

__all__ = [
    "Accepted",
    "ApnsSandbox",
    "CaFiles",
    "Fault",
    "FcmSandbox",
    "Sandboxes",
    "client_context",
    "new_apns_token",
    "new_fcm_token",
    "serve_forever",
    "start_sandboxes",
]

T = TypeVar("T")
_HOST = "127.0.0.1"


class _LoopThread:
    """An event loop running in a daemon thread; the sandboxes' servers live on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="pushwise-sandbox", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            self.loop.run_until_complete(asyncio.sleep(0.05))  # let aborted transports finish closing
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


class Sandboxes:
    """Running APNs and FCM sandboxes; use `start_sandboxes` to create one. A context manager.

    Attributes:
        apns, fcm: the vendor handlers (state, counters, ``access_token_ttl``, ``known_tokens``...).
        apns_url, fcm_url: ``https://127.0.0.1:<port>``.
        ca: the CA files; clients must trust ``ca.ca_file``.
    """

    def __init__(self, workdir: Path, clock: Clock | None = None, *, apns_port: int = 0, fcm_port: int = 0) -> None:
        self.workdir = Path(workdir)
        self.ca = ensure_ca(self.workdir / "tls")
        self.apns_credentials = ensure_apns_credentials(self.workdir / "apns")
        self.apns = ApnsSandbox(self.apns_credentials.topic, clock)
        self.apns.register_key(self.apns_credentials.team_id, self.apns_credentials.key_id,
                               self.apns_credentials.public_key())
        self.fcm = FcmSandbox(clock)
        self._apns_server = SandboxServer(self.apns, server_context(self.ca, ("h2",)), http1=False)
        self._fcm_server = SandboxServer(self.fcm, server_context(self.ca, ("h2", "http/1.1")))
        self._thread = _LoopThread()
        self._closed = False
        try:
            apns_port = self._thread.run(self._apns_server.start(_HOST, apns_port))
            fcm_port = self._thread.run(self._fcm_server.start(_HOST, fcm_port))
            self.apns_url = f"https://{_HOST}:{apns_port}"
            self.fcm_url = f"https://{_HOST}:{fcm_port}"
            self.fcm.token_uri = f"{self.fcm_url}/token"
            self.service_account_file, info = ensure_service_account(self.workdir / "fcm", self.fcm.token_uri)
            self.project_id: str = info["project_id"]
            self.fcm.register_service_account(info)
        except BaseException:
            self.close()
            raise

    def vendor_settings(self) -> VendorsConfig:
        """Engine settings (``settings.vendors``) with both vendors enabled and pointed here."""
        creds = self.apns_credentials
        return VendorsConfig(
            apns=ApnsConfig(enabled=True, base_url=self.apns_url, team_id=creds.team_id, key_id=creds.key_id,
                            key_file=str(creds.key_file), topic=creds.topic, ca_file=str(self.ca.ca_file)),
            fcm=FcmConfig(enabled=True, base_url=self.fcm_url, project_id=self.project_id,
                          service_account_file=str(self.service_account_file), ca_file=str(self.ca.ca_file)),
        )

    def vendor(self, name: str) -> VendorSandbox:
        """The handler of vendor ``name`` (``"apns"`` or ``"fcm"``)."""
        if name not in ("apns", "fcm"):
            raise KeyError(f"no sandbox for vendor {name!r}")
        return self.apns if name == "apns" else self.fcm

    def accepted(self, vendor: str) -> list[Accepted]:
        """Notifications ``vendor`` accepted so far, oldest first."""
        return self.vendor(vendor).accepted()

    def unregister(self, vendor: str, token: str, at: datetime) -> None:
        """Make ``token`` answer as unregistered (APNs 410 with ``at`` as timestamp; FCM 404)."""
        self.vendor(vendor).unregister(token, at)

    def inject(self, vendor: str, fault: Fault) -> None:
        """Queue a fault for ``vendor``'s next matching requests."""
        self.vendor(vendor).inject(fault)

    def stats(self) -> dict[str, dict[str, int]]:
        """Counters per vendor: requests, accepted, ``rejected:<reason>``, faults, connections..."""
        return {
            "apns": {**self.apns.stats(), **self._apns_server.stats},
            "fcm": {**self.fcm.stats(), **self._fcm_server.stats},
        }

    def close(self) -> None:
        """Stop both servers and their thread."""
        if self._closed:
            return
        self._closed = True
        try:
            self._thread.run(self._apns_server.stop())
            self._thread.run(self._fcm_server.stop())
        finally:
            self._thread.stop()

    def __enter__(self) -> Sandboxes:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def start_sandboxes(
    workdir: Path, clock: Clock | None = None, *, apns_port: int = 0, fcm_port: int = 0
) -> Sandboxes:
    """Start the APNs and FCM sandboxes on 127.0.0.1 (ephemeral ports unless given).

    Args:
        workdir: receives ``tls/`` (CA), ``apns/`` (.p8 key) and ``fcm/`` (service account).
        clock: the sandboxes' notion of now; the system clock by default.
        apns_port, fcm_port: fixed ports for a standalone sandbox.

    Returns:
        The running sandboxes; close them (or use ``with``).
    """
    return Sandboxes(workdir, clock, apns_port=apns_port, fcm_port=fcm_port)


def _toml(sandboxes: Sandboxes) -> str:
    vendors = sandboxes.vendor_settings()
    lines: list[str] = []
    for name, section in (("apns", vendors.apns), ("fcm", vendors.fcm)):
        lines.append(f"[vendors.{name}]")
        for key, value in vars(section).items():
            text = str(value).lower() if isinstance(value, bool) else json.dumps(value)
            lines.append(f"{key} = {text}")
        lines.append("")
    return "\n".join(lines)


def serve_forever(workdir: Path, *, apns_port: int = 0, fcm_port: int = 0, stop: threading.Event | None = None,
                  echo: Callable[[str], None] = print) -> None:
    """Run the sandboxes until ``stop`` is set or Ctrl-C; print endpoints and credential paths.

    Also writes ``<workdir>/sandbox.toml``, a config file whose ``[vendors.*]`` sections point the
    engine at these sandboxes (``PUSHWISE_CONFIG=<workdir>/sandbox.toml``).
    """
    stop = stop or threading.Event()
    with start_sandboxes(Path(workdir), apns_port=apns_port, fcm_port=fcm_port) as sandboxes:
        config = Path(workdir) / "sandbox.toml"
        config.write_text(_toml(sandboxes))
        creds = sandboxes.apns_credentials
        echo(f"APNs sandbox:  {sandboxes.apns_url}  (HTTP/2 only; topic {creds.topic})")
        echo(f"  team_id {creds.team_id}  key_id {creds.key_id}  key {creds.key_file}")
        echo(f"FCM sandbox:   {sandboxes.fcm_url}  (project {sandboxes.project_id})")
        echo(f"  OAuth token_uri {sandboxes.fcm.token_uri}  service account {sandboxes.service_account_file}")
        echo(f"CA to trust:   {sandboxes.ca.ca_file}")
        echo(f"Engine config: {config}")
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            echo("stopping sandboxes")
