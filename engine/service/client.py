"""How the command line reaches the data: the running service's API on loopback, else the database file.

When ``pushwise serve`` holds the DuckDB write lock, a second process cannot open the file at all; the
CLI then reads ``<db>.service.json`` (URL and a short-lived admin key, owner-only) and calls the API.
"""

from __future__ import annotations

import json
import os
import ssl
from pathlib import Path
from typing import Any

import httpx

from engine.errors import ConfigError, InputError, PushwiseError, StoreBusyError
from engine.service.runner import runtime_file

__all__ = ["ServiceClient", "running_service", "trust"]


class ServiceClient:
    """A minimal admin client of the running service."""

    def __init__(self, url: str, admin_key: str, verify: ssl.SSLContext | bool = True,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}, verify=verify,
                                  timeout=600.0, transport=transport)

    def call(self, method: str, path: str, body: dict | None = None) -> Any:
        try:
            r = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise ConfigError("the running service's TLS certificate is not trusted: set service_ca "
                                  "(PUSHWISE_SERVICE_CA) to the CA bundle that issued it") from None
            raise PushwiseError(f"the running service did not answer: {type(exc).__name__}") from None
        if r.status_code >= 400:
            try:
                payload = r.json()
            except json.JSONDecodeError:
                payload = {"error": r.text[:200]}
            problems = "; ".join(f"{p['where']}: {p['problem']}" for p in payload.get("problems", []))
            raise InputError(f"service answered {r.status_code}: {payload.get('error')}"
                             + (f" ({problems})" if problems else ""))
        return None if r.status_code == 204 else r.json()

    def close(self) -> None:
        self._http.close()


def trust(ca: str | None) -> ssl.SSLContext | bool:
    """What the client verifies the service's certificate against: ``ca`` (a PEM bundle), else the system store.

    Raises:
        ConfigError: the bundle cannot be read or holds no certificate.
    """
    if not ca:
        return True
    try:
        return ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__
        raise ConfigError(f"service_ca (PUSHWISE_SERVICE_CA) {ca} is not a usable CA bundle: {reason}") from None


def running_service(db_path: str | Path, ca: str | None = None) -> ServiceClient:
    """The client of the service that owns ``db_path``.

    Args:
        db_path: the database the service holds.
        ca: CA bundle to verify an HTTPS service against (``service_ca`` / ``PUSHWISE_SERVICE_CA``); else
            the bundle the service recorded in its runtime file, else the system store.

    Raises:
        StoreBusyError: the file is locked but no service left its runtime file (another writer holds it).
        ConfigError: the CA bundle is unusable.
    """
    path = runtime_file(db_path)
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        st = path.stat()
    except (OSError, json.JSONDecodeError):
        raise StoreBusyError(f"{db_path} is locked by another process that is not `pushwise serve`; "
                             "wait for it to finish") from None
    # this process sends vendor secrets and tokens to that URL: a file someone else could have written
    # (another owner, or writable by group or others) might point it at their server
    if st.st_mode & 0o022 or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
        raise ConfigError(f"{path} is owned by another user or writable by other users; not trusting it. "
                          "Stop the service, remove the file and start the service again")
    return ServiceClient(info["url"], info["admin_key"], verify=trust(ca or info.get("cafile")))
