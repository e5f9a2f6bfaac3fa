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
import os
import secrets
import threading
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from engine.clock import Clock
from engine.config import (
    ApnsConfig,
    FcmConfig,
    HonorConfig,
    HuaweiConfig,
    MeizuConfig,
    OppoConfig,
    VendorsConfig,
    VivoConfig,
    WebPushConfig,
    XiaomiConfig,
)
from engine.push.sandbox.apns import ApnsSandbox
from engine.push.sandbox.ca import CaFiles, client_context, ensure_ca, server_context
from engine.push.sandbox.common import Accepted, Fault, VendorSandbox
from engine.push.sandbox.credentials import (
    ensure_apns_credentials,
    ensure_app_credentials,
    ensure_service_account,
)
from engine.push.sandbox.fcm import FcmSandbox
from engine.push.sandbox.honor import HonorSandbox, new_honor_token
from engine.push.sandbox.huawei import HuaweiSandbox, new_huawei_token
from engine.push.sandbox.meizu import MeizuSandbox, new_meizu_token
from engine.push.sandbox.oppo import OppoSandbox, new_oppo_token
from engine.push.sandbox.server import SandboxServer
from engine.push.sandbox.tokens import new_apns_token, new_fcm_token
from engine.push.sandbox.vivo import VivoSandbox, new_vivo_token
from engine.push.sandbox.webpush import WebPushSandbox, ensure_vapid_key, new_webpush_subscription
from engine.push.sandbox.xiaomi import XiaomiSandbox, new_xiaomi_token

__all__ = [
    "Accepted",
    "ApnsSandbox",
    "CaFiles",
    "Fault",
    "FcmSandbox",
    "HonorSandbox",
    "HuaweiSandbox",
    "XiaomiSandbox",
    "Sandboxes",
    "client_context",
    "new_apns_token",
    "new_fcm_token",
    "new_honor_token",
    "new_huawei_token",
    "new_xiaomi_token",
    "MeizuSandbox",
    "OppoSandbox",
    "VivoSandbox",
    "WebPushSandbox",
    "new_meizu_token",
    "new_oppo_token",
    "new_vivo_token",
    "new_webpush_subscription",
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
    """Running sandboxes of every vendor; use `start_sandboxes` to create one. A context manager.

    Attributes:
        apns, fcm, huawei, honor, xiaomi, ...: the vendor handlers (state, counters, ``limits``,
            ``known_tokens``, the OAuth ``access_token_ttl``...).
        apns_url, fcm_url: ``https://127.0.0.1:<port>``; ``urls``: the other vendors' base URLs.
        app_credentials: ``{"huawei"|"honor"|"xiaomi": {field: value}}`` as in ``[vendors.<v>]``.
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
        self._extra: dict[str, tuple[VendorSandbox, SandboxServer]] = {}   # vendor -> (handler, server)
        self.urls: dict[str, str] = {}
        try:
            apns_port = self._thread.run(self._apns_server.start(_HOST, apns_port))
            fcm_port = self._thread.run(self._fcm_server.start(_HOST, fcm_port))
            self.apns_url = f"https://{_HOST}:{apns_port}"
            self.fcm_url = f"https://{_HOST}:{fcm_port}"
            self.fcm.token_uri = f"{self.fcm_url}/token"
            self.service_account_file, info = ensure_service_account(self.workdir / "fcm", self.fcm.token_uri)
            self.project_id: str = info["project_id"]
            self.fcm.register_service_account(info)
            self._start_app_vendors(clock)
            self._start_signed_vendors(clock)
        except BaseException:
            self.close()
            raise

    def _start_extra(self, name: str, handler: VendorSandbox) -> str:
        """Serve ``handler`` (HTTP/2 and HTTP/1.1 over TLS) on an ephemeral port; its base URL."""
        server = SandboxServer(handler, server_context(self.ca, ("h2", "http/1.1")))
        self._extra[name] = (handler, server)
        self.urls[name] = f"https://{_HOST}:{self._thread.run(server.start(_HOST, 0))}"
        return self.urls[name]

    def _start_app_vendors(self, clock: Clock | None) -> None:
        """Huawei, Honor and Xiaomi sandboxes with credentials under ``<workdir>/<vendor>/``."""
        self.huawei, self.honor, self.xiaomi = HuaweiSandbox(clock), HonorSandbox(clock), XiaomiSandbox(clock)
        self.app_credentials = {v: ensure_app_credentials(self.workdir / v, v) for v in ("huawei", "honor", "xiaomi")}
        hw, hn, xm = (self.app_credentials[v] for v in ("huawei", "honor", "xiaomi"))
        self.huawei.oauth.register_client(hw["app_id"], hw["client_secret"])
        self.honor.register_app(hn["app_id"], hn["client_id"], hn["client_secret"])
        self.xiaomi.register_app(xm["app_secret"], xm["package_name"])
        for name in ("huawei", "honor", "xiaomi"):
            self._start_extra(name, getattr(self, name))

    def _app_vendor_settings(self, vendors: VendorsConfig) -> None:
        ca, cred = str(self.ca.ca_file), self.app_credentials
        vendors.huawei = HuaweiConfig(enabled=True, base_url=self.urls["huawei"], ca_file=ca,
                                      auth_url=f"{self.urls['huawei']}/oauth2/v3/token", **cred["huawei"])
        vendors.honor = HonorConfig(enabled=True, base_url=self.urls["honor"], ca_file=ca,
                                    auth_url=f"{self.urls['honor']}/auth/token", **cred["honor"])
        vendors.xiaomi = XiaomiConfig(enabled=True, base_url=self.urls["xiaomi"], ca_file=ca, **cred["xiaomi"])

    def _start_signed_vendors(self, clock: Clock | None) -> None:
        """OPPO, vivo, Meizu and Web Push sandboxes; credentials in ``<workdir>/<vendor>/<vendor>.json``."""
        self.signed_credentials = {v: _ensure_signed_credentials(self.workdir / v, v)
                                   for v in ("oppo", "vivo", "meizu")}
        op, vv, mz = (self.signed_credentials[v] for v in ("oppo", "vivo", "meizu"))
        self.oppo = OppoSandbox(op["app_key"], op["master_secret"], clock)
        self.vivo = VivoSandbox(vv["app_id"], vv["app_key"], vv["app_secret"], clock)
        self.meizu = MeizuSandbox(mz["app_id"], mz["app_secret"], clock)
        self.webpush = WebPushSandbox(clock)
        self.vapid_key_file = ensure_vapid_key(self.workdir / "webpush")
        for name in ("oppo", "vivo", "meizu", "webpush"):
            self._start_extra(name, getattr(self, name))
        self.webpush.base_url = self.urls["webpush"]

    def _signed_vendor_settings(self, vendors: VendorsConfig) -> None:
        ca, cred = str(self.ca.ca_file), self.signed_credentials
        vendors.oppo = OppoConfig(enabled=True, base_url=self.urls["oppo"], ca_file=ca, **cred["oppo"])
        vendors.vivo = VivoConfig(enabled=True, base_url=self.urls["vivo"], ca_file=ca, **cred["vivo"])
        vendors.meizu = MeizuConfig(enabled=True, base_url=self.urls["meizu"], ca_file=ca, **cred["meizu"])
        vendors.webpush = WebPushConfig(enabled=True, base_url=self.urls["webpush"], ca_file=ca,
                                        vapid_private_key_file=str(self.vapid_key_file),
                                        vapid_subject="mailto:sandbox@pushwise.invalid")

    def vendor_settings(self) -> VendorsConfig:
        """Engine settings (``settings.vendors``) with every vendor enabled and pointed here."""
        creds = self.apns_credentials
        vendors = VendorsConfig(
            apns=ApnsConfig(enabled=True, base_url=self.apns_url, team_id=creds.team_id, key_id=creds.key_id,
                            key_file=str(creds.key_file), topic=creds.topic, ca_file=str(self.ca.ca_file)),
            fcm=FcmConfig(enabled=True, base_url=self.fcm_url, project_id=self.project_id,
                          service_account_file=str(self.service_account_file), ca_file=str(self.ca.ca_file)),
        )
        self._app_vendor_settings(vendors)
        self._signed_vendor_settings(vendors)
        return vendors

    def vendor(self, name: str) -> VendorSandbox:
        """The handler of vendor ``name`` (any key of ``engine.push.registry.CHANNELS``)."""
        if name in self._extra:
            return self._extra[name][0]
        if name not in ("apns", "fcm"):
            raise KeyError(f"no sandbox for vendor {name!r}")
        return self.apns if name == "apns" else self.fcm

    def accepted(self, vendor: str) -> list[Accepted]:
        """Notifications ``vendor`` accepted so far, oldest first."""
        return self.vendor(vendor).accepted()

    def server(self, name: str) -> SandboxServer:
        """The TLS server of vendor ``name``: its ``handler`` (wrap it to play faults of your own),
        ``stats`` and ``reset_connections`` (ids of the connections a reset dropped; compare
        `Accepted.connection` to tell which accepted messages the client may never have heard of)."""
        if name in self._extra:
            return self._extra[name][1]
        if name not in ("apns", "fcm"):
            raise KeyError(f"no sandbox for vendor {name!r}")
        return self._apns_server if name == "apns" else self._fcm_server

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
            **{name: {**handler.stats(), **server.stats} for name, (handler, server) in self._extra.items()},
        }

    def close(self) -> None:
        """Stop both servers and their thread."""
        if self._closed:
            return
        self._closed = True
        try:
            self._thread.run(self._apns_server.stop())
            self._thread.run(self._fcm_server.stop())
            for _, server in self._extra.values():
                self._thread.run(server.stop())
        finally:
            self._thread.stop()

    def __enter__(self) -> Sandboxes:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    "oppo": ("app_key", "master_secret"),
    "vivo": ("app_id", "app_key", "app_secret"),
    "meizu": ("app_id", "app_secret"),
}


def _ensure_signed_credentials(directory: Path, vendor: str) -> dict[str, str]:
    """Create (or reuse) ``<vendor>.json``: the OPPO/vivo/Meizu app ids and secrets."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{vendor}.json"
    if path.is_file():
        info: dict[str, str] = json.loads(path.read_text())
        if all(info.get(f) for f in _SIGNED_FIELDS[vendor]):
            return info
    info = {f: secrets.token_hex(16) if "secret" in f or f == "app_key" else str(10_000 + secrets.randbelow(90_000))
            for f in _SIGNED_FIELDS[vendor]}
    path.write_text(json.dumps(info, indent=2))
    os.chmod(path, 0o600)
    return info


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
    for name in vendors.__dataclass_fields__:
        section = getattr(vendors, name)
        if not section.enabled:
            continue
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
        for name, url in sandboxes.urls.items():
            echo(f"{name} sandbox: {url}  (credentials in {Path(workdir) / name})")
        echo(f"CA to trust:   {sandboxes.ca.ca_file}")
        echo(f"Engine config: {config}")
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            echo("stopping sandboxes")
