"""``pushwise doctor``: check the installation, the database, the models and every enabled vendor.

Each check is a value (:class:`Check`) with a status ``ok``, ``warn`` or ``fail``; nothing raises.
``warn`` is for what a fresh checkout lacks (no database or models yet), ``fail`` for what stops
the engine working (an unreadable database, a missing credential, an unreachable vendor). Network
checks only open a TLS connection to each vendor's ``base_url`` (no request, no credential sent).
"""

from __future__ import annotations

import json
import socket
import ssl
from dataclasses import asdict, dataclass
from importlib import metadata, resources
from pathlib import Path
from urllib.parse import urlsplit

import duckdb

from engine.config import SECRET_REF_PREFIX, Settings, redact_url
from engine.push.base import tls_context
from engine.store import snapshot_path

__all__ = ["STATUSES", "Check", "check_database", "check_installation", "check_models", "check_vendors",
           "run_checks", "worst"]

STATUSES: tuple[str, ...] = ("ok", "warn", "fail")
PACKAGES: tuple[str, ...] = ("duckdb", "pandas", "numpy", "lightgbm", "httpx", "streamlit")


@dataclass(frozen=True)
class Check:
    """One finding: ``area`` (installation | database | models | vendor:<name>), ``name``, ``status``, ``detail``."""

    area: str
    name: str
    status: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def worst(checks: list[Check]) -> str:
    """The most severe status among ``checks`` (``"ok"`` when empty)."""
    return max((c.status for c in checks), key=STATUSES.index, default="ok")


def check_installation() -> list[Check]:
    """The Pushwise and library versions; a missing library fails."""
    out = []
    for name in ("pushwise", *PACKAGES):
        try:
            out.append(Check("installation", name, "ok", metadata.version(name)))
        except metadata.PackageNotFoundError:
            status = "warn" if name == "pushwise" else "fail"
            out.append(Check("installation", name, status, "not installed"))
    return out


def _migrations() -> list[str]:
    folder = resources.files("engine.store") / "migrations"
    return sorted(e.name for e in folder.iterdir() if e.name.endswith(".sql"))


def check_database(db_path: str) -> list[Check]:
    """Open the database read-only and compare its applied migrations with the shipped ones."""
    path = Path(db_path)
    if not path.exists():
        hint = " (a snapshot exists)" if snapshot_path(path).exists() else ""
        return [Check("database", "file", "warn", f"{db_path} does not exist yet{hint}; run `pushwise demo`")]
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        if "lock" in str(exc).lower():
            return [Check("database", "file", "ok", f"{db_path} is held by a running writer (locked)")]
        return [Check("database", "file", "fail", f"cannot open {db_path}: {exc}")]
    try:
        applied = {r[0] for r in con.execute("SELECT name FROM schema_migrations").fetchall()}
    except duckdb.Error:
        return [Check("database", "file", "fail", f"{db_path} is not a Pushwise database (no schema_migrations)")]
    finally:
        con.close()
    out = [Check("database", "file", "ok", f"{db_path} opens ({path.stat().st_size:,} bytes)")]
    pending = [m for m in _migrations() if m not in applied]
    if pending:
        out.append(Check("database", "migrations", "warn",
                         f"{len(pending)} not yet applied (the next writer applies them): {', '.join(pending)}"))
    else:
        out.append(Check("database", "migrations", "ok", f"all {len(applied)} applied"))
    return out


def check_models(models_dir: str) -> list[Check]:
    """For each model folder: its latest version has a readable ``card.json`` and a ``model.txt``."""
    root = Path(models_dir)
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not names:
        return [Check("models", "models", "warn", f"no trained model in {models_dir}; run `pushwise train`")]
    out = []
    for name in names:
        versions = sorted(p for p in (root / name).iterdir() if p.is_dir() and not p.name.startswith("."))
        if not versions:
            out.append(Check("models", name, "fail", "no complete version"))
            continue
        latest = versions[-1]
        try:
            card = json.loads((latest / "card.json").read_text())
        except (OSError, ValueError) as exc:
            out.append(Check("models", name, "fail", f"{latest.name}: card.json unreadable: {exc}"))
            continue
        if not (latest / "model.txt").is_file():
            out.append(Check("models", name, "fail", f"{latest.name}: model.txt missing"))
            continue
        out.append(Check("models", name, "ok", f"latest {latest.name}, trained {card.get('trained_at', '?')}"))
    return out


def _tls_connect(base_url: str, ca_file: str, timeout: float) -> str:
    parts = urlsplit(base_url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"base_url must be an https:// URL, got {redact_url(base_url)!r}")
    port = parts.port or 443
    with (socket.create_connection((parts.hostname, port), timeout=timeout) as raw,
          tls_context(ca_file).wrap_socket(raw, server_hostname=parts.hostname) as tls):
        return f"TLS {tls.version()} to {parts.hostname}:{port}, certificate verified"


#: Settings of a vendor section that name a file holding a private key or a service-account secret.
KEY_FILE_FIELDS = ("key_file", "service_account_file", "vapid_private_key_file")


def _key_file_modes(area: str, section: object) -> list[Check]:
    """A warning for every key file of ``section`` that users other than its owner can read or write."""
    out = []
    for name in KEY_FILE_FIELDS:
        path = getattr(section, name, "")
        if not path or path.startswith(SECRET_REF_PREFIX) or not Path(path).is_file():
            continue
        mode = Path(path).stat().st_mode & 0o777
        if mode & 0o077:
            out.append(Check(area, name, "warn", f"{path} has mode {mode:04o}: other users can read the key; "
                                                 f"run chmod 600 {path} (or store it with `pushwise secrets put`)"))
    return out


def check_vendors(settings: Settings, timeout: float = 5.0, network: bool = True) -> list[Check]:
    """Every enabled vendor: its credentials are complete and its ``base_url`` accepts a verified TLS connection."""
    out = []
    for name in settings.vendors.__dataclass_fields__:
        section = getattr(settings.vendors, name)
        if not section.enabled:
            continue
        area = f"vendor:{name}"
        problems = section.problems()
        out.append(Check(area, "credentials", "fail" if problems else "ok", "; ".join(problems) or "complete"))
        out += _key_file_modes(area, section)
        if not network:
            continue
        try:
            out.append(Check(area, "reachable", "ok", _tls_connect(section.base_url, section.ca_file, timeout)))
        except ssl.SSLError as exc:
            out.append(Check(area, "reachable", "fail", f"TLS handshake with {redact_url(section.base_url)} failed: "
                                                      f"{exc.reason or exc}"))
        except (OSError, ValueError) as exc:
            out.append(Check(area, "reachable", "fail", f"cannot connect to {redact_url(section.base_url)}: {exc}"))
    if not out:
        out.append(Check("vendors", "enabled", "warn", "no vendor is enabled"))
    return out


def run_checks(settings: Settings, timeout: float = 5.0, network: bool = True) -> list[Check]:
    """All checks, in the order installation, database, models, vendors."""
    return [*check_installation(), *check_database(settings.db_path), *check_models(settings.models_dir),
            *check_vendors(settings, timeout=timeout, network=network)]
