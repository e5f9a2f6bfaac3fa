"""Vendor credentials kept in the database, AES-GCM encrypted under the data key, and resolved at channel build.

An APNs ``.p8`` key, an FCM service-account JSON, an OEM app secret or a VAPID private key is stored with
``pushwise secrets put VENDOR NAME --file F`` (or ``--value-from-env VAR``) as one row of ``vendor_secrets``:
``pw1:<key id>:<base64>`` with ``vendor_secrets:<vendor>/<name>`` as associated data, so a ciphertext moved
to another row does not decrypt. A vendor section then names it instead of holding it::

    [vendors.apns]
    key_file = "secret:apns/p8"         # a file field: the channel reads an anonymous in-memory file
    [vendors.xiaomi]
    app_secret = "secret:xiaomi/app"    # a value field: replaced by the plaintext in memory

:func:`resolved_vendors` swaps references for values only for the lifetime of channel construction;
plaintext never reaches the disk (Linux ``memfd``; elsewhere a 0600 file in a 0700 folder, removed at once).
Listing shows names, never values; no message here repeats a value.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd

from engine.config import SECRET_REF_PREFIX, VendorsConfig
from engine.errors import ConfigError, InputError
from engine.security.crypto import Keyring
from engine.store import Store

__all__ = ["MAX_SECRET_BYTES", "SecretInfo", "get_secret", "list_secrets", "parse_ref", "put_secret",
           "reencrypt_secrets", "remove_secret", "resolved_vendors"]

MAX_SECRET_BYTES = 64 * 1024
VENDORS: tuple[str, ...] = tuple(VendorsConfig.__dataclass_fields__)
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class SecretInfo:
    """A stored secret described without its value."""

    vendor: str
    name: str
    key_id: str | None
    updated_at: datetime


def _aad(vendor: str, name: str) -> str:
    return f"vendor_secrets:{vendor}/{name}"


def _check_name(vendor: str, name: str) -> None:
    if vendor not in VENDORS:
        raise InputError(f"unknown vendor {vendor[:20]!r}; expected one of {', '.join(VENDORS)}")
    if not _NAME.fullmatch(name):
        raise InputError("a secret name is 1 to 64 characters of a-z, 0-9, '_', '.' and '-', starting with a "
                         "letter or digit")


def put_secret(store: Store, keyring: Keyring, vendor: str, name: str, value: str, now: datetime) -> bool:
    """Store or replace one secret; True when it is new.

    Raises:
        InputError: unknown vendor, bad name, an empty or oversized value (the message never quotes it).
    """
    _check_name(vendor, name)
    if not value.strip():
        raise InputError(f"the secret {vendor}/{name} is empty")
    if len(value.encode("utf-8")) > MAX_SECRET_BYTES:
        raise InputError(f"the secret {vendor}/{name} is larger than {MAX_SECRET_BYTES} bytes")
    with store.transaction() as con:
        existed = con.execute("SELECT count(*) FROM vendor_secrets WHERE vendor = ? AND name = ?",
                              [vendor, name]).fetchall()[0][0] > 0
        con.execute("INSERT OR REPLACE INTO vendor_secrets VALUES (?, ?, ?, ?)",
                    [vendor, name, keyring.encrypt(value, _aad(vendor, name)), now])
    return not existed


def list_secrets(store: Store) -> list[SecretInfo]:
    """Every stored secret, by vendor and name, without values."""
    rows = store.execute("SELECT vendor, name, ciphertext, updated_at FROM vendor_secrets ORDER BY vendor, name")
    return [SecretInfo(v, n, c.split(":", 2)[1] if c.startswith("pw1:") else None, at)
            for v, n, c, at in rows.fetchall()]


def remove_secret(store: Store, vendor: str, name: str) -> bool:
    """Delete one secret; False when there was none."""
    _check_name(vendor, name)
    return bool(store.execute("DELETE FROM vendor_secrets WHERE vendor = ? AND name = ? RETURNING name",
                              [vendor, name]).fetchall())


def get_secret(store: Store, keyring: Keyring, vendor: str, name: str) -> str:
    """The plaintext of one secret (keep it in memory only).

    Raises:
        ConfigError: no such secret (the message says how to add it).
        CryptoError: it is under a data key this keyring lacks, or was altered.
    """
    rows = store.execute("SELECT ciphertext FROM vendor_secrets WHERE vendor = ? AND name = ?",
                         [vendor, name]).fetchall()
    if not rows:
        raise ConfigError(f"no stored secret {vendor}/{name}; add it with "
                          f"`pushwise secrets put {vendor} {name} --file FILE`")
    return keyring.decrypt(rows[0][0], _aad(vendor, name))


def reencrypt_secrets(con: duckdb.DuckDBPyConnection, keyring: Keyring) -> int:
    """Re-encrypt, inside the caller's transaction, every secret not under the current key; returns how many."""
    rows = con.execute("SELECT vendor, name, ciphertext FROM vendor_secrets").fetchall()
    stale = [(v, n, c) for v, n, c in rows if keyring.key_id_of(c) != keyring.current_id]
    frame = pd.DataFrame({"vendor": [v for v, _, _ in stale], "name": [n for _, n, _ in stale],
                          "c": [keyring.encrypt(keyring.decrypt(c, _aad(v, n)), _aad(v, n)) for v, n, c in stale]})
    con.register("pw_rotate_secrets", frame)
    try:
        con.execute("""UPDATE vendor_secrets SET ciphertext = r.c FROM pw_rotate_secrets r
                       WHERE vendor_secrets.vendor = r.vendor AND vendor_secrets.name = r.name""")
    finally:
        con.unregister("pw_rotate_secrets")
    return len(stale)


def parse_ref(value: str, where: str) -> tuple[str, str]:
    """``"secret:apns/p8"`` → ``("apns", "p8")``.

    Raises:
        ConfigError: the reference is not ``secret:VENDOR/NAME``.
    """
    vendor, sep, name = value.removeprefix(SECRET_REF_PREFIX).partition("/")
    if not sep or vendor not in VENDORS or not _NAME.fullmatch(name):
        raise ConfigError(f"{where} must reference a stored secret as 'secret:VENDOR/NAME'")
    return vendor, name


class _Materialiser:
    """Anonymous in-memory files (Linux memfd) holding secrets for channels that read a path."""

    def __init__(self) -> None:
        self._fds: list[int] = []
        self._dir: str | None = None

    def path_for(self, label: str, data: bytes) -> str:
        if hasattr(os, "memfd_create") and Path("/proc/self/fd").is_dir():
            fd = os.memfd_create(f"pushwise-{label}", 0)
            self._fds.append(fd)
            os.write(fd, data)
            return f"/proc/self/fd/{fd}"
        self._dir = self._dir or tempfile.mkdtemp(prefix="pushwise-secrets-")   # mode 0700
        path = Path(self._dir) / label
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return str(path)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


@contextlib.contextmanager
def resolved_vendors(vendors: VendorsConfig, store: Store, keyring: Keyring) -> Iterator[VendorsConfig]:
    """A copy of ``vendors`` whose ``secret:`` references hold the secrets, valid until the block ends.

    Only enabled sections are resolved. A field ending in ``_file`` (``key_file``, ``service_account_file``,
    ``vapid_private_key_file``) gets a path to an in-memory file with the secret; any other field gets the
    value itself. Build the channels inside the block: they read their credentials when constructed.

    Raises:
        ConfigError: a malformed reference or a secret that is not stored.
        CryptoError: a stored secret that this keyring cannot decrypt.
    """
    files = _Materialiser()
    try:
        sections = {}
        for vendor in VENDORS:
            section = getattr(vendors, vendor)
            changes = {}
            for f in dataclasses.fields(section) if section.enabled else ():
                value = getattr(section, f.name)
                if not (isinstance(value, str) and value.startswith(SECRET_REF_PREFIX)):
                    continue
                plain = get_secret(store, keyring, *parse_ref(value, f"vendors.{vendor}.{f.name}"))
                changes[f.name] = (files.path_for(f"{vendor}-{f.name}", plain.encode("utf-8"))
                                   if f.name.endswith("_file") else plain)
            sections[vendor] = dataclasses.replace(section, **changes) if changes else section
        yield VendorsConfig(**sections)
    finally:
        files.close()
