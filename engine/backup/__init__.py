"""Backups: a consistent Parquet snapshot of every table with a SHA-256 manifest; verified restore; rotation.

    <root>/pushwise-backup-20260131T020000Z/
        manifest.json        format, install id, created_at, migrations, data-key fingerprints, per table: file,
                             rows, sha256; signed with HMAC-SHA256 under a key derived from the data key
        events.parquet.sealed …  one Parquet file per table, written inside one read transaction (a consistent
                             snapshot), then sealed whole with AES-256-GCM under the current data key (sealed.py)

A backup is written to a hidden temporary folder and renamed into place when complete, so a folder
without a manifest is never a finished backup. :func:`restore_backup` checks everything before it touches
the database. Every file is encrypted (a backup holds personal data, not only the tokens and vendor
credentials that are encrypted in their columns); restoring needs the same data keys. Version 1 backups
(plain Parquet) still restore. Version 3 manifests are signed; an unsigned (version 1 or 2) manifest is
restored only with ``force`` (docs/decisions/015-service-hardening.md).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from engine.backup.sealed import SealError, open_sealed, seal_file
from engine.errors import InputError
from engine.security.crypto import Keyring
from engine.store import Store

log = logging.getLogger(__name__)

__all__ = ["FORMAT", "BackupError", "Manifest", "Restored", "list_backups", "newest_backup", "restore_backup",
           "sign_manifest", "verify_backup", "write_backup"]

FORMAT = "pushwise-backup"
VERSION = 3
READABLE = (1, 2, 3)   # 1: plain Parquet files; 2: sealed files; 3: sealed files and a signed manifest
SIGNED_FROM = 3
SIGNATURE = "hmac-sha256, key = hkdf-sha256(data key)"
PREFIX = "pushwise-backup-"


class BackupError(InputError):
    """A backup is corrupted, partial, foreign or otherwise unusable; the message says which."""


@dataclass(frozen=True)
class Manifest:
    path: Path
    data: dict

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def row_counts(self) -> dict[str, int]:
        return {t: int(v["rows"]) for t, v in self.data["tables"].items()}

    @property
    def created_at(self) -> datetime | None:
        try:
            return datetime.fromisoformat(str(self.data["created_at"]))
        except (KeyError, ValueError):
            return None


@dataclass(frozen=True)
class Restored:
    """What :func:`restore_backup` did: the backup it restored and how many erased users it erased again."""

    manifest: Manifest
    re_erased: int


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sql_path(path: Path) -> str:
    """A file path as a SQL string literal (COPY and read_parquet take no parameters)."""
    return "'" + str(path).replace("'", "''") + "'"


def _tables(store: Store) -> list[str]:
    return [r[0] for r in store.execute(
        """SELECT table_name FROM information_schema.tables
           WHERE table_schema = 'main' AND table_type = 'BASE TABLE' AND table_catalog = current_database()
           ORDER BY table_name""").fetchall()]


@functools.cache
def schema_tables() -> frozenset[str]:
    """The tables Pushwise's migrations create: what a restore can take back, so all a backup holds."""
    with Store(":memory:") as fresh:
        return frozenset(_tables(fresh))


def _used_key_ids(store: Store, keyring: Keyring) -> set[str]:
    rows = store.execute("""SELECT DISTINCT split_part(token, ':', 2) FROM devices WHERE token LIKE 'pw1:%'
                            UNION SELECT DISTINCT split_part(signing_secret, ':', 2) FROM api_keys
                            UNION SELECT DISTINCT split_part(ciphertext, ':', 2) FROM vendor_secrets""").fetchall()
    return {r[0] for r in rows}


SCHEME = "aes-256-gcm, 1 MiB chunks (engine/backup/sealed.py)"


def _label(table: str) -> str:
    return f"pushwise-backup:{table}"


@contextlib.contextmanager
def _readable(path: Path, scratch: Path, keyring: Keyring, table: str) -> Iterator[Path]:
    """A plain Parquet file of ``path``: itself (version 1), or decrypted beside the new database, then removed."""
    if not path.name.endswith(".sealed"):
        yield path
        return
    fd, name = tempfile.mkstemp(prefix=f".restore-{table}-", suffix=".parquet", dir=scratch)
    os.close(fd)
    plain = Path(name)
    try:
        try:
            open_sealed(path, plain, keyring, _label(table))
        except SealError as exc:
            raise BackupError(f"corrupted backup: {exc}") from None
        yield plain
    finally:
        plain.unlink(missing_ok=True)


def _manifest_mac(data: dict, key: bytes) -> str:
    """HMAC-SHA256 of the manifest without its signature, as canonical JSON, under a key derived from ``key``."""
    mac_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"pushwise backup manifest v1").derive(key)
    body = {k: v for k, v in data.items() if k != "signature"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return hmac.new(mac_key, canonical, hashlib.sha256).hexdigest()


def sign_manifest(data: dict, keyring: Keyring) -> dict:
    """``data`` with a ``signature`` under the keyring's current data key (an HKDF-derived HMAC key)."""
    kid, key = keyring.keys[-1]
    return {**data, "signature": {"algorithm": SIGNATURE, "key_id": kid, "value": _manifest_mac(data, key)}}


def _check_signature(folder: Path, data: dict, keyring: Keyring) -> None:
    """Raise :class:`BackupError` unless a signed-format manifest carries a valid signature."""
    sig = data.get("signature")
    if not isinstance(sig, dict) or not isinstance(sig.get("value"), str):
        raise BackupError(f"forged or altered backup: {folder.name} has an unsigned manifest, but format "
                          f"{data.get('version')} manifests are always signed")
    key = dict(keyring.keys).get(str(sig.get("key_id")))
    if key is None:
        raise BackupError(f"foreign backup: its manifest is signed under data key {sig.get('key_id')!r}, which this "
                          "install does not hold; restore with the original key file or PUSHWISE_DATA_KEYS")
    if not hmac.compare_digest(_manifest_mac(data, key), sig["value"]):
        raise BackupError(f"forged or altered backup: the manifest's signature does not match in {folder.name} "
                          "(its table list, row counts, checksums or dates were edited)")


def _signed_created_at(folder: Path, keyring: Keyring) -> datetime | None:
    """The creation time of a backup whose manifest signature verifies, else None (checksums not read)."""
    try:
        data = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("version", 0) < SIGNED_FROM:
            return None
        _check_signature(folder, data, keyring)
        created = datetime.fromisoformat(data["created_at"])
        return created if created.tzinfo else created.replace(tzinfo=UTC)
    except (OSError, ValueError, TypeError, KeyError, BackupError):
        return None


def newest_backup(root: Path, keyring: Keyring) -> Path | None:
    """The backup under ``root`` with the latest *signed* ``created_at`` (folder names can be renamed).

    Backups whose manifest is unsigned or does not verify are not candidates; when none verifies, the last
    by name is returned, so that restoring it says what is wrong with it.
    """
    found = list_backups(root)
    dated = [(t, p) for p in found if (t := _signed_created_at(p, keyring)) is not None]
    if dated:
        return max(dated, key=lambda tp: tp[0])[1]
    return found[-1] if found else None


def list_backups(root: Path) -> list[Path]:
    """Finished backups under ``root``, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
                  and (p / "manifest.json").is_file())


def write_backup(store: Store, root: Path, keyring: Keyring, now: datetime, keep: int = 0) -> Manifest:
    """Write a consistent backup of ``store`` under ``root``; keep only the newest ``keep`` (0 = all).

    Returns the manifest. The snapshot is taken in one transaction, so writes that land while it runs
    are either wholly in it or wholly absent.
    """
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"cannot create the backup folder {root}: {exc.strerror}") from None
    name = PREFIX + now.strftime("%Y%m%dT%H%M%S%fZ")
    tmp = root / f".{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)   # the manifest names tables, row counts and key fingerprints
    tables: dict[str, dict] = {}
    with store.transaction() as con:
        present = _tables(store)
        # a table of someone else's (not created by a migration) cannot be restored: leave it out, say so
        skipped = [t for t in present if t not in schema_tables()]
        if skipped:
            log.warning("backup leaves out tables that are not part of Pushwise's schema: %s", ", ".join(skipped))
        for table in (t for t in present if t in schema_tables()):
            plain = tmp / f"{table}.parquet"
            con.execute(f"COPY (SELECT * FROM \"{table}\") TO {_sql_path(plain)} (FORMAT parquet, COMPRESSION zstd)")
            target = tmp / f"{table}.parquet.sealed"
            kid = seal_file(plain, target, keyring, _label(table))
            plain.unlink()
            tables[table] = {"file": target.name, "key_id": kid,
                             "rows": int(con.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0])}
        install = con.execute("SELECT value FROM service_meta WHERE name = 'install_id'").fetchall()
        migrations = [r[0] for r in con.execute("SELECT name FROM schema_migrations ORDER BY name").fetchall()]
        used = _used_key_ids(store, keyring) | {keyring.current_id}
    for meta in tables.values():
        meta["sha256"] = _sha256(tmp / meta["file"])
    fps = keyring.fingerprints()
    data = {"format": FORMAT, "version": VERSION, "created_at": now.isoformat(), "encryption": SCHEME,
            "install_id": install[0][0] if install else None, "migrations": migrations,
            "data_keys": {k: fps.get(k, "unknown") for k in sorted(used)}, "tables": tables,
            "skipped_tables": skipped}
    data = sign_manifest(data, keyring)
    (tmp / "manifest.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    final = root / name
    os.replace(tmp, final)
    if keep > 0:
        for old in list_backups(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return Manifest(final, data)


def verify_backup(folder: Path, keyring: Keyring) -> Manifest:
    """Check a backup completely: format, every file present with its checksum, migrations and data keys.

    Raises:
        BackupError: the first problem found, in words.
    """
    folder = Path(folder)
    mpath = folder / "manifest.json"
    if not folder.is_dir():
        raise BackupError(f"no backup folder at {folder}")
    if not mpath.is_file():
        raise BackupError(f"{folder} has no manifest.json: a partial backup, or not a Pushwise backup")
    try:
        data = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BackupError(f"{mpath} is not valid JSON: the manifest is corrupted") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("tables"), dict):
        raise BackupError(f"{folder} is not a Pushwise backup (manifest format is not {FORMAT!r})")
    if data.get("version") not in READABLE:
        raise BackupError(f"backup format version {data.get('version')!r} is not supported "
                          f"(this Pushwise reads {', '.join(map(str, READABLE))})")
    fps = keyring.fingerprints()
    foreign = {k: fp for k, fp in data.get("data_keys", {}).items() if fps.get(k) != fp}
    if foreign:
        raise BackupError("foreign backup: its secrets are encrypted under data keys this install does not hold "
                          f"({', '.join(sorted(foreign))}); restore with the original key file or PUSHWISE_DATA_KEYS")
    if data["version"] >= SIGNED_FROM:
        _check_signature(folder, data, keyring)
    from importlib import resources

    known = {e.name for e in (resources.files("engine.store") / "migrations").iterdir() if e.name.endswith(".sql")}
    newer = sorted(set(data.get("migrations", [])) - known)
    if newer:
        raise BackupError(f"backup was made by a newer Pushwise (unknown migrations: {', '.join(newer)})")
    for table, meta in sorted(data["tables"].items()):
        f = folder / str(meta.get("file", ""))
        if not f.is_file():
            raise BackupError(f"partial backup: {f.name or table} is missing")
        if _sha256(f) != meta.get("sha256"):
            raise BackupError(f"corrupted backup: checksum of {f.name} does not match the manifest")
    return Manifest(folder, data)


def restore_backup(db_path: str | Path, folder: Path, keyring: Keyring, *, force: bool = False,
                   pseudonym_key: bytes | None = None) -> Restored:
    """Verify ``folder``, then replace the database at ``db_path`` with its contents.

    The new database is built beside the old one and swapped in atomically; the old file is kept as
    ``<name>.before-restore``. Refuses a database of another install, an unencrypted version 1 backup,
    or a version 2 backup (unsigned manifest), unless ``force``; a forged or altered manifest always. The current ``erasure_ledger`` is carried over (merged with the backup's),
    and every user it lists as erased after the backup was made is erased again before the swap.

    Args:
        pseudonym_key: the key the ledger's hashes are made with; loaded with
            :func:`~engine.analytics.pseudonym.load_pseudonym_key` when needed and not given.

    Raises:
        BackupError: the backup fails verification or belongs to another install.
        StoreBusyError: the database is open in another process (stop ``pushwise serve`` first).
    """
    manifest = verify_backup(folder, keyring)
    if manifest.data.get("version") == 1 and not force:
        # nothing in it needs our data key, and its install id is in every manifest in clear: anyone who
        # can write to the backup folder can make one (with an admin key of their own in api_keys)
        raise BackupError(f"{folder.name} is an unencrypted version 1 backup: its origin cannot be checked; "
                          "pass --force if you know where it came from")
    if manifest.data.get("version") == 2 and not force:
        raise BackupError(f"{folder.name}: this format 2 backup has an unsigned manifest: written before manifests "
                          "were signed, its table list, row counts and date cannot be checked; pass --force if you "
                          "know where it came from")
    db = Path(db_path)
    ledger: list[tuple] = []
    if db.exists():
        with Store(db) as current:
            found = current.execute("SELECT value FROM service_meta WHERE name = 'install_id'").fetchall()
            ledger = current.execute("SELECT user_hash, erased_at FROM erasure_ledger").fetchall()
        install = found[0][0] if found else None
        if install != manifest.data.get("install_id") and not force:
            raise BackupError(f"{folder.name} belongs to another install than {db}; pass --force to replace it")
    tmp = db.with_name(db.name + ".restoring")
    for p in (tmp, Path(str(tmp) + ".wal")):
        p.unlink(missing_ok=True)
    try:
        _fill_from(tmp, folder, manifest, keyring)
        re_erased = _reapply_ledger(tmp, ledger, manifest.created_at, pseudonym_key)
    except BaseException:
        for p in (tmp, Path(str(tmp) + ".wal")):
            p.unlink(missing_ok=True)
        raise
    if db.exists():
        os.replace(db, db.with_name(db.name + ".before-restore"))
    Path(str(db) + ".wal").unlink(missing_ok=True)
    os.replace(tmp, db)
    return Restored(manifest, re_erased)


def _reapply_ledger(tmp: Path, ledger: list[tuple], as_of: datetime | None, key: bytes | None) -> int:
    """Merge the current erasure ledger into the restored database at ``tmp`` and erase its users again."""
    from engine.service.operations import reapply_erasures

    with Store(tmp) as store:
        with store.transaction() as con:
            for user_hash, erased_at in ledger:
                con.execute("""INSERT INTO erasure_ledger VALUES (?, ?) ON CONFLICT (user_hash)
                               DO UPDATE SET erased_at = greatest(erased_at, excluded.erased_at)""",
                            [user_hash, erased_at])
        if not store.scalar("SELECT count(*) FROM erasure_ledger"):
            return 0
        if key is None:
            from engine.analytics.pseudonym import load_pseudonym_key

            key = load_pseudonym_key()
        return reapply_erasures(store, key, as_of)


def _fill_from(tmp: Path, folder: Path, manifest: Manifest, keyring: Keyring) -> None:
    """Load every table of the backup into a new database at ``tmp``, checking it is whole.

    Format 1 and 2 manifests are not signed: a table dropped from one, or a file swapped in from another
    backup of the same install (same key, same table), passes the checksums. So a backup made at this
    schema must list every table, and each table must hold the rows the manifest counted.
    """
    tables = manifest.data["tables"]
    with Store(tmp) as store, store.transaction() as con:
        present = set(_tables(store))
        current = {r[0] for r in con.execute("SELECT name FROM schema_migrations").fetchall()}
        unlisted = sorted(present - set(tables))
        if unlisted and set(manifest.data.get("migrations", [])) >= current:
            raise BackupError(f"partial backup: no file for table {unlisted[0]} in the manifest")
        for table, meta in tables.items():
            if table not in present:
                raise BackupError(f"backup table {table} does not exist in this version's schema")
            con.execute(f'DELETE FROM "{table}"')
            with _readable(folder / meta["file"], tmp.parent, keyring, table) as parquet:
                con.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM read_parquet({_sql_path(parquet)})')
            rows = con.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0]
            if "rows" in meta and rows != int(meta["rows"]):
                raise BackupError(f"corrupted backup: {table} holds {rows} rows where the manifest says "
                                  f"{int(meta['rows'])} (a file from another backup?)")
        # the running service's own short-lived key was in the snapshot; its secret died with that process
        con.execute("UPDATE api_keys SET revoked_at = now() WHERE label = 'service-local' AND revoked_at IS NULL")
