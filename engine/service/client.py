"""How the command line reaches the data: the running service's API on loopback, else the database file.

When ``pushwise serve`` holds the DuckDB write lock, a second process cannot open the file at all; the
CLI then reads ``<db>.service.json`` (URL and a short-lived admin key, owner-only) and calls the API.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from engine.errors import InputError, PushwiseError, StoreBusyError
from engine.service.runner import runtime_file

__all__ = ["ServiceClient", "running_service"]


class ServiceClient:
    """A minimal admin client of the running service."""

    def __init__(self, url: str, admin_key: str, verify: str | bool = True,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}, verify=verify,
                                  timeout=600.0, transport=transport)

    def call(self, method: str, path: str, body: dict | None = None) -> Any:
        try:
            r = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
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


def running_service(db_path: str | Path) -> ServiceClient:
    """The client of the service that owns ``db_path``.

    Raises:
        StoreBusyError: the file is locked but no service left its runtime file (another writer holds it).
    """
    path = runtime_file(db_path)
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise StoreBusyError(f"{db_path} is locked by another process that is not `pushwise serve`; "
                             "wait for it to finish") from None
    return ServiceClient(info["url"], info["admin_key"], verify=info.get("cafile") or True)
